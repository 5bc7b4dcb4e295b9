"""`genguard report compliance`: the evidence a compliance officer hands to an auditor (genguard.audit.compliance).

pipeline/cli.py imports this module, which adds the command to the `report` group.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import click

from genguard.guard.errors import BadInputError
from genguard.pipeline.cli_common import db_option


def _moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadInputError(f"{option}: expected an ISO date or time (2026-11-01), found {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command("compliance")
@click.option("--since", default=None, help="Only generations at or after this ISO date/time.")
@click.option("--until", default=None, help="Only generations before this ISO date/time.")
@click.option("--tenant", default=None, help="Only actors '<tenant>' or '<tenant>/<user>' (default: all).")
@click.option(
    "--robustness", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Watermark bench record (bench/watermark.py --record; default: GENGUARD_HOME/bench/watermark-robustness.json).",
)  # fmt: skip
@click.option(
    "--detection-url",
    default=None,
    help="The detection interface's address (default: GENGUARD_DETECTION_URL).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of writing HTML.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write.",
)
@db_option
def report_compliance(
    since: str | None,
    until: str | None,
    tenant: str | None,
    robustness: Path | None,
    detection_url: str | None,
    as_json: bool,
    output: Path | None,
    db_url: str | None,
) -> None:
    """Images released in a period and how they were marked, signed, time-stamped and witnessed."""
    from genguard.audit.compliance import compliance_report, render_compliance_html
    from genguard.audit.store import AuditStore

    with AuditStore.open(db_url, read_only=True) as store:
        result = compliance_report(
            store,
            since=_moment(since, "--since"),
            until=_moment(until, "--until"),
            tenant=tenant,
            robustness_path=robustness,
            detection_url=detection_url,
        )
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=True, ensure_ascii=False))
        return
    target = output or Path("compliance-report.html")
    staging = target.with_name(f".{target.name}.tmp")
    staging.write_text(render_compliance_html(result), encoding="utf-8")
    os.replace(staging, target)
    click.echo(f"wrote {target}")
