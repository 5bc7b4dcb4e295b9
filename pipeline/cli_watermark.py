"""`genguard watermark`: embed and detect a registered watermark (the pixel one by default) with the
organisation's key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from genguard.guard.errors import GenguardError
from genguard.pipeline.cli_common import print_json

if TYPE_CHECKING:
    from genguard.guard.watermark import Watermarker

_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
_PIXEL = "genguard.pixel.v3"  # the default; the registry says which ids this process reads


def _watermarker(ctx: click.Context, param: click.Parameter, algorithm: str) -> Watermarker:
    from genguard.guard.watermark import UnknownWatermarkError, watermarker_for

    try:
        return watermarker_for(algorithm)
    except UnknownWatermarkError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


_algorithm_option = click.option(
    "--algorithm",
    "watermarker",
    default=_PIXEL,
    show_default=True,
    callback=_watermarker,
    help="The watermark's algorithm id (a registered watermarker, genguard.guard.watermark.base).",
)


@click.group()
def watermark() -> None:
    """Embed or detect a watermark with the organisation's key (GENGUARD_HOME/keys)."""


@watermark.command("embed")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("destination", type=click.Path(path_type=Path))
@click.option(
    "--id", "mark_id", required=True, help="The 64-bit mark id: 0x and hex digits (as printed), or decimal."
)
@click.option(
    "--quality", default=95, show_default=True, type=click.IntRange(1, 100), help="JPEG/WebP quality."
)
@_algorithm_option
def watermark_embed(
    source: Path, destination: Path, mark_id: str, quality: int, watermarker: Watermarker
) -> None:
    """Write DESTINATION: SOURCE with mark id --id (format from DESTINATION's suffix)."""
    from genguard.guard.imageio import encode_image, load_image
    from genguard.guard.markid import format_mark_id, parse_mark_id

    value = parse_mark_id(mark_id, "--id")
    fmt = _FORMATS.get(destination.suffix.lower())
    if fmt is None:
        raise click.BadParameter(
            f"expected a suffix in {sorted(_FORMATS)}, found {destination.suffix!r}", param_hint="DESTINATION"
        )
    loaded = load_image(source)
    data = encode_image(loaded.with_alpha(watermarker.embed(loaded.rgb, value)), fmt, quality)  # type: ignore[arg-type]
    tmp = destination.with_name(f".{destination.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(destination)
    click.echo(f"{destination}: marked with id {format_mark_id(value)}")


@watermark.command("detect")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image, in input order.")
@_algorithm_option
def watermark_detect(images: tuple[Path, ...], as_json: bool, watermarker: Watermarker) -> None:
    """Read the watermark of each IMAGE. Exit 2 if any image could not be read."""
    import dataclasses

    from genguard.guard.errors import ImageInputError
    from genguard.guard.imageio import load_image
    from genguard.guard.markid import format_mark_id, format_optional_mark_id

    failed = False
    for path in images:
        try:
            found = watermarker.detect(load_image(path).rgb)
        except (ImageInputError, GenguardError) as exc:
            failed = True
            if as_json:
                print_json({"image": str(path), "error": str(exc)})
            else:
                click.echo(f"{path}: error: {exc}", err=True)
            continue
        if as_json:
            print_json(
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
