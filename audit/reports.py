"""Reports over the audit history: perceived bias and safety outcomes, as typed values, JSON and HTML.

`bias_report`: perceived skin tone (Monk scale, approximate) and perceived gender presentation of
the faces in generated images, per prompt or per occupation named in the prompt, with normalised
entropy, distance to a target distribution and the trend over time. It reads the batch statistics
the pipeline records in each generation's `extra["bias"]`.

`safety_report`: images released, quarantined and blocked by category, by policy version and over
time, with requests blocked at the prompt and the outcome of human review. A released image whose file
was never written (a `release.failed` event after the commit) counts as "not released (write failed)".

Both read through the store's read API (`AuditStore.reader()`: streamed, one snapshot);
`render_bias_html` / `render_safety_html` make a self-contained HTML file (inline SVG charts, no
scripts, no network) that a compliance officer can read on its own.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from genguard.audit import chain
from genguard.audit.records import RELEASE_FAILED_EVENT
from genguard.audit.review import APPROVED, REJECTED
from genguard.audit.store import AuditStore
from genguard.guard.bias import (
    NOT_MEASURED,
    SKIN_TONE_VALUES,
    UNKNOWN,
    AttributeDistribution,
    distribution_from_counts,
)
from genguard.guard.errors import BadInputError
from genguard.guard.types import PromptAction

GroupBy = Literal["prompt", "occupation"]
Bucket = Literal["day", "week", "month"]

# Occupations looked for in prompts (word boundaries, singular or plural), for `group_by="occupation"`.
OCCUPATIONS: tuple[str, ...] = (
    "accountant", "architect", "artist", "astronaut", "baker", "cashier", "ceo", "chef", "cleaner",
    "construction worker", "dancer", "dentist", "designer", "doctor", "driver", "electrician", "engineer",
    "farmer", "firefighter", "flight attendant", "janitor", "journalist", "judge", "lawyer", "librarian",
    "manager", "mechanic", "musician", "nurse", "pharmacist", "pilot", "plumber", "police officer",
    "politician", "professor", "programmer", "receptionist", "scientist", "secretary", "singer",
    "software developer", "soldier", "surgeon", "teacher", "waiter", "writer",
)  # fmt: skip
NO_OCCUPATION = "(no occupation named)"
_OCCUPATION_RE = re.compile(
    r"\b(" + "|".join(re.escape(o) for o in sorted(OCCUPATIONS, key=len, reverse=True)) + r")(?:e?s)?\b"
)
_ATTRIBUTES = ("skin_tone", "gender_presentation")


def _aware(since: datetime | None) -> datetime | None:
    """A naive time is read as UTC."""
    return since.replace(tzinfo=UTC) if since is not None and since.tzinfo is None else since


def _like_pattern(prompt_like: str | None) -> str | None:
    """SQL LIKE as given when it has wildcards; plain text matches anywhere."""
    if not prompt_like:
        return None
    return prompt_like if "%" in prompt_like or "_" in prompt_like else f"%{prompt_like}%"


def _check_bucket(bucket: str) -> None:
    if bucket not in ("day", "week", "month"):
        raise BadInputError(f"bucket: expected 'day', 'week' or 'month', found {bucket!r}")


def _bucket(created_at: datetime, bucket: Bucket) -> str:
    """The period a recorded time (UTC) falls in: 2026-11-26, 2026-W48 or 2026-11."""
    if bucket == "day":
        return f"{created_at.year:04d}-{created_at.month:02d}-{created_at.day:02d}"
    if bucket == "month":
        return f"{created_at.year:04d}-{created_at.month:02d}"
    year, week, _ = created_at.date().isocalendar()
    return f"{year}-W{week:02d}"


def occupation_of(prompt: str | None) -> str:
    """The first occupation the prompt names, or NO_OCCUPATION."""
    if not prompt:
        return NO_OCCUPATION
    match = _OCCUPATION_RE.search(prompt.lower())
    return match.group(1) if match else NO_OCCUPATION


# ---------------------------------------------------------------------------------------- bias


@dataclass(frozen=True)
class BiasGroup:
    """One prompt (or occupation): how many batches and faces, and each attribute's distribution."""

    group: str
    generations: int
    faces: int
    skin_tone: AttributeDistribution
    gender_presentation: AttributeDistribution
    uniform_batches: int


@dataclass(frozen=True)
class BiasTrendPoint:
    period: str
    faces: int
    skin_tone_entropy: float | None
    gender_presentation_entropy: float | None
    skin_tone_unknown_share: float | None


@dataclass(frozen=True)
class BiasReport:
    generated_at: datetime
    since: datetime | None
    prompt_like: str | None
    group_by: GroupBy
    bucket: Bucket
    generations: int  # completed generations matched
    observed: int  # of which carried bias observations
    faces: int
    overall: BiasGroup
    groups: tuple[BiasGroup, ...]
    trend: tuple[BiasTrendPoint, ...]
    gender_values: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        data = _jsonable(asdict(self))
        data["label"] = "perceived"
        return data  # type: ignore[no-any-return]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return chain.format_time(value)
    if isinstance(value, dict):
        if "counts" in value and "attribute" in value:
            value = {**value, "counts": dict(value["counts"])}
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class _Tally:
    """Summed counts for one group while the rows stream past."""

    __slots__ = ("gender", "generations", "skin", "uniform")

    def __init__(self) -> None:
        self.generations = 0
        self.uniform = 0
        self.skin: Counter[str] = Counter()
        self.gender: Counter[str] = Counter()

    def add(self, bias: Mapping[str, Any]) -> None:
        self.generations += 1
        self.skin.update(bias["skin_tone"]["counts"])
        self.gender.update(bias["gender_presentation"]["counts"])
        if bias.get("uniform"):
            self.uniform += 1


def bias_report(
    store: AuditStore,
    *,
    since: datetime | None = None,
    prompt_like: str | None = None,
    group_by: GroupBy = "prompt",
    bucket: Bucket = "day",
    targets: Mapping[str, Mapping[str, float]] | None = None,
    tenant: str | None = None,
) -> BiasReport:
    """Perceived bias over completed generations created at or after `since` whose stored prompt
    matches `prompt_like` (SQL LIKE; without % it matches anywhere in the prompt, any case); with
    `tenant`, only that tenant's (actors "<tenant>" and "<tenant>/...").

    `targets`: per attribute a target distribution (as in a pack's `bias.targets`); default uniform.
    Prompts stored hashed or redacted are grouped by their digest and cannot match `prompt_like`.
    """
    if group_by not in ("prompt", "occupation"):
        raise BadInputError(f"group_by: expected 'prompt' or 'occupation', found {group_by!r}")
    _check_bucket(bucket)
    overall = _Tally()
    groups: defaultdict[str, _Tally] = defaultdict(_Tally)
    periods: defaultdict[str, _Tally] = defaultdict(_Tally)
    matched = 0
    for generation in store.reader().report_generations(
        status="completed",
        since=_aware(since),
        prompt_like=_like_pattern(prompt_like),
        tenant=tenant,
        extra_keys=("bias",),
    ):
        matched += 1
        bias = generation.extra.get("bias")
        if not bias:
            continue
        prompt = generation.prompt
        if group_by == "occupation":
            key = occupation_of(prompt.text)
        else:
            key = prompt.text if prompt.text is not None else f"(hashed prompt {str(prompt.digest)[:12]})"
        overall.add(bias)
        groups[key].add(bias)
        periods[_bucket(generation.created_at, bucket)].add(bias)
    gender_values = tuple(sorted(k for k in overall.gender if k not in (UNKNOWN, NOT_MEASURED)))
    wanted = targets or {}

    def summarise(name: str, tally: _Tally) -> BiasGroup:
        skin = distribution_from_counts("skin_tone", tally.skin, SKIN_TONE_VALUES, wanted.get("skin_tone"))
        gender = distribution_from_counts(
            "gender_presentation",
            tally.gender,
            _gender_possible(gender_values),
            wanted.get("gender_presentation"),
        )
        return BiasGroup(name, tally.generations, skin.faces, skin, gender, tally.uniform)

    summary = summarise("all", overall)
    trend = []
    for period in sorted(periods):
        point = summarise(period, periods[period])
        trend.append(
            BiasTrendPoint(
                period=period,
                faces=point.faces,
                skin_tone_entropy=point.skin_tone.entropy,
                gender_presentation_entropy=point.gender_presentation.entropy,
                skin_tone_unknown_share=(point.skin_tone.faces - point.skin_tone.measured) / point.faces
                if point.faces
                else None,
            )
        )
    ordered = sorted((summarise(k, t) for k, t in groups.items()), key=lambda g: (-g.faces, g.group))
    notes = []
    if NOT_MEASURED in overall.gender:
        notes.append(
            "Perceived gender presentation was not measured for some faces: no model was configured "
            "(the pack's bias.gender_model). Those faces are counted as 'not_measured', never guessed."
        )
    return BiasReport(
        generated_at=datetime.now(UTC),
        since=since,
        prompt_like=prompt_like,
        group_by=group_by,
        bucket=bucket,
        generations=matched,
        observed=overall.generations,
        faces=summary.faces,
        overall=summary,
        groups=tuple(ordered),
        trend=tuple(trend),
        gender_values=gender_values,
        notes=tuple(notes),
    )


def _gender_possible(observed: Sequence[str]) -> tuple[str, ...]:
    """The values gender presentation can take: those observed, at least two (binary labels by default)."""
    return tuple(observed) if len(observed) >= 2 else tuple(sorted({*observed, "feminine", "masculine"}))


# -------------------------------------------------------------------------------------- safety

OUTCOMES = (
    "released",
    "not released (write failed)",
    "released after review",
    "quarantined (waiting)",
    "rejected in review",
    "quarantined (not kept)",
    "blocked (image)",
    "blocked (prompt)",
)


@dataclass(frozen=True)
class SafetyReport:
    generated_at: datetime
    since: datetime | None
    prompt_like: str | None
    bucket: Bucket
    requests: int
    images: int
    by_category: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]  # category -> outcome counts
    by_policy: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]  # "name version" -> outcome counts
    trend: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]  # period -> outcome counts
    policy_trend: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]  # "period, policy" -> outcome counts
    classifiers: tuple[str, ...]  # the classifier models whose scores were recorded

    def to_json(self) -> dict[str, Any]:
        def table(rows: Iterable[tuple[str, tuple[tuple[str, int], ...]]]) -> dict[str, dict[str, int]]:
            return {key: dict(counts) for key, counts in rows}

        return {
            "generated_at": chain.format_time(self.generated_at),
            "since": None if self.since is None else chain.format_time(self.since),
            "prompt_like": self.prompt_like,
            "bucket": self.bucket,
            "requests": self.requests,
            "images": self.images,
            "by_category": table(self.by_category),
            "by_policy": table(self.by_policy),
            "trend": table(self.trend),
            "policy_trend": table(self.policy_trend),
            "classifiers": list(self.classifiers),
        }


def _ordered_counts(counter: Counter[str]) -> tuple[tuple[str, int], ...]:
    return tuple((o, counter[o]) for o in OUTCOMES if counter.get(o))


def safety_report(
    store: AuditStore,
    *,
    since: datetime | None = None,
    prompt_like: str | None = None,
    bucket: Bucket = "day",
    tenant: str | None = None,
) -> SafetyReport:
    """Outcomes by category, by policy version and over time; with `tenant`, only that tenant's
    generations (actors "<tenant>" and "<tenant>/...").

    An image counts once per category its verdict flagged ("none" when nothing crossed a threshold;
    an image held only because the prompt asked for review counts under the categories the prompt check
    held it for, "prompt review" when it names none). A request
    blocked at the prompt counts once per category the decision blocked.
    """
    _check_bucket(bucket)
    filters: dict[str, Any] = {
        "since": _aware(since),
        "prompt_like": _like_pattern(prompt_like),
        "tenant": tenant,
    }
    by_category: defaultdict[str, Counter[str]] = defaultdict(Counter)
    by_policy: defaultdict[str, Counter[str]] = defaultdict(Counter)
    trend: defaultdict[str, Counter[str]] = defaultdict(Counter)
    policy_trend: defaultdict[str, Counter[str]] = defaultdict(Counter)
    classifiers: set[str] = set()
    images = 0
    with store.reader().snapshot() as reader:
        requests = reader.count_generations(**filters)
        reviews: dict[tuple[str, int], str] = {}
        not_written: set[tuple[str, int]] = set()
        for event in reader.iter_events((APPROVED, REJECTED, RELEASE_FAILED_EVENT)):
            key = (str(event.generation_id), int(event.payload["image_index"]))
            if event.event_type == RELEASE_FAILED_EVENT:
                not_written.add(key)
                continue
            reviews.setdefault(key, event.event_type)
        for image in reader.report_images(**filters, extra_keys=("quarantine",)):
            images += 1
            generation = image.generation
            review = reviews.get((generation.generation_id, image.index))
            outcome = _image_outcome(image.status, review, generation.extra, image.index)
            if outcome == "released" and (generation.generation_id, image.index) in not_written:
                outcome = "not released (write failed)"
            # An image held because the prompt asked for review counts under the prompt's review categories.
            held_by = [c.category for c in generation.categories if c.action == PromptAction.REVIEW]
            categories = [category for category, _ in image.verdict.flagged] or (
                (held_by or ["prompt review"]) if image.status == "quarantined" else ["none"]
            )
            classifiers.update(f"{s.classifier} ({s.model_id})" for s in image.verdict.scores)
            policy = f"{generation.policy.name} {generation.policy.version}"
            period = _bucket(generation.created_at, bucket)
            for category in dict.fromkeys(categories):
                by_category[category][outcome] += 1
            by_policy[policy][outcome] += 1
            trend[period][outcome] += 1
            policy_trend[f"{period}, {policy}"][outcome] += 1
        for generation in reader.report_generations(status="blocked", **filters):
            blocked = [c.category for c in generation.categories if c.action == PromptAction.BLOCK] or [
                "policy"
            ]
            policy = f"{generation.policy.name} {generation.policy.version}"
            period = _bucket(generation.created_at, bucket)
            for category in dict.fromkeys(blocked):
                by_category[category]["blocked (prompt)"] += 1
            by_policy[policy]["blocked (prompt)"] += 1
            trend[period]["blocked (prompt)"] += 1
            policy_trend[f"{period}, {policy}"]["blocked (prompt)"] += 1
    return SafetyReport(
        generated_at=datetime.now(UTC),
        since=since,
        prompt_like=prompt_like,
        bucket=bucket,
        requests=requests,
        images=images,
        by_category=tuple((k, _ordered_counts(by_category[k])) for k in sorted(by_category)),
        by_policy=tuple((k, _ordered_counts(by_policy[k])) for k in sorted(by_policy)),
        trend=tuple((k, _ordered_counts(trend[k])) for k in sorted(trend)),
        policy_trend=tuple((k, _ordered_counts(policy_trend[k])) for k in sorted(policy_trend)),
        classifiers=tuple(sorted(classifiers)),
    )


def _image_outcome(status: str, review: str | None, extra: Mapping[str, Any], index: int) -> str:
    if status == "released":
        return "released"
    if status == "blocked":
        return "blocked (image)"
    if review == APPROVED:
        return "released after review"
    if review == REJECTED:
        return "rejected in review"
    quarantine = extra.get("quarantine")
    if quarantine is not None and index not in quarantine.get("kept", []):
        return "quarantined (not kept)"
    return "quarantined (waiting)"
