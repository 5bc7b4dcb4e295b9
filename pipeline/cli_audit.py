"""`genguard audit`: list, show and verify the chained log (checkpoints and repair are registered in cli.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from genguard.guard.errors import BadInputError, NotFoundError
from genguard.pipeline.cli_common import open_reader, print_json, read_db_options


@click.group()
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
            print_json(dataclass_json_for_people(row))
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
        json.dumps(
            dataclass_json_for_people(detail, raw), indent=2, sort_keys=True, default=str, ensure_ascii=False
        )
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
    help="With --checkpoint: require k of these n witnesses' cosignatures (a policy file, see genguard.audit.witness).",
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
        from genguard.pipeline.cli_checkpoint import verify_with_checkpoint

        verify_with_checkpoint(store, checkpoint_file, public_key, witnesses)
        return
    report = store.verify_chain()
    if report.ok:
        click.echo(f"ok: {report.entries_checked} entries, chain intact")
        return
    click.echo(f"BROKEN at entry {report.first_bad_seq}: {report.reason}", err=True)
    sys.exit(1)


_SHORT_BYTES = 64  # nonces and digests are shown in hex; longer bytes (manifests) as a digest and length


def dataclass_json_for_people(value: Any, raw: bool = False) -> Any:
    """JSON for people: mark ids in their one form, long bytes as {"sha256", "length"} unless `raw`."""
    import dataclasses
    import hashlib

    from genguard.guard.markid import format_mark_id

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            is_mark = f.name == "mark_id" and isinstance(item, int)
            fields[f.name] = format_mark_id(item) if is_mark else dataclass_json_for_people(item, raw)
        return fields
    if isinstance(value, (list, tuple)):
        return [dataclass_json_for_people(v, raw) for v in value]
    if isinstance(value, dict):
        return {str(k): dataclass_json_for_people(v, raw) for k, v in value.items()}
    if isinstance(value, bytes):
        if raw or len(value) <= _SHORT_BYTES:
            return value.hex()
        return {"sha256": hashlib.sha256(value).hexdigest(), "length": len(value)}
    return value
