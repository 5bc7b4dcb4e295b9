"""`genguard verify IMAGE...`: is each image ours, which generation, was it changed (genguard.audit.verify).

pipeline/cli.py imports this module, which adds the command to its `cli`. Only click at load: the
verification stack (c2pa, OpenCV, the database) is imported when the command runs, never torch.

Exit codes: 0 every image verified-original; 1 some image has another verdict; 2 some input could not be
read (each named; the others are still verified and reported); 4 the database cannot be read, or a
verification could not be recorded (its report is still printed: fail closed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from genguard.guard.markid import format_mark_id
from genguard.pipeline.cli_common import db_option

if TYPE_CHECKING:
    from genguard.audit.verify import UnreadableImage, VerificationReport


@click.command("verify")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image, in input order.")
@click.option(
    "--trust-anchors",
    "trust_anchors",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="PEM file of the roots whose signatures count as ours (default: $GENGUARD_TRUST_ANCHORS, "
    "else the development root).",
)
@click.option(
    "--no-record", is_flag=True, help="Do not record the verifications (opens the database read-only)."
)
@db_option
def verify(
    images: tuple[Path, ...], as_json: bool, trust_anchors: Path | None, no_record: bool, db_url: str | None
) -> None:
    """Verify IMAGE files (folders are walked): Content Credentials, watermark, hashes, audit record."""
    from genguard.audit.store import AuditStore
    from genguard.audit.verify import (
        UnreadableImage,
        Verdict,
        VerificationNotRecorded,
        VerificationReport,
        image_files,
        verify_images,
    )
    from genguard.guard.errors import AuditUnavailableError, BadInputError

    anchors = None
    if trust_anchors is not None:
        try:
            anchors = trust_anchors.read_bytes()
        except OSError as exc:
            raise BadInputError(f"--trust-anchors {trust_anchors}: cannot read ({exc.strerror})") from None
    files = image_files(images)
    if not files:
        raise BadInputError(
            f"IMAGE: expected image files or folders holding some, found none in {', '.join(map(str, images))}"
        )
    outcomes: list[VerificationReport | UnreadableImage] = []
    failure: AuditUnavailableError | None = None
    with (
        AuditStore.open(db_url, read_only=no_record, allow_read_only=True) as store,
        click.progressbar(
            length=len(files),
            label="verifying",
            file=sys.stderr,
            hidden=len(files) < 2 or not sys.stderr.isatty(),
        ) as bar,
    ):
        try:
            for outcome in verify_images(files, store=store, trust_anchors_pem=anchors, record=not no_record):
                outcomes.append(outcome)
                bar.update(1)
        except AuditUnavailableError as exc:  # fail closed, but show what was verified before it
            if isinstance(exc, VerificationNotRecorded):
                outcomes.append(exc.report)
            failure = exc
    if as_json:
        for outcome in outcomes:  # JSON lines: one object per image, in input order
            click.echo(json.dumps(_json(outcome), ensure_ascii=False, sort_keys=True))
    else:
        for outcome in outcomes:
            _echo_text(outcome)
    if failure is not None:
        raise failure
    if any(isinstance(o, UnreadableImage) for o in outcomes):
        sys.exit(2)
    reports = [o for o in outcomes if isinstance(o, VerificationReport)]
    if any(report.verdict is not Verdict.VERIFIED_ORIGINAL for report in reports):
        sys.exit(1)


def _json(outcome: VerificationReport | UnreadableImage) -> dict[str, Any]:
    from genguard.audit.verify import UnreadableImage

    if isinstance(outcome, UnreadableImage):
        return {"name": outcome.name, "error": outcome.error}
    return outcome.to_json()


def _echo_text(outcome: VerificationReport | UnreadableImage) -> None:
    from genguard.audit.verify import UnreadableImage

    if isinstance(outcome, UnreadableImage):
        click.echo(f"error: {outcome.error}", err=True)  # the error names the file
        return
    report = outcome
    click.echo(f"{report.name}: {report.verdict.value}: {report.summary}")
    manifest = report.manifest
    claim = (
        f", claims {manifest.generation_id}/{manifest.image_index}"
        if manifest.generation_id is not None
        else ""
    )
    codes = f" [{', '.join(manifest.codes)}]" if manifest.codes else ""
    signer = f" signer {manifest.signer!r}" if manifest.signer else ""
    click.echo(f"  manifest   {manifest.state.value}{signer}{claim}{codes}")
    watermark = report.watermark
    if watermark is None:
        click.echo("  watermark  not read (image too small)")
    elif watermark.marked and watermark.mark_id is not None:
        click.echo(
            f"  watermark  mark {format_mark_id(watermark.mark_id)} (confidence {watermark.confidence:.1f})"
        )
    else:
        click.echo("  watermark  none found")
    exact = ", ".join(str(ref) for ref in report.hashes.exact) or "none"
    near = ", ".join(f"{m.image} ({m.distance})" for m in report.hashes.similar[:3]) or "none within 8 bits"
    click.echo(f"  hashes     sha256 matches: {exact}; phash {report.hashes.phash:016x} nearest: {near}")
    record = report.record
    if record is not None:
        click.echo(
            f"  record     {record.image} {record.image_status} (generation {record.generation_status}), "
            f"created {record.created_at:%Y-%m-%d %H:%M:%S} UTC, policy {record.policy.name} "
            f"{record.policy.version}, model {record.model_id}"
        )
        if record.marks:
            note = f" ({record.latent_mark_note})" if record.latent_mark_note else ""
            click.echo(f"  marks      {', '.join(record.marks)}{note}")
    if report.agreeing:
        click.echo(f"  agree      {', '.join(layer.value for layer in report.agreeing)}")
    for line in report.disagreements:
        click.echo(f"  CONFLICT   {line}")
    for line in report.notes:
        click.echo(f"  note       {line}")
