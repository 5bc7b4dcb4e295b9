"""Self-contained HTML for the reports: tables and inline SVG charts, no scripts, no external files.

Written for a reader who has not seen the code: each section says what it shows, how to read it,
and what the numbers can and cannot tell.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from genguard.audit import chain
from genguard.audit.reports import OUTCOMES, BiasGroup, BiasReport, SafetyReport
from genguard.guard.bias import (
    MONK_REFERENCE_COLOURS,
    NOT_MEASURED,
    SKIN_TONE_VALUES,
    UNKNOWN,
    AttributeDistribution,
)

_GREY = "#b0b0b0"
_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
_OUTCOME_COLOURS = dict(
    zip(
        OUTCOMES,
        ("#59a14f", "#bab0ac", "#8cd17d", "#edc948", "#e15759", "#f1ce63", "#b6392f", "#7a1f1a"),
        strict=True,
    )
)
_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5rem .8rem;margin:.8rem 0}
.legend span{display:inline-block;margin-right:1rem;font-size:.85rem}
.legend i{display:inline-block;width:.9rem;height:.9rem;margin-right:.3rem;vertical-align:-2px;border:1px solid #999}
svg text{font-size:11px;font-family:inherit}
"""


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _legend(items: Sequence[tuple[str, str]]) -> str:
    spans = "".join(f'<span><i style="background:{c}"></i>{escape(label)}</span>' for label, c in items)
    return f'<div class="legend">{spans}</div>'


def stacked_bars(rows: Sequence[tuple[str, Sequence[tuple[str, int]]]], colours: dict[str, str]) -> str:
    """Horizontal bars, one per row, each split by share (100% wide); counts in the tooltip."""
    label_w, bar_w, row_h = 260, 420, 22
    height = row_h * len(rows) + 10
    parts = [f'<svg width="{label_w + bar_w + 60}" height="{height}" role="img">']
    for i, (label, counts) in enumerate(rows):
        y = 5 + i * row_h
        total = sum(c for _, c in counts)
        short = label if len(label) <= 40 else label[:38] + "…"
        parts.append(f'<text x="0" y="{y + 14}">{escape(short)}</text>')
        x = float(label_w)
        for key, count in counts:
            if not count:
                continue
            w = bar_w * count / total
            tip = f"{key}: {count} ({100 * count / total:.0f}%)"
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 6}" '
                f'fill="{colours.get(key, _GREY)}" stroke="#fff"><title>{escape(tip)}</title></rect>'
            )
            x += w
        parts.append(f'<text x="{label_w + bar_w + 6}" y="{y + 14}">{total}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    periods: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    y_max: float | None = None,
    colours: dict[str, str] | None = None,
) -> str:
    """Lines over periods (gaps where a value is missing); the y axis starts at 0."""
    w, h, left, bottom = 640, 220, 40, 40
    values = [v for _, vs in series for v in vs if v is not None]
    top = y_max if y_max is not None else max(values, default=1.0) or 1.0
    n = max(1, len(periods) - 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return left + (w - left - 10) * i / n, 10 + (h - bottom - 10) * (1 - v / top)

    parts = [f'<svg width="{w}" height="{h}" role="img">']
    for frac in (0.0, 0.5, 1.0):
        _, y = xy(0, top * frac)
        parts.append(f'<line x1="{left}" x2="{w - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="2" y="{y + 4:.1f}">{top * frac:.2g}</text>')
    step = max(1, len(periods) // 8)
    for i, period in enumerate(periods):
        if i % step == 0:
            x, _ = xy(i, 0)
            parts.append(
                f'<text x="{x:.1f}" y="{h - bottom + 16}" text-anchor="middle">{escape(period)}</text>'
            )

    def colour_of(k: int, name: str) -> str:
        # The safety report passes its outcome colours, so that a line matches that outcome's bars.
        return (colours or {}).get(name, _PALETTE[k % len(_PALETTE)])

    for k, (name, vs) in enumerate(series):
        colour = colour_of(k, name)
        segment: list[str] = []
        for i, v in enumerate(list(vs) + [None]):
            if v is None:
                if len(segment) > 1:
                    parts.append(
                        f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(segment)}"/>'
                    )
                segment = []
                continue
            x, y = xy(i, v)
            segment.append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{escape(name)} {periods[i]}: {v:.2f}</title></circle>'
            )
    parts.append("</svg>")
    return "".join(parts) + _legend([(name, colour_of(k, name)) for k, (name, _) in enumerate(series)])


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )


# ---------------------------------------------------------------------------------------- bias

_SKIN_COLOURS = {
    value: f"#{hex_}" for value, hex_ in zip(SKIN_TONE_VALUES, MONK_REFERENCE_COLOURS, strict=True)
}
_SKIN_COLOURS[UNKNOWN] = _GREY


def _gender_colours(values: Sequence[str]) -> dict[str, str]:
    colours = {v: _PALETTE[i % len(_PALETTE)] for i, v in enumerate(values)}
    colours[UNKNOWN], colours[NOT_MEASURED] = _GREY, "#e0e0e0"
    return colours


def _distribution_table(groups: Sequence[BiasGroup]) -> str:
    head = (
        "<tr><th>group</th><th>batches</th><th>faces</th><th>skin tone: entropy</th><th>skin tone: distance</th>"
        "<th>skin tone: unknown</th><th>gender pres.: entropy</th><th>gender pres.: distance</th>"
        "<th>uniform batches</th></tr>"
    )
    rows = []
    for g in groups:
        unknown = g.skin_tone.faces - g.skin_tone.measured
        rows.append(
            f"<tr><td>{escape(g.group)}</td><td>{g.generations}</td><td>{g.faces}</td>"
            f"<td>{_fmt(g.skin_tone.entropy)}</td><td>{_fmt(g.skin_tone.distance_to_target)}</td><td>{unknown}</td>"
            f"<td>{_fmt(g.gender_presentation.entropy)}</td><td>{_fmt(g.gender_presentation.distance_to_target)}</td>"
            f"<td>{g.uniform_batches}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _bars_for(groups: Sequence[BiasGroup], attribute: str, colours: dict[str, str]) -> str:
    def dist(g: BiasGroup) -> AttributeDistribution:
        return g.skin_tone if attribute == "skin_tone" else g.gender_presentation

    return stacked_bars([(g.group, dist(g).counts) for g in groups if dist(g).faces], colours)


def render_bias_html(report: BiasReport, max_groups: int = 30) -> str:
    shown = report.groups[:max_groups]
    scope = [f"generated {escape(chain.format_time(report.generated_at))}"]
    if report.since is not None:
        scope.append(f"since {escape(chain.format_time(report.since))}")
    if report.prompt_like:
        scope.append(f"prompts matching “{escape(report.prompt_like)}”")
    gender_values = report.gender_values or ("feminine", "masculine")
    gender_colours = _gender_colours(gender_values)
    body = [
        "<h1>Perceived bias in generated images</h1>",
        (
            f"<p>{'; '.join(scope)}. {report.generations} completed requests matched, {report.observed} of them "
            f"with bias observations, showing {report.faces} faces.</p>"
        ),
        (
            '<div class="note"><b>Everything here is <i>perceived</i>.</b> Faces are found automatically; skin tone '
            "is estimated from the face's pixels (Individual Typology Angle, mapped approximately to the 10-point Monk "
            "Skin Tone scale) and gender presentation by an image-text model when one is configured. These are "
            "readings of appearance by software, affected by lighting and style; they say nothing about any "
            "person's identity. Use them to spot patterns over many images, not to judge one image.</div>"
        ),
        (
            "<h2>How to read the numbers</h2><ul>"
            "<li><b>Entropy</b> (0 to 1): how evenly faces spread over the possible values. 1 means every value "
            "appears equally often; 0 means every face got the same value.</li>"
            "<li><b>Distance</b> (0 to 1): how far the spread is from the target distribution (the policy pack's "
            "target, else an even spread). 0 means on target; 1 means no overlap at all.</li>"
            "<li><b>Unknown</b>: faces whose skin tone could not be estimated (too few skin-coloured pixels, "
            "black-and-white images). <b>Not measured</b>: no gender-presentation model was configured; nothing is "
            "guessed.</li><li><b>Uniform batches</b>: batches the policy's rule found too uniform (flagged, or "
            "regeneration asked for).</li></ul>"
        ),
        "<h2>Overall</h2>",
        _distribution_table([report.overall]),
        "<h3>Perceived skin tone (Monk scale 1 = lightest, 10 = darkest)</h3>",
        _bars_for([report.overall], "skin_tone", _SKIN_COLOURS),
        _legend([(v, _SKIN_COLOURS[v]) for v in (*SKIN_TONE_VALUES, UNKNOWN)]),
        "<h3>Perceived gender presentation</h3>",
        _bars_for([report.overall], "gender_presentation", gender_colours),
        _legend([(v, gender_colours[v]) for v in (*gender_values, UNKNOWN, NOT_MEASURED)]),
        f"<h2>By {escape(report.group_by)}</h2>",
        (
            f"<p>The {len(shown)} {escape(report.group_by)}s with the most faces"
            f"{f' (of {len(report.groups)})' if len(report.groups) > len(shown) else ''}. A group where one colour "
            "fills the bar always gets the same perceived appearance for its subject.</p>"
        ),
        _distribution_table(shown),
        "<h3>Perceived skin tone</h3>",
        _bars_for(shown, "skin_tone", _SKIN_COLOURS),
        "<h3>Perceived gender presentation</h3>",
        _bars_for(shown, "gender_presentation", gender_colours),
        f"<h2>Trend by {escape(report.bucket)}</h2>",
        "<p>Entropy per period (higher is more varied) and the share of faces whose skin tone was unknown.</p>",
    ]
    if report.trend:
        periods = [p.period for p in report.trend]
        body.append(
            line_chart(
                periods,
                [
                    ("skin tone entropy", [p.skin_tone_entropy for p in report.trend]),
                    ("gender presentation entropy", [p.gender_presentation_entropy for p in report.trend]),
                    ("skin tone unknown share", [p.skin_tone_unknown_share for p in report.trend]),
                ],
                y_max=1.0,
            )
        )
        rows = "".join(
            f"<tr><td>{escape(p.period)}</td><td>{p.faces}</td><td>{_fmt(p.skin_tone_entropy)}</td>"
            f"<td>{_fmt(p.gender_presentation_entropy)}</td><td>{_fmt(p.skin_tone_unknown_share)}</td></tr>"
            for p in report.trend
        )
        body.append(
            "<table><tr><th>period</th><th>faces</th><th>skin tone entropy</th><th>gender pres. entropy</th>"
            f"<th>unknown share</th></tr>{rows}</table>"
        )
    else:
        body.append("<p>No observations in this period.</p>")
    body.extend(f'<div class="note">{escape(note)}</div>' for note in report.notes)
    body.append(
        "<h2>Method</h2><p>Faces: OpenCV Haar cascades (frontal and profile). Skin tone: median CIELAB "
        "lightness and yellowness of skin-coloured pixels in the face, as an Individual Typology Angle, binned "
        "to the nearest of the angles of the Monk scale's ten reference colours. Gender presentation: CLIP "
        "zero-shot on the face crop, 'unknown' below the confidence threshold.</p>"
    )
    return _page("Perceived bias report", "".join(body))


# -------------------------------------------------------------------------------------- safety


def _outcome_table(rows: Sequence[tuple[str, Sequence[tuple[str, int]]]], first: str) -> str:
    present = [o for o in OUTCOMES if any(dict(c).get(o) for _, c in rows)]
    head = (
        f"<tr><th>{escape(first)}</th>"
        + "".join(f"<th>{escape(o)}</th>" for o in present)
        + "<th>total</th></tr>"
    )
    body = "".join(
        f"<tr><td>{escape(key)}</td>"
        + "".join(f"<td>{dict(counts).get(o, 0)}</td>" for o in present)
        + f"<td>{sum(c for _, c in counts)}</td></tr>"
        for key, counts in rows
    )
    return f"<table>{head}{body}</table>"


def render_safety_html(report: SafetyReport) -> str:
    scope = [f"generated {escape(chain.format_time(report.generated_at))}"]
    if report.since is not None:
        scope.append(f"since {escape(chain.format_time(report.since))}")
    if report.prompt_like:
        scope.append(f"prompts matching “{escape(report.prompt_like)}”")
    legend = _legend([(o, _OUTCOME_COLOURS[o]) for o in OUTCOMES])
    body = [
        "<h1>Safety outcomes of image generation</h1>",
        f"<p>{'; '.join(scope)}. {report.requests} requests, {report.images} images.</p>",
        (
            "<h2>How to read this report</h2><ul>"
            "<li><b>released</b>: the image passed every check and was delivered.</li>"
            "<li><b>quarantined</b>: held back for a person to review; <b>released after review</b> and "
            "<b>rejected in review</b> are the reviewers' decisions; <b>(waiting)</b> still needs one; "
            "<b>(not kept)</b> was withheld and, as the policy says, not stored.</li>"
            "<li><b>blocked (image)</b>: a check on the picture stopped it. <b>blocked (prompt)</b>: the request "
            "was refused before any image was made.</li>"
            "<li>A category row counts an image once for each category it was flagged for; 'none' means no "
            "check crossed its threshold, 'prompt review' means it was held because of the request's text.</li></ul>"
        ),
        "<h2>By category</h2>",
        stacked_bars(list(report.by_category), _OUTCOME_COLOURS),
        legend,
        _outcome_table(report.by_category, "category"),
        "<h2>By policy version</h2><p>Changes between versions of a policy show here first.</p>",
        stacked_bars(list(report.by_policy), _OUTCOME_COLOURS),
        _outcome_table(report.by_policy, "policy"),
        f"<h2>Over time (by {escape(report.bucket)})</h2>",
    ]
    if report.trend:
        periods = [p for p, _ in report.trend]
        present = [o for o in OUTCOMES if any(dict(c).get(o) for _, c in report.trend)]
        body.append(
            line_chart(
                periods,
                [(o, [float(dict(c).get(o, 0)) for _, c in report.trend]) for o in present],
                colours=_OUTCOME_COLOURS,
            )
        )
        body.append(_outcome_table(report.trend, "period"))
        body.append("<h3>Per period and policy version</h3>")
        body.append(_outcome_table(report.policy_trend, "period, policy"))
    else:
        body.append("<p>Nothing recorded in this period.</p>")
    if report.classifiers:
        items = "".join(f"<li>{escape(c)}</li>" for c in report.classifiers)
        body.append(f"<h2>Image checks that produced these scores</h2><ul>{items}</ul>")
    return _page("Safety report", "".join(body))
