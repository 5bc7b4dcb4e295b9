"""`genguard review` (the quarantine queue) and `genguard report` (bias and safety reports).

pipeline/cli.py registers both groups. Only light modules at load: no torch, no diffusers.
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from genguard.guard.errors import BadInputError
from genguard.pipeline.cli_common import db_option as _db_option
from genguard.pipeline.cli_common import open_reader, read_db_options
from genguard.pipeline.cli_common import open_store as _store


def _default_reviewer() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return ""


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, sort_keys=True, indent=2))


# -- review ----------------------------------------------------------------------------------------


@click.group()
def review() -> None:
    """Quarantined images waiting for a person: list, show, approve, reject."""


@review.command("list")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def review_list(db_url: str | None, as_json: bool) -> None:
    """Images waiting for review, oldest first."""
    from genguard.audit.review import review_queue

    with _store(db_url) as store:
        items = review_queue(store)
    if as_json:
        _echo_json([item.to_json() for item in items])
        return
    if not items:
        click.echo("no images waiting for review")
        return
    for item in items:
        flagged = ", ".join(f"{c}>={t:g}" for c, t in item.flagged) or "prompt held for review"
        kept = "" if item.kept else "  (not kept: cannot be released)"
        click.echo(f"{item.review_id}  {item.created_at:%Y-%m-%d %H:%M}  {item.policy}  {flagged}{kept}")


@review.command("show")
@click.argument("review_id")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--image",
    "image_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also decrypt the kept image to this PNG (or folder); recorded as a chained event.",
)
@click.option("--reviewer", default=None, help="Who looks (default: $USER); recorded with --image.")
def review_show(
    review_id: str, db_url: str | None, as_json: bool, image_path: Path | None, reviewer: str | None
) -> None:
    """One quarantined image: prompt (when stored), the prompt rules that fired, the output checks'
    categories and scores, flags and any decision; with --image, the decrypted (unmarked) pixels."""
    from genguard.audit.review import export_image, show

    with _store(db_url) as store:
        item = show(store, review_id)
        detail = store.get_generation(item.generation_id, with_events=False)
        written = (
            export_image(store, review_id, image_path, reviewer or _default_reviewer())
            if image_path is not None
            else None
        )
    held_by = (  # the prompt categories whose review action held the image
        [c for c in detail.decision.categories if c.action.value == "review"]
        if detail is not None and detail.decision.action.value == "review"
        else []
    )
    rules = detail.decision.rules if detail is not None else ()
    data = item.to_json()
    data["held_by"] = [{"category": c.category, "score": c.score} for c in held_by]
    data["prompt_rules"] = [
        {"category": r.category, "layer": r.layer, "rule": r.rule, "score": r.score} for r in rules
    ]
    data["image"] = str(written) if written is not None else None
    if as_json:
        _echo_json(data)
        return
    click.echo(f"review id:  {item.review_id}")
    click.echo(f"created:    {data['created_at']}  by {item.actor}")
    click.echo(f"policy:     {item.policy}")
    click.echo(f"prompt:     {item.prompt if item.prompt is not None else '(stored hashed or redacted)'}")
    for rule in rules:
        click.echo(f"rule:       {rule.category}/{rule.layer}/{rule.rule} ({rule.score:.2f})")
    click.echo(f"kept:       {'encrypted copy available' if item.kept else 'no copy kept'}")
    for held in held_by:
        click.echo(f"held by:    prompt review, {held.category} (score {held.score:.3f})")
    for score in item.scores:
        click.echo(
            f"score:      {score.category:<24} {score.score:.3f}  {score.classifier} ({score.model_id})"
        )
    for category, threshold in item.flagged:
        click.echo(f"flagged:    {category} (threshold {threshold:g})")
    if not item.flagged:
        click.echo("flagged:    nothing (the prompt was held for review)")
    if written is not None:
        click.echo(f"image:      {written} (decrypted, unmarked; recorded)")
    if item.decision is None:
        click.echo("decision:   waiting")
    else:
        d = item.decision
        click.echo(
            f"decision:   {d.decision} by {d.reviewer} at {data['decision']['decided_at']}: {d.reason}"
        )


@review.command("approve")
@click.argument("review_id")
@_db_option
@click.option("--reviewer", default=None, help="Who decides (default: $USER).")
@click.option("--reason", default="", help="Why (recorded).")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True
)
def review_approve(
    review_id: str, db_url: str | None, reviewer: str | None, reason: str, out_dir: Path
) -> None:
    """Release the image: watermark it, record the decision, then write the PNG into --out."""
    from genguard.audit.review import approve

    with _store(db_url) as store:
        outcome = approve(
            store, review_id, reviewer=reviewer or _default_reviewer(), reason=reason, out_dir=out_dir
        )
    click.echo(
        f"approved {review_id} by {outcome.decision.reviewer} (event {outcome.decision.seq}): {outcome.decision.path}"
    )


@review.command("reject")
@click.argument("review_id")
@_db_option
@click.option("--reviewer", default=None, help="Who decides (default: $USER).")
@click.option("--reason", required=True, help="Why (required, recorded).")
def review_reject(review_id: str, db_url: str | None, reviewer: str | None, reason: str) -> None:
    """Reject the image; its encrypted copy is deleted after the decision is recorded."""
    from genguard.audit.review import reject

    with _store(db_url) as store:
        outcome = reject(store, review_id, reviewer=reviewer or _default_reviewer(), reason=reason)
    click.echo(f"rejected {review_id} by {outcome.decision.reviewer} (event {outcome.decision.seq})")


# -- report ----------------------------------------------------------------------------------------


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadInputError(f"--since: expected an ISO date or time (2026-11-01), found {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _report_options(func: Any) -> Any:
    func = click.option("--since", default=None, help="Only generations at or after this ISO date/time.")(
        func
    )
    func = click.option(
        "--prompt-like", default=None, help="Only prompts containing this text (SQL LIKE with %)."
    )(func)
    func = click.option(
        "--bucket", type=click.Choice(["day", "week", "month"]), default="day", show_default=True
    )(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of writing HTML.")(func)
    func = click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="HTML file to write.",
    )(func)
    return read_db_options(func)


def _emit(
    html_text: str, data: dict[str, Any], as_json: bool, output: Path | None, default_name: str
) -> None:
    if as_json:
        _echo_json(data)
        return
    target = output or Path(default_name)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(html_text, encoding="utf-8")
    os.replace(tmp, target)
    click.echo(f"wrote {target}")


@click.group()
def report() -> None:
    """Reports over the audit history, as HTML (default) or JSON."""


@report.command("bias")
@_report_options
@click.option("--group-by", type=click.Choice(["prompt", "occupation"]), default="prompt", show_default=True)
def report_bias(
    db_url: str | None,
    since: str | None,
    prompt_like: str | None,
    bucket: str,
    as_json: bool,
    output: Path | None,
    group_by: str,
    read_only: bool,
) -> None:
    """Perceived skin tone and gender presentation per prompt or occupation, entropy and trend."""
    from genguard.audit.report_html import render_bias_html
    from genguard.audit.reports import bias_report

    with open_reader(db_url, read_only) as store:
        result = bias_report(
            store,
            since=_parse_since(since),
            prompt_like=prompt_like,
            group_by=group_by,  # type: ignore[arg-type]
            bucket=bucket,  # type: ignore[arg-type]
        )
    _emit(render_bias_html(result), result.to_json(), as_json, output, "bias-report.html")


@report.command("safety")
@_report_options
def report_safety(
    db_url: str | None,
    since: str | None,
    prompt_like: str | None,
    bucket: str,
    as_json: bool,
    output: Path | None,
    read_only: bool,
) -> None:
    """Released, quarantined and blocked by category, by policy version and over time."""
    from genguard.audit.report_html import render_safety_html
    from genguard.audit.reports import safety_report

    with open_reader(db_url, read_only) as store:
        result = safety_report(store, since=_parse_since(since), prompt_like=prompt_like, bucket=bucket)  # type: ignore[arg-type]
    _emit(render_safety_html(result), result.to_json(), as_json, output, "safety-report.html")
