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
@click.option(
    "--log-public-key", type=click.Path(path_type=Path), default=None,
    help="Trusted log signing key (PEM); default: the local log key, else log-key.pem beside the checkpoints.",
)  # fmt: skip
@click.option(
    "--checkpoint-dir", type=click.Path(path_type=Path), default=None,
    help="Folder of automatic checkpoints (default: GENGUARD_CHECKPOINT_DIR, else checkpoints/ under the "
    "configuration folder); the latest one for this log is checked.",
)  # fmt: skip
@click.option(
    "--tenant", default=None,
    help="A `genguard serve` tenant's own chain: --db is then the service database; its audit database, "
    "checkpoint folder and log public key are the tenant's (`genguard tenants show NAME`).",
)  # fmt: skip
@read_db_options
def audit_verify(
    checkpoint_file: Path | None,
    public_key: Path | None,
    witnesses: Path | None,
    log_public_key: Path | None,
    checkpoint_dir: Path | None,
    tenant: str | None,
    db_url: str | None,
    read_only: bool,
) -> None:
    """Recompute the chained log against the stored rows, check its batch signatures and the latest
    automatic checkpoint. Exit 1 and name the first bad entry if broken."""
    from genguard.audit.checkpoint import AutoCheckpoints, LogKeyMismatchError, verify_log_against_pins
    from genguard.audit.log_key import load_public_key

    if tenant is not None:
        from genguard.audit.service_store import ServiceStore
        from genguard.audit.tenant_spaces import layout

        with ServiceStore.open(db_url) as service:
            space = layout(db_url, service.tenant(tenant).id)
        db_url = space.audit_url
        checkpoint_dir = checkpoint_dir if checkpoint_dir is not None else space.checkpoints
        log_public_key = log_public_key if log_public_key is not None else space.log_public_key

    if witnesses is not None and checkpoint_file is None:
        raise BadInputError(
            "--witnesses: expected --checkpoint too (witnesses cosign a checkpoint), found none"
        )
    store = open_reader(db_url, read_only)
    base = checkpoint_dir if checkpoint_dir is not None else AutoCheckpoints.from_env().base
    folder = base / store.log_id()
    given = load_public_key(log_public_key) if log_public_key is not None else None
    if checkpoint_file is not None:  # first: it names a rewritten entry more precisely than a batch
        from genguard.pipeline.cli_checkpoint import verify_with_checkpoint

        verify_with_checkpoint(store, checkpoint_file, public_key, witnesses)
    try:
        report = verify_log_against_pins(store, folder, given)
    except LogKeyMismatchError as exc:
        click.echo(f"BROKEN: {exc}: pass the trusted one with --log-public-key", err=True)
        sys.exit(1)
    if not report.ok:
        where = "" if report.first_bad_seq is None else f" at entry {report.first_bad_seq}"
        click.echo(f"BROKEN{where}: {report.reason}", err=True)
        sys.exit(1)
    if checkpoint_file is None:
        click.echo(f"ok: {report.entries_checked} entries, chain intact")
    _say_signatures(report.signed_from, report.head_seq, report.batches_verified, report.log_key_id)
    if checkpoint_file is None:
        from genguard.pipeline.cli_checkpoint import verify_latest_checkpoint

        verify_latest_checkpoint(store, folder, public_key)


def _say_signatures(signed_from: int | None, head: int, batches: int, log_key_id: str | None) -> None:
    if signed_from is not None and signed_from > 1:
        legacy = min(signed_from - 1, head)
        click.echo(
            f"entries 1..{legacy} predate log signing (migrated log): verified under the old rules, chain only"
        )
    if signed_from is not None and head >= signed_from:
        click.echo(
            f"log signatures: entries {signed_from}..{head} in {batches} signed batches verified "
            f"(log key {(log_key_id or '?')[:16]})"
        )


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
