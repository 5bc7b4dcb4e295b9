"""Evidence of compliance with the EU AI Act's marking duty (Art. 50(2)) and its Code of Practice.

`compliance_report` counts, for a period and a tenant, the images released and how each was marked:
pixel watermark, latent watermark, signed Content Credentials, RFC 3161 timestamp, and whether the
audit entry that records it is covered by a checkpoint that a quorum of witnesses cosigned. It
adds the watermark robustness figures of the installed version (from its own bench run:
`python bench/watermark.py --record FILE`, dated) and the address of the detection interface.
`render_compliance_html` makes the self-contained page a compliance officer hands to an auditor.

Tenants: a deployment serving several tenants names its actors "<tenant>/<user>" (or just
"<tenant>"); `tenant` keeps those generations. Without it the whole database is one tenant.
Read through the store's read API (`AuditStore.reader()`, one snapshot); nothing is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from html import escape
from importlib import metadata
from pathlib import Path
from typing import Any

from genguard.audit import chain
from genguard.audit.reader import AuditReader, ReportImage
from genguard.audit.store import AuditStore
from genguard.audit.witness import WITNESSED_EVENT
from genguard.guard.config import genguard_home
from genguard.guard.errors import BadInputError

ROBUSTNESS_FORMAT = "genguard/watermark-robustness/v1"
DETECTION_URL_ENV = "GENGUARD_DETECTION_URL"


def default_robustness_path() -> Path:
    """Where `bench/watermark.py --record` is meant to write the deployment's figures."""
    return genguard_home() / "bench" / "watermark-robustness.json"


@dataclass(frozen=True)
class RobustnessFigures:
    """One bench run: for each image side, the share of marks read back exactly after each attack."""

    genguard_version: str
    date: str  # ISO 8601, when the bench ran
    command: str
    trials: dict[str, int]  # side (px, as text) -> marked images tried
    exact_read: dict[str, dict[str, float]]  # side -> attack -> share read back exactly (0..1)
    psnr_min_db: dict[str, float]
    source: str  # the file it was read from


@dataclass(frozen=True)
class ComplianceReport:
    tenant: str | None
    since: datetime | None
    until: datetime | None
    generated_at: datetime
    genguard_version: str
    images_released: int
    pixel_marked: int
    latent_marked: int
    signed: int
    timestamped: int
    timestamp_skipped: int  # signed without a timestamp because an optional TSA was unreachable
    witnessed: int  # recorded in a log entry covered by a checkpoint a witness quorum cosigned
    witnessed_tree_size: int | None  # the largest such checkpoint
    witnesses: tuple[str, ...]  # who cosigned it
    robustness: RobustnessFigures | None
    robustness_note: str
    detection_url: str | None
    gaps: tuple[str, ...]  # what an auditor would find missing

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("since", "until", "generated_at"):
            value = getattr(self, name)
            data[name] = None if value is None else chain.format_time(value)
        data["format"] = "genguard/compliance-report/v1"
        return data


def installed_version() -> str:
    try:
        return metadata.version("genguard")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def read_robustness(path: Path) -> RobustnessFigures:
    """Read a bench record; BadInputError names the file and the field that is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BadInputError(f"{path}: expected a watermark robustness record (JSON), found {exc}") from None
    if not isinstance(data, dict) or data.get("format") != ROBUSTNESS_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise BadInputError(f"{path}: expected format {ROBUSTNESS_FORMAT!r}, found {found!r}")
    try:
        sizes = data["sizes"]
        return RobustnessFigures(
            genguard_version=str(data["genguard_version"]),
            date=str(data["date"]),
            command=str(data.get("command", "")),
            trials={str(side): int(s["trials"]) for side, s in sizes.items()},
            exact_read={
                str(side): {str(a): float(v) for a, v in s["exact_read"].items()} for side, s in sizes.items()
            },
            psnr_min_db={str(side): float(s["psnr_min_db"]) for side, s in sizes.items()},
            source=str(path),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadInputError(
            f"{path}: expected the fields of {ROBUSTNESS_FORMAT}, found a problem with {exc}"
        ) from None


def _witnessed(reader: AuditReader) -> tuple[int | None, tuple[str, ...]]:
    best: tuple[int | None, tuple[str, ...]] = (None, ())
    for event in reader.iter_events((WITNESSED_EVENT,)):
        payload = event.payload
        size = payload.get("tree_size")
        if (
            payload.get("quorum_met") is True
            and isinstance(size, int)
            and (best[0] is None or size > best[0])
        ):
            best = (size, tuple(str(w) for w in payload.get("witnesses", [])))
    return best


def compliance_report(
    store: AuditStore,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant: str | None = None,
    robustness_path: Path | None = None,
    detection_url: str | None = None,
) -> ComplianceReport:
    """Count what the log holds for images released in [since, until) by `tenant` (see module doc).

    `robustness_path`: the bench record (default: `default_robustness_path()`; a missing default
    file is a gap, a missing named file an error). `detection_url`: default GENGUARD_DETECTION_URL."""
    if since is not None and until is not None and until <= since:
        raise BadInputError(
            f"until: expected a time after since ({since.isoformat()}), found {until.isoformat()}"
        )
    if tenant is not None and (not isinstance(tenant, str) or not tenant or "/" in tenant):
        raise BadInputError(f"tenant: expected a name without '/', found {tenant!r}")
    released = pixel = latent = signed = stamped = skipped = witnessed = 0
    with store.reader().snapshot() as reader:
        witnessed_size, witnesses = _witnessed(reader)
        pending: list[ReportImage] = []  # images whose generations' last entries are still to be read

        def count_witnessed() -> int:
            if witnessed_size is None or not pending:
                return 0
            last = reader.last_event_seqs({image.generation.generation_id for image in pending})
            seqs = (last.get(image.generation.generation_id) for image in pending)
            return sum(seq is not None and seq <= witnessed_size for seq in seqs)

        for image in reader.report_images(
            status="released", since=since, until=until, tenant=tenant, extra_keys=("content_credentials",)
        ):
            released += 1
            pixel += image.pixel_marked
            latent += image.latent_marked
            signed += image.signed
            credentials = image.generation.extra.get("content_credentials", {})
            state = credentials.get("timestamps", {}).get(str(image.index))
            stamped += image.signed and state == "timestamped"
            skipped += image.signed and state == "skipped"
            pending.append(image)
            if len(pending) >= 1000:  # bounded memory
                witnessed += count_witnessed()
                pending.clear()
        witnessed += count_witnessed()

    version = installed_version()
    robustness, note = _robustness(robustness_path, version)
    url = detection_url if detection_url is not None else os.environ.get(DETECTION_URL_ENV) or None
    gaps = []
    if released and pixel < released:
        gaps.append(f"{released - pixel} released images carry no pixel watermark")
    if released and signed < released:
        gaps.append(f"{released - signed} released images carry no signed Content Credentials")
    if signed and stamped < signed:
        gaps.append(f"{signed - stamped} signed images carry no trusted timestamp")
    if released and witnessed < released:
        gaps.append(f"{released - witnessed} released images are not yet in a witnessed checkpoint")
    if robustness is None or note.startswith("from genguard"):
        gaps.append(f"watermark robustness: {note}")
    if url is None:
        gaps.append(f"no detection interface address configured ({DETECTION_URL_ENV})")
    return ComplianceReport(
        tenant=tenant,
        since=since,
        until=until,
        generated_at=datetime.now(UTC),
        genguard_version=version,
        images_released=released,
        pixel_marked=pixel,
        latent_marked=latent,
        signed=signed,
        timestamped=stamped,
        timestamp_skipped=skipped,
        witnessed=witnessed,
        witnessed_tree_size=witnessed_size,
        witnesses=witnesses,
        robustness=robustness,
        robustness_note=note,
        detection_url=url,
        gaps=tuple(gaps),
    )


def _robustness(path: Path | None, version: str) -> tuple[RobustnessFigures | None, str]:
    target = path if path is not None else default_robustness_path()
    if path is None and not target.exists():
        return None, f"no bench record at {target} (run: python bench/watermark.py --quick --record {target})"
    figures = read_robustness(target)
    if figures.genguard_version != version:
        return (
            figures,
            f"from genguard {figures.genguard_version}, not the installed {version}: run the bench again",
        )
    return figures, f"measured on the installed version {version} on {figures.date}"


# -------------------------------------------------------------------------------------------- HTML

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}.gap{color:#a00}.ok{color:#060}"
)


def _share(part: int, whole: int) -> str:
    return "—" if whole == 0 else f"{100 * part / whole:.1f}%"


def render_compliance_html(report: ComplianceReport) -> str:
    r = report
    scope = [
        f"generated {escape(chain.format_time(r.generated_at))}",
        f"genguard {escape(r.genguard_version)}",
    ]
    scope.append(f"tenant {escape(r.tenant)}" if r.tenant else "all tenants")
    if r.since is not None:
        scope.append(f"from {escape(chain.format_time(r.since))}")
    if r.until is not None:
        scope.append(f"until {escape(chain.format_time(r.until))}")
    rows = [
        ("Images released", r.images_released, "every image delivered to a user in the period"),
        ("Pixel watermark", r.pixel_marked, "imperceptible mark in the pixels, read by `genguard verify`"),
        ("Latent watermark", r.latent_marked, "mark in the initial noise of the diffusion (optional layer)"),
        ("Signed Content Credentials", r.signed, "C2PA manifest: AI-generated, c2pa.watermarked.bound"),
        ("Trusted timestamp", r.timestamped, "RFC 3161 timestamp in the manifest's signature"),
        (
            "Signed without timestamp (TSA optional)",
            r.timestamp_skipped,
            "the configured TSA could not be reached",
        ),
        ("Witnessed log", r.witnessed, "recorded in a checkpoint cosigned by a quorum of witnesses"),
    ]
    table = "".join(
        f"<tr><td>{escape(name)}</td><td class=n>{count}</td>"
        f"<td class=n>{_share(count, r.images_released)}</td><td>{escape(what)}</td></tr>"
        for name, count, what in rows
    )
    body = [
        "<h1>Marking and provenance of AI-generated images</h1>",
        f"<p>{'; '.join(scope)}.</p>",
        "<h2>Images and their marks</h2>",
        f"<table><tr><th>What</th><th>Images</th><th>Share</th><th>Meaning</th></tr>{table}</table>",
    ]
    if r.witnessed_tree_size is not None:
        body.append(
            f"<p>Latest witnessed checkpoint: entries 1..{r.witnessed_tree_size}, cosigned by "
            f"{escape(', '.join(r.witnesses))}.</p>"
        )
    body.append("<h2>Watermark robustness</h2>")
    body.append(f"<p>{escape(r.robustness_note)}.</p>")
    if r.robustness is not None:
        figures = r.robustness
        attacks = sorted({a for side in figures.exact_read.values() for a in side})
        head = "".join(f"<th>{escape(side)} px</th>" for side in figures.exact_read)
        lines = "".join(
            f"<tr><td>{escape(a)}</td>"
            + "".join(
                f"<td class=n>{_pct(figures.exact_read[side].get(a))}</td>" for side in figures.exact_read
            )
            + "</tr>"
            for a in attacks
        )
        trials = ", ".join(f"{side} px: {n}" for side, n in figures.trials.items())
        body.append(
            f"<p>Share of marks read back exactly after each attack (bench run {escape(figures.date)}, "
            f"genguard {escape(figures.genguard_version)}, trials {escape(trials)}; "
            f"<code>{escape(figures.command)}</code>).</p>"
            f"<table><tr><th>Attack</th>{head}</tr>{lines}</table>"
        )
    body.append("<h2>Detection interface</h2>")
    body.append(
        f"<p>{escape(r.detection_url)}</p>" if r.detection_url else "<p class=gap>Not configured.</p>"
    )
    body.append("<h2>Findings</h2>")
    if r.gaps:
        body.append("<ul>" + "".join(f"<li class=gap>{escape(g)}</li>" for g in r.gaps) + "</ul>")
    else:
        body.append(
            "<p class=ok>No gaps: every released image is marked, signed, time-stamped and witnessed.</p>"
        )
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        "<title>Compliance report</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"
