"""The `genguard` command line.

Only light modules are imported at load: torch and diffusers are imported inside `generate`,
so `genguard verify`, `policy` and `audit` start fast on a machine without them.
Exit codes: 0 done, 2 usage or bad input, 3 blocked by policy, 4 infrastructure failure,
5 generate withheld every image.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

import click

from guard.errors import BadInputError, GenguardError, NotFoundError
from guard.markid import format_mark_id

F = TypeVar("F", bound=Callable[..., Any])

EMBEDDED_NOTICE = (
    "note: {model} is an untrained demonstration model built in code; its images are abstract. "
    "Pass --model with a hub id or a local path for real images."
)


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "db_url",
        default=None,
        metavar="URL",
        help="Audit database URL (default: $GENGUARD_DB, else an SQLite file under $GENGUARD_HOME).",
    )(func)


def read_db_options(func: F) -> F:
    """--db and --read-only, for commands that only read the audit database."""
    func = click.option(
        "--read-only",
        "read_only",
        is_flag=True,
        help="Open the database read-only (an evidence copy; implied when the file is not writable).",
    )(func)
    return db_option(func)


def _open_store(db_url: str | None) -> Any:
    from audit.store import AuditStore

    return AuditStore.open(db_url)


def open_reader(db_url: str | None, read_only: bool = False) -> Any:
    """The store for a command that only reads: read-only when asked, or when it cannot be written."""
    from audit.store import AuditStore

    return AuditStore.open(db_url, read_only=read_only, allow_read_only=True)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))


_OUTPUT = {"verbose": False}
_LIBRARIES = ("transformers", "diffusers", "accelerate", "huggingface_hub", "torch")


def configure_output(verbose: bool) -> None:
    """Without --verbose, third-party loading bars, advice and warnings stay off the CLI's output.

    Environment defaults are read when the libraries are imported (always later: commands import them
    lazily); loggers and warning filters cover what they print through Python itself. An explicit
    TRANSFORMERS_VERBOSITY / DIFFUSERS_VERBOSITY / HF_HUB_DISABLE_PROGRESS_BARS in the environment wins.
    """
    import logging
    import os
    import warnings

    _OUTPUT["verbose"] = verbose
    if verbose:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )
        return
    for variable, value in (
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("DIFFUSERS_VERBOSITY", "error"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
    ):
        os.environ.setdefault(variable, value)
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=rf"{name}(\.|$)")
    if "transformers" in sys.modules or "diffusers" in sys.modules:
        _quiet_model_libraries()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="genguard")
@click.option(
    "-v", "--verbose", is_flag=True, help="Show the model libraries' loading bars, advice and warnings."
)
def cli(verbose: bool) -> None:
    """genguard: governed image generation, provenance and audit."""
    configure_output(verbose)


# -- generate ---------------------------------------------------------------------------------


def _parse_size(value: str) -> tuple[int, int]:
    """WIDTH or WIDTHxHEIGHT as two integers (their bounds are checked with the request's)."""
    text = value.strip().lower()
    width, _, height = text.partition("x")
    if not width.isdigit() or not (height.isdigit() if "x" in text else True) or len(text) > 12:
        raise BadInputError(f"size: expected WIDTH or WIDTHxHEIGHT in pixels, found {value!r}")
    return int(width), int(height or width)


@cli.command()
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
    negative_prompt: str,
    out_dir: Path,
    device: str,
    dtype: str | None,
    actor: str | None,
    output_format: str,
    sidecar: bool,
    as_json: bool,
    db_url: str | None,
) -> None:
    """Generate images for PROMPT through the governed pipeline.

    Every request is recorded: refused ones (bad input, exit 2) as `invalid`, before any model loads.
    Exit 5 when every image was withheld by the output checks.
    """
    import dataclasses
    import os

    from audit.repair import remove_temporary_files
    from guard.policy import PolicyEngine, load_pack
    from guard.types import GenerationParams, GenerationRequest
    from pipeline import families
    from pipeline.accel import family_from_source
    from pipeline.embedded import EMBEDDED_DEFAULT_SIZE, check_model_name, embedded_dir, is_embedded
    from pipeline.governed import GovernedPipeline, check_out_dir, check_request, refusal
    from pipeline.outcomes import ALL_WITHHELD_EXIT_CODE

    _quiet_model_libraries()
    store = _open_store(db_url)
    pack = load_pack(policy)
    engine = PolicyEngine(pack)
    request = GenerationRequest(
        prompt=prompt,
        negative_prompt=negative_prompt,
        params=GenerationParams(
            width=0, height=0, steps=steps, guidance_scale=guidance, num_images=num_images, seed=seed
        ),
        actor=actor or os.environ.get("USER", "anonymous"),
    )

    def refuse(error: GenguardError, pipeline_class: str = "") -> NoReturn:
        refused = refusal(
            request, error, policy=pack, engine=engine, model_id=model, pipeline_class=pipeline_class
        )
        store.record_generation(refused.record)
        raise refused from error

    # Everything that needs no model is checked (and a refusal recorded) before the model loads.
    try:
        if size is not None:
            width, height = _parse_size(size)
            request = dataclasses.replace(
                request, params=dataclasses.replace(request.params, width=width, height=height)
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
        _print_json(
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


def _quiet_model_libraries() -> None:
    """The CLI shows its own progress bar; the libraries' loading bars and advice are noise here
    (unless --verbose)."""
    if _OUTPUT["verbose"]:
        return
    import diffusers
    import transformers

    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()


# -- policy -----------------------------------------------------------------------------------


@cli.group()
def policy() -> None:
    """Check prompts against a policy pack; show packs."""


# Bounds on `policy check --file` / stdin (a pack's `limits:` may tighten them): prompts per file, bytes
# per file and per line (a prompt is at most 20,000 characters, 80,000 bytes of UTF-8). A line is read
# at most this long, so a file without newlines never fills memory.
MAX_PROMPTS_PER_FILE = 10_000
MAX_PROMPT_FILE_BYTES = 16 * 1024 * 1024
MAX_PROMPT_LINE_BYTES = 80_000


@dataclasses.dataclass(frozen=True)
class PromptFileBounds:
    prompts: int = MAX_PROMPTS_PER_FILE
    file_bytes: int = MAX_PROMPT_FILE_BYTES
    line_bytes: int = MAX_PROMPT_LINE_BYTES


def _prompts_from(
    prompt: str | None, file: TextIO | None, bounds: PromptFileBounds = PromptFileBounds()
) -> Iterator[tuple[int | None, str]]:
    """(line number, prompt): None for a PROMPT argument; blank lines are skipped.

    Raises BadInputError naming the line where the input crosses one of `bounds` (the prompts before
    it are checked). A line is read in pieces of at most `bounds.line_bytes + 1` characters.
    """
    if prompt is not None and file is not None:
        raise click.UsageError("give PROMPT or --file, not both")
    if prompt is not None and prompt != "-":
        yield None, prompt
        return
    source = file if file is not None else sys.stdin
    total = prompts = number = 0
    while line := source.readline(bounds.line_bytes + 1):
        number += 1
        size = len(line.rstrip("\n").encode("utf-8", "surrogateescape"))
        if size > bounds.line_bytes:
            raise BadInputError(
                f"--file: line {number}: expected at most {bounds.line_bytes} bytes, found more"
            )
        total += size + line.endswith("\n")
        if total > bounds.file_bytes:
            raise BadInputError(
                f"--file: expected at most {bounds.file_bytes} bytes, found more by line {number}"
            )
        line = line.rstrip("\n")
        if line.strip():
            prompts += 1
            if prompts > bounds.prompts:
                raise BadInputError(
                    f"--file: expected at most {bounds.prompts} prompts, found more by line {number}"
                )
            yield number, line


@policy.command("check")
@click.argument("prompt", required=False)
@click.option(
    "--file",
    "file",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help="One prompt per line; - for stdin.",
)
@click.option("--policy", "policy_name", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per prompt, in input order.")
def policy_check(prompt: str | None, file: TextIO | None, policy_name: str, as_json: bool) -> None:
    """Check PROMPT (or a file / stdin of prompts) against a pack. Exit 3 if any was blocked, 2 if any
    prompt was refused as input (empty, NUL: the same check as generate's)."""
    from guard.errors import BadInputError
    from guard.policy import PolicyEngine, load_pack
    from guard.types import PromptAction, validate_prompt

    if prompt is None and file is None and sys.stdin.isatty():
        raise click.UsageError("give a PROMPT, --file FILE, or prompts on stdin")
    pack = load_pack(policy_name)
    engine = PolicyEngine(pack)
    limits = pack.spec.limits
    bounds = PromptFileBounds()
    if limits is not None:  # a pack's limits only tighten
        bounds = PromptFileBounds(
            min(bounds.prompts, limits.max_prompts_per_file or bounds.prompts),
            min(bounds.file_bytes, limits.max_file_bytes or bounds.file_bytes),
            min(bounds.line_bytes, limits.max_line_bytes or bounds.line_bytes),
        )
    any_blocked = any_bad = False
    for number, text in _prompts_from(prompt, file, bounds):
        try:
            validate_prompt(text)  # the same check as generate's
        except BadInputError as exc:
            if number is None:
                raise
            click.echo(f"error: line {number}: {exc}", err=True)  # the others are still checked
            any_bad = True
            continue
        decision = engine.check(text)
        any_blocked |= decision.action is PromptAction.BLOCK
        if as_json:
            _print_json(decision.to_json())
        else:
            fired = ", ".join(f"{h.category}/{h.layer}/{h.rule}" for h in decision.rules) or "-"
            click.echo(f"{decision.action.value:8} {fired:40} {text}")
    if any_bad:
        sys.exit(2)
    if any_blocked:
        sys.exit(3)


@policy.command("show")
@click.argument("name", required=False)
def policy_show(name: str | None) -> None:
    """Show pack NAME (a shipped name or a path), or list the shipped packs."""
    from guard.policy import list_shipped_packs, load_pack

    if name is None:
        for pack_name in list_shipped_packs():
            pack = load_pack(pack_name)
            click.echo(f"{pack_name:10} version {pack.ref.version:8} sha256 {pack.ref.digest}")
        return
    pack = load_pack(name)
    click.echo(f"# {pack.ref.name} {pack.ref.version} sha256:{pack.ref.digest}")
    click.echo(pack.to_yaml())


# -- watermark --------------------------------------------------------------------------------

_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


@cli.group()
def watermark() -> None:
    """Embed or detect the pixel watermark with the organisation's key (GENGUARD_HOME/keys)."""


@watermark.command("embed")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("destination", type=click.Path(path_type=Path))
@click.option(
    "--id", "mark_id", required=True, help="The 64-bit mark id: 0x and hex digits (as printed), or decimal."
)
@click.option(
    "--quality", default=95, show_default=True, type=click.IntRange(1, 100), help="JPEG/WebP quality."
)
def watermark_embed(source: Path, destination: Path, mark_id: str, quality: int) -> None:
    """Write DESTINATION: SOURCE with mark id --id (format from DESTINATION's suffix)."""
    from guard.imageio import encode_image, load_image
    from guard.markid import format_mark_id, parse_mark_id
    from guard.watermark import embed

    value = parse_mark_id(mark_id, "--id")
    fmt = _FORMATS.get(destination.suffix.lower())
    if fmt is None:
        raise click.BadParameter(
            f"expected a suffix in {sorted(_FORMATS)}, found {destination.suffix!r}", param_hint="DESTINATION"
        )
    loaded = load_image(source)
    data = encode_image(loaded.with_alpha(embed(loaded.rgb, value)), fmt, quality)  # type: ignore[arg-type]
    tmp = destination.with_name(f".{destination.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(destination)
    click.echo(f"{destination}: marked with id {format_mark_id(value)}")


@watermark.command("detect")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image, in input order.")
def watermark_detect(images: tuple[Path, ...], as_json: bool) -> None:
    """Read the pixel watermark of each IMAGE. Exit 2 if any image could not be read."""
    import dataclasses

    from guard.errors import ImageInputError
    from guard.imageio import load_image
    from guard.markid import format_mark_id, format_optional_mark_id
    from guard.watermark import detect

    failed = False
    for path in images:
        try:
            found = detect(load_image(path).rgb)
        except (ImageInputError, GenguardError) as exc:
            failed = True
            if as_json:
                _print_json({"image": str(path), "error": str(exc)})
            else:
                click.echo(f"{path}: error: {exc}", err=True)
            continue
        if as_json:
            _print_json(
                {
                    "image": str(path),
                    **dataclasses.asdict(found),
                    "mark_id": format_optional_mark_id(found.mark_id),
                }
            )
        elif found.marked and found.mark_id is not None:
            click.echo(
                f"{path}: marked, id {format_mark_id(found.mark_id)}, confidence {found.confidence:.1f}"
            )
        else:
            click.echo(f"{path}: not marked")
    if failed:
        sys.exit(2)


# -- audit ------------------------------------------------------------------------------------


@cli.group()
def audit() -> None:
    """Query and verify the audit log."""


@audit.command("list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100000))
@click.option("--status", default=None, help="completed, blocked, failed or invalid.")
@click.option("--json", "as_json", is_flag=True)
@read_db_options
def audit_list(limit: int, status: str | None, as_json: bool, db_url: str | None, read_only: bool) -> None:
    """The latest generations, newest first."""
    store = open_reader(db_url, read_only)
    rows = store.list_generations(limit=limit, status=status)
    for row in rows:
        if as_json:
            _print_json(_dataclass_json(row))
        else:
            click.echo(
                f"{row.generation_id}  {row.created_at:%Y-%m-%d %H:%M:%S}  {row.status:9}  "
                f"{row.decision_action.value:7}  images {row.image_count}  {row.policy.name} {row.policy.version}"
            )


@audit.command("show")
@click.argument("generation_id")
@click.option(
    "--raw",
    is_flag=True,
    help="Include stored bytes (C2PA manifests) in hex instead of their digest and length.",
)
@read_db_options
def audit_show(generation_id: str, raw: bool, db_url: str | None, read_only: bool) -> None:
    """Everything recorded for one generation, as JSON; manifests as their SHA-256 and length unless --raw."""
    store = open_reader(db_url, read_only)
    detail = store.get_generation(generation_id)
    if detail is None:
        raise NotFoundError(f"generation {generation_id!r}: not found in the audit database")
    click.echo(
        json.dumps(_dataclass_json(detail, raw), indent=2, sort_keys=True, default=str, ensure_ascii=False)
    )


@audit.command("verify")
@click.option(
    "--checkpoint", "checkpoint_file", type=click.Path(path_type=Path), default=None,
    help="Also prove the log still holds exactly what this signed checkpoint covers, plus later entries.",
)  # fmt: skip
@click.option(
    "--public-key", type=click.Path(path_type=Path), default=None, help="Trusted checkpoint key (PEM)."
)
@click.option(
    "--witnesses", type=click.Path(path_type=Path), default=None,
    help="With --checkpoint: require k of these n witnesses' cosignatures (a policy file, see audit.witness).",
)  # fmt: skip
@read_db_options
def audit_verify(
    checkpoint_file: Path | None,
    public_key: Path | None,
    witnesses: Path | None,
    db_url: str | None,
    read_only: bool,
) -> None:
    """Recompute the chained log against the stored rows. Exit 1 and name the first bad entry if broken."""
    if witnesses is not None and checkpoint_file is None:
        raise BadInputError(
            "--witnesses: expected --checkpoint too (witnesses cosign a checkpoint), found none"
        )
    store = open_reader(db_url, read_only)
    if checkpoint_file is not None:
        from pipeline.cli_checkpoint import verify_with_checkpoint

        verify_with_checkpoint(store, checkpoint_file, public_key, witnesses)
        return
    report = store.verify_chain()
    if report.ok:
        click.echo(f"ok: {report.entries_checked} entries, chain intact")
        return
    click.echo(f"BROKEN at entry {report.first_bad_seq}: {report.reason}", err=True)
    sys.exit(1)


_SHORT_BYTES = 64  # nonces and digests are shown in hex; longer bytes (manifests) as a digest and length


def _dataclass_json(value: Any, raw: bool = False) -> Any:
    """JSON for people: mark ids in their one form, long bytes as {"sha256", "length"} unless `raw`."""
    import dataclasses
    import hashlib

    from guard.markid import format_mark_id

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            is_mark = f.name == "mark_id" and isinstance(item, int)
            fields[f.name] = format_mark_id(item) if is_mark else _dataclass_json(item, raw)
        return fields
    if isinstance(value, (list, tuple)):
        return [_dataclass_json(v, raw) for v in value]
    if isinstance(value, dict):
        return {str(k): _dataclass_json(v, raw) for k, v in value.items()}
    if isinstance(value, bytes):
        if raw or len(value) <= _SHORT_BYTES:
            return value.hex()
        return {"sha256": hashlib.sha256(value).hexdigest(), "length": len(value)}
    return value


# The plug-in modules add their commands to `cli` and `audit` (they import this module by name).
import pipeline.cli_checkpoint  # audit checkpoint, prove, check-proof, public-key
import pipeline.cli_compliance  # report compliance
import pipeline.cli_doctor  # doctor
import pipeline.cli_keys  # keys
import pipeline.cli_policy  # policy init
import pipeline.cli_repair  # audit repair
import pipeline.cli_review  # review, report
import pipeline.cli_verify  # noqa: F401  (verify)


def main(argv: list[str] | None = None) -> None:
    """Entry point: GenguardError becomes a one-line message and its exit code."""
    try:
        code = cli.main(args=argv, prog_name="genguard", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code in (1, 2) else exc.exit_code)
    except GenguardError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    # `python -m pipeline.cli` runs this file as `__main__`, a second copy of the module: the plug-ins
    # above registered their commands on `pipeline.cli`, so run that module's entry point.
    from pipeline.cli import main as registered_main

    registered_main()
