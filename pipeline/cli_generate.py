"""`genguard generate`: one governed generation from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from genguard.guard.errors import BadInputError, GenguardError
from genguard.guard.markid import format_mark_id
from genguard.pipeline.cli_common import db_option, open_store, print_json, quiet_model_libraries

EMBEDDED_NOTICE = (
    "note: {model} is an untrained demonstration model built in code; its images are abstract. "
    "Pass --model with a hub id or a local path for real images."
)


def _parse_size(value: str) -> tuple[int, int]:
    """WIDTH or WIDTHxHEIGHT as two integers (their bounds are checked with the request's)."""
    text = value.strip().lower()
    width, _, height = text.partition("x")
    if not width.isdigit() or not (height.isdigit() if "x" in text else True) or len(text) > 12:
        raise BadInputError(f"size: expected WIDTH or WIDTHxHEIGHT in pixels, found {value!r}")
    return int(width), int(height or width)


@click.command()
@click.argument("prompt")
@click.option(
    "--model", default="embedded:tiny-sd", show_default=True, help="Hub id, local path or embedded:tiny-*."
)
@click.option("--policy", default="default", show_default=True, help="Shipped pack name or a YAML path.")
@click.option(
    "-n",
    "--num-images",
    default=1,
    show_default=True,
    type=int,
    help="Images (at most 64; the family's bound).",
)
@click.option("--seed", type=int, default=None, help="Seed (default: drawn and recorded).")
@click.option("--steps", default=10, show_default=True, type=int, help="Sampling steps (the family's bound).")
@click.option(
    "--size",
    default=None,
    help="WIDTH or WIDTHxHEIGHT, multiples of 8 (default: 256 for the embedded models, else the model's own).",
)
@click.option("--guidance", default=7.0, show_default=True, type=float)
@click.option(
    "--scheduler",
    type=click.Choice(["default", "lcm", "turbo"]),
    default="default",
    show_default=True,
    help="Few-step sampler for SD/SDXL: lcm (LCMScheduler) or turbo (Euler ancestral, trailing; use "
    "--steps 1-4 --guidance 0). default: the model's own. Recorded with the generation.",
)
@click.option("--negative", "negative_prompt", default="", help="Negative prompt.")
@click.option("--out", "out_dir", default="genguard-out", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto (the GPU if any)."
)
@click.option(
    "--dtype",
    type=click.Choice(["fp16", "bf16", "fp32"]),
    default=None,
    help="Precision (default: fp16 for SD/SDXL and bf16 for SD3/Flux on CUDA, fp32 on the CPU).",
)
@click.option("--actor", default=None, help="Who asks (default: $USER).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["png", "jpeg", "webp"]),
    default="png",
    show_default=True,
    help="Image file format (each carries signed Content Credentials).",
)
@click.option(
    "--image",
    "init_image",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Edit this image (img2img; inpainting with --mask). PNG, JPEG or WebP; its size is the default --size.",
)
@click.option(
    "--mask",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Inpainting mask, the --image's size: white (>= 128) is repainted.",
)
@click.option(
    "--strength",
    type=float,
    default=None,
    help="How far the edit may move from the input, (0, 1] (default 0.75 img2img, 1.0 inpainting).",
)
@click.option(
    "--consent",
    default=None,
    help="A reference to the consent attestation for editing a picture of a real person (recorded).",
)
@click.option("--sidecar", is_flag=True, help="Write the C2PA manifest to NAME.c2pa instead of embedding it.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@db_option
def generate(
    prompt: str,
    model: str,
    policy: str,
    num_images: int,
    seed: int | None,
    steps: int,
    size: str | None,
    guidance: float,
    scheduler: str,
    negative_prompt: str,
    out_dir: Path,
    device: str,
    dtype: str | None,
    actor: str | None,
    output_format: str,
    init_image: Path | None,
    mask: Path | None,
    strength: float | None,
    consent: str | None,
    sidecar: bool,
    as_json: bool,
    db_url: str | None,
) -> None:
    """Generate images for PROMPT through the governed pipeline.

    Every request is recorded: refused ones (bad input, exit 2) as `invalid`, before any model loads.
    Exit 5 when every image was withheld by the output checks. With --image the request is an edit
    (docs/edits.md): the input is checked, and the pack's `edits:` section decides, before sampling.
    """
    import dataclasses
    import os

    from genguard.audit.repair import remove_temporary_files
    from genguard.guard.input_image import input_size, read_input
    from genguard.guard.policy import PolicyEngine, load_pack
    from genguard.guard.types import GenerationParams, GenerationRequest
    from genguard.pipeline import families
    from genguard.pipeline.accel import family_from_source
    from genguard.pipeline.edit_input import refused_edit_json
    from genguard.pipeline.embedded import EMBEDDED_DEFAULT_SIZE, check_model_name, embedded_dir, is_embedded
    from genguard.pipeline.governed import GovernedPipeline
    from genguard.pipeline.governor import check_out_dir, check_request, refusal
    from genguard.pipeline.outcomes import ALL_WITHHELD_EXIT_CODE

    quiet_model_libraries()
    store = open_store(db_url)
    pack = load_pack(policy)
    engine = PolicyEngine(pack)
    request = GenerationRequest(
        prompt=prompt,
        negative_prompt=negative_prompt,
        params=GenerationParams(
            width=0, height=0, steps=steps, guidance_scale=guidance, num_images=num_images, seed=seed
        ),
        actor=actor or os.environ.get("USER", "anonymous"),
        init_image=init_image,
        mask=mask,
        strength=strength,
        consent=consent,
    )

    def refuse(error: GenguardError, pipeline_class: str = "") -> NoReturn:
        refused = refusal(
            request, error, policy=pack, engine=engine, model_id=model, pipeline_class=pipeline_class
        )
        if request.is_edit and refused.record is not None:
            refused.record.extra["edit"] = refused_edit_json(request)
        store.record_generation(refused.record)
        raise refused from error

    # Everything that needs no model is checked (and a refusal recorded) before the model loads.
    try:
        if request.is_edit and request.init_image is not None:  # read once, bounded; its hash is recorded
            data = read_input(request.init_image, "init_image", pack.edits.max_input_bytes)
            request = dataclasses.replace(request, init_image=data)
        if size is not None:
            width, height = _parse_size(size)
            request = dataclasses.replace(
                request, params=dataclasses.replace(request.params, width=width, height=height)
            )
        elif isinstance(request.init_image, bytes):  # an edit keeps its input's size (to a multiple of 8)
            width, height = input_size(request.init_image, "init_image", pack.edits.max_input_pixels)
            request = dataclasses.replace(
                request,
                params=dataclasses.replace(
                    request.params, width=max(8, width - width % 8), height=max(8, height - height % 8)
                ),
            )
        elif is_embedded(model):
            request = dataclasses.replace(
                request,
                params=dataclasses.replace(
                    request.params, width=EMBEDDED_DEFAULT_SIZE, height=EMBEDDED_DEFAULT_SIZE
                ),
            )
        check_model_name(model)
        source = embedded_dir(model) if is_embedded(model) else Path(model)
        family = family_from_source(str(source)) if source.is_dir() else None
        bounds = families.bounds_for(family, embedded=is_embedded(model), limits=pack.spec.limits)
        check_request(request, bounds, check_size=request.params.width > 0)
        check_out_dir(out_dir)
    except GenguardError as exc:
        refuse(exc)
    for removed in remove_temporary_files(out_dir):
        click.echo(f"note: removed {removed}, left by an interrupted earlier run", err=True)

    if is_embedded(model):
        click.echo(EMBEDDED_NOTICE.format(model=model), err=True)
    try:
        pipe = GovernedPipeline.from_pretrained(
            model,
            policy=pack,
            audit=store,
            device=device,
            dtype=dtype,
            output_format=output_format,
            sidecar=sidecar,
            policy_engine=engine,
            scheduler=scheduler,
        )
    except GenguardError as exc:  # bad input (device, format) is invalid; a loading failure is failed
        refuse(exc)
    if request.params.width == 0:  # a real model's own default size
        side = families.default_size(pipe.pipe)
        request = dataclasses.replace(
            request, params=dataclasses.replace(request.params, width=side, height=side)
        )
    bars: list[Any] = []  # opened on the first step, so that a blocked prompt shows no bar

    def advance(step: int, total: int) -> None:
        if not bars:
            bars.append(click.progressbar(length=total, label="sampling", file=sys.stderr).__enter__())
        bars[0].update(step - bars[0].pos)

    try:
        result = pipe(request, out_dir=out_dir, progress=advance)
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)
    if as_json:
        print_json(
            {
                "generation_id": result.generation_id,
                "status": result.status,
                "seed": result.seed,
                "model": result.model_id,
                "decision": result.decision.to_json(),
                "released": [
                    {
                        "index": i.index,
                        "path": str(i.path),
                        "sha256": i.sha256,
                        "mark_id": format_mark_id(i.mark_id),
                    }
                    for i in result.released
                ],
                "withheld": [
                    {"index": w.index, "status": w.status, "reason": w.reason} for w in result.withheld
                ],
                "checks": [
                    {"classifier": c.classifier, "model_id": c.model_id, "ran": c.ran, "reason": c.reason}
                    for c in pipe.checks
                ],
            }
        )
    else:
        click.echo(
            f"generation {result.generation_id} (seed {result.seed}, policy {result.decision.policy.name} "
            f"{result.decision.policy.version}, prompt {result.decision.action.value})"
        )
        if result.decision.prompt != result.decision.original_prompt:
            click.echo(f"  prompt rewritten by policy to: {result.decision.prompt!r}")
        for image in result.released:
            click.echo(
                f"  released {image.path}  sha256 {image.sha256[:16]}  mark {format_mark_id(image.mark_id)}"
            )
        for held in result.withheld:
            click.echo(f"  withheld image {held.index}: {held.status} ({held.reason})")
        for check in pipe.checks:
            click.echo(f"  check {check.classifier}: {'ran' if check.ran else check.reason}")
        if result.bias is not None and result.bias.faces:
            entropy = result.bias.skin_tone.entropy
            uniform = ", ".join(result.bias.uniform)
            click.echo(
                f"  perceived: {result.bias.faces} faces, skin tone entropy "
                + ("n/a" if entropy is None else f"{entropy:.2f}")
                + (f"; uniform batch ({uniform}): {result.bias.action}" if uniform else "")
            )
    if not any(check.ran for check in pipe.checks):
        click.echo("warning: no output check ran on these images", err=True)
    if result.status == "withheld":
        click.echo(
            f"withheld: all {len(result.withheld)} image(s) of generation {result.generation_id} were held "
            "back by the output checks; nothing was released",
            err=True,
        )
        sys.exit(ALL_WITHHELD_EXIT_CODE)
