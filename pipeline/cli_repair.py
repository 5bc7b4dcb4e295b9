"""`genguard audit repair`: remove what a crashed generation left behind (see genguard.audit.repair).

pipeline/cli.py imports this module, which adds the command to its `audit` group. Light imports only.
"""

from __future__ import annotations

from pathlib import Path

import click

from genguard.pipeline.cli_common import db_option

DEFAULT_MIN_AGE = (
    3600.0  # seconds; genguard.audit.repair.DEFAULT_MIN_AGE (not imported here: the CLI starts light)
)


@click.command("repair")
@click.option(
    "--out",
    "out_dirs",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="An output folder to clean of interrupted writes (repeatable; default: genguard-out if present).",
)
@click.option(
    "--min-age",
    default=DEFAULT_MIN_AGE,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Only files older than this many seconds (a running generation keeps its own).",
)
@db_option
def audit_repair(out_dirs: tuple[Path, ...], min_age: float, db_url: str | None) -> None:
    """Remove leftovers of interrupted generations: hidden .tmp files in output folders and
    encrypted quarantine files (GENGUARD_HOME/quarantine) that no committed record of this
    database keeps. Prints each file removed."""
    from genguard.audit.repair import RepairReport, remove_orphan_quarantine, repair_output_folder
    from genguard.audit.store import AuditStore
    from genguard.guard.quarantine import QuarantineVault

    store = AuditStore.open(db_url)
    folders = out_dirs or ((Path("genguard-out"),) if Path("genguard-out").is_dir() else ())
    reports: list[RepairReport] = [repair_output_folder(folder, min_age=min_age) for folder in folders]
    reports.append(remove_orphan_quarantine(store, QuarantineVault().folder, min_age=min_age))
    removed = [path for report in reports for path in report.removed]
    for path in removed:
        click.echo(f"removed {path}")
    for report in reports:
        for path in report.kept_recent:
            click.echo(f"kept {path} (newer than {min_age:g} s)")
        for path, reason in report.failed:
            click.echo(f"could not remove {path}: {reason}", err=True)
    if not removed:
        click.echo("nothing to remove")
