"""`genguard doctor`: which output checks will run, here and now, for a pack and a model.

pipeline/cli.py imports this module, which adds the command to its `cli`. The checks are built
exactly as `GovernedPipeline.from_pretrained` builds them (genguard.guard.classifiers.registry), loading
their models but not the diffusion model; a pipeline's own safety checker is found in its folder
or in the local hub cache.

Exit codes: 0 every check the pack requires will run (optional or `when: real-model` ones may not,
each said with why); 4 a required check cannot load, so generating would fail closed.
"""

from __future__ import annotations

import json
import sys

import click


@click.command("doctor")
@click.option("--policy", default="default", show_default=True, help="Shipped pack name or a YAML path.")
@click.option(
    "--model", default="embedded:tiny-sd", show_default=True, help="The model you will generate with."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def doctor(policy: str, model: str, as_json: bool) -> None:
    """List which output checks will run with --policy and --model in this environment, and why not."""
    from genguard.guard.classifiers.registry import build_pack_checks
    from genguard.guard.policy import load_pack
    from genguard.pipeline.embedded import is_embedded

    pack = load_pack(policy)
    built = build_pack_checks(pack, model=model, real_model=not is_embedded(model))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "policy": {"name": pack.ref.name, "version": pack.ref.version, "digest": pack.ref.digest},
                    "model": model,
                    "checks": [
                        {"classifier": c.classifier, "model_id": c.model_id, "ran": c.ran, "reason": c.reason}
                        for c in built.checks
                    ],
                    "generation_fails_closed": bool(built.failures),
                },
                sort_keys=True,
            )
        )
    else:
        click.echo(f"policy {pack.ref.name} {pack.ref.version}, model {model}")
        for check in built.checks:
            state = (
                "runs" if check.ran else ("FAILS CLOSED" if check.reason.startswith("cannot load") else "off")
            )
            click.echo(f"  {check.classifier:<24} {state:<13} {check.model_id or '-'}")
            if check.reason:
                click.echo(f"      {check.reason}")
        if not any(check.ran for check in built.checks):
            click.echo("  warning: no output check will run on the images", err=True)
        for failure in built.failures:
            click.echo(f"error: {failure}", err=True)
    if built.failures:
        sys.exit(4)
