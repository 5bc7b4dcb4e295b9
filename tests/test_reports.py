"""Bias and safety reports over a real audit database (SQLite), as values, JSON and HTML."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from genguard.audit.records import GenerationRecord, ImageRecord
from genguard.audit.report_html import render_bias_html, render_safety_html
from genguard.audit.reports import NO_OCCUPATION, bias_report, occupation_of, safety_report
from genguard.audit.review import reject
from genguard.audit.store import AuditStore
from genguard.guard.bias import NOT_MEASURED, UNKNOWN, batch_bias
from genguard.guard.errors import BadInputError
from genguard.guard.output import decide_image
from genguard.guard.policy import PolicyEngine, load_pack
from genguard.guard.policy.schema import BiasSpec
from genguard.guard.quarantine import QuarantineVault
from genguard.guard.types import (
    ClassifierScore,
    GenerationRequest,
    ImageAction,
    PerceivedFace,
    PromptAction,
    PromptStorage,
)
from genguard.pipeline.cli import cli

PACK = load_pack("default")
ENGINE = PolicyEngine(PACK)


def faces(*pairs: tuple[str, str]) -> tuple[PerceivedFace, ...]:
    return tuple(PerceivedFace((0, 0, 40, 40), None, tone, gender) for tone, gender in pairs)


def record(
    prompt: str,
    observed: list[tuple[PerceivedFace, ...]] | None = None,
    violence: float = 0.0,
    storage: PromptStorage = PromptStorage.FULL,
) -> GenerationRecord:
    """A completed (or prompt-blocked) generation as the pipeline records it, one image per observation."""
    decision = ENGINE.check(prompt)
    if decision.action is PromptAction.BLOCK:
        return GenerationRecord(uuid.uuid4().hex, GenerationRequest(prompt), decision, storage, "blocked")
    observed = observed if observed is not None else [()]
    images = []
    for index, _ in enumerate(observed):
        verdict = decide_image([ClassifierScore("fixed", "test@v1", "violence", violence)], PACK)
        status = {ImageAction.RELEASE: "released", ImageAction.QUARANTINE: "quarantined"}[verdict.action]
        images.append(
            ImageRecord(
                index, secrets.token_hex(32), 1, 64, 64, verdict, status, mark_id=secrets.randbits(62) + 1
            )
        )
    kept = [image.index for image in images if image.status == "quarantined"]
    extra = {
        "bias": batch_bias(observed, BiasSpec()).to_json(),
        "quarantine": {"keep": "encrypted", "kept": kept},
    }
    return GenerationRecord(
        uuid.uuid4().hex,
        GenerationRequest(prompt),
        decision,
        storage,
        "completed",
        images=tuple(images),
        extra=extra,
    )


@pytest.fixture
def store(sqlite_url: str) -> AuditStore:
    return AuditStore.open(sqlite_url)


def test_bias_report_per_prompt(store: AuditStore) -> None:
    store.record_generations(
        [
            record(
                "a portrait of a doctor", [faces(("monk-2", NOT_MEASURED)), faces(("monk-2", NOT_MEASURED))]
            ),
            record("a portrait of a doctor", [faces(("monk-2", NOT_MEASURED), ("monk-7", NOT_MEASURED))]),
            record(
                "two nurses at work",
                [faces(("monk-3", "feminine"), ("monk-8", "masculine"), (UNKNOWN, UNKNOWN))],
            ),
            record("a lighthouse", [()]),
        ]
    )
    report = bias_report(store)
    assert report.generations == 4 and report.observed == 4 and report.faces == 7
    by_group = {g.group: g for g in report.groups}
    doctor = by_group["a portrait of a doctor"]
    assert doctor.generations == 2 and doctor.faces == 4
    assert dict(doctor.skin_tone.counts) == {"monk-2": 3, "monk-7": 1}
    entropy = doctor.skin_tone.entropy
    assert entropy is not None and 0 < entropy < 0.5  # mostly one tone out of ten
    nurses = by_group["two nurses at work"]
    assert dict(nurses.gender_presentation.counts) == {"feminine": 1, "masculine": 1, UNKNOWN: 1}
    assert nurses.gender_presentation.entropy == pytest.approx(1.0)
    assert report.gender_values == ("feminine", "masculine")
    assert report.groups[0].group == "a portrait of a doctor"  # most faces first
    assert [p.faces for p in report.trend] == [7] and report.trend[0].period == datetime.now(UTC).strftime(
        "%Y-%m-%d"
    )
    assert any("not measured" in note.lower() for note in report.notes)


def test_bias_report_filters_and_occupations(store: AuditStore) -> None:
    store.record_generations(
        [
            record("a Doctor smiling", [faces(("monk-4", NOT_MEASURED))]),
            record("three doctors in a hallway", [faces(("monk-6", NOT_MEASURED))]),
            record("a teacher at a blackboard", [faces(("monk-9", NOT_MEASURED))]),
            record("a hashed doctor", [faces(("monk-1", NOT_MEASURED))], storage=PromptStorage.HASHED),
        ]
    )
    only = bias_report(store, prompt_like="doctor")
    assert only.generations == 2 and only.faces == 2  # the hashed prompt cannot be searched
    assert bias_report(store, since=datetime.now(UTC) + timedelta(hours=1)).generations == 0
    by_job = {g.group: g.faces for g in bias_report(store, group_by="occupation").groups}
    assert by_job == {"doctor": 2, "teacher": 1, NO_OCCUPATION: 1}
    hashed = [g.group for g in bias_report(store).groups if g.group.startswith("(hashed prompt")]
    assert len(hashed) == 1
    assert (
        occupation_of("Police officers on patrol") == "police officer"
        and occupation_of(None) == NO_OCCUPATION
    )
    with pytest.raises(BadInputError, match="group_by"):
        bias_report(store, group_by="colour")  # type: ignore[arg-type]


def test_bias_html_is_self_contained_and_escaped(store: AuditStore) -> None:
    store.record_generation(record("a <script>alert(1)</script> chef", [faces(("monk-5", NOT_MEASURED))]))
    html = render_bias_html(bias_report(store))
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "perceived" in html.lower()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert not re.search(r"""(src|href)=["']https?:""", html)  # nothing fetched from elsewhere
    assert "#d7bd96" in html  # monk-5 drawn in its own reference colour


def test_safety_report_counts_outcomes_reviews_and_prompt_blocks(store: AuditStore, tmp_path: Path) -> None:
    held = record("a harbour at night", [(), ()], violence=0.9)
    store.record_generations([record("a meadow", [(), ()]), held, record("gore and decapitation")])
    vault = QuarantineVault()
    vault.keep(held.generation_id, 0, b"\x89PNG not needed")  # review decisions only need the record here
    reject(store, f"{held.generation_id}:0", reviewer="rita", reason="violent")
    report = safety_report(store)
    assert report.requests == 3 and report.images == 4
    by_category = {k: dict(v) for k, v in report.by_category}
    assert by_category["none"] == {"released": 2}
    assert by_category["violence"] == {
        "rejected in review": 1,
        "quarantined (waiting)": 1,
        "blocked (prompt)": 1,
    }
    by_policy = {k: dict(v) for k, v in report.by_policy}
    assert by_policy == {
        f"default {PACK.version}": {
            "released": 2, "rejected in review": 1, "quarantined (waiting)": 1, "blocked (prompt)": 1
        }
    }  # fmt: skip
    assert [period for period, _ in report.trend] == [datetime.now(UTC).strftime("%Y-%m-%d")]
    assert report.classifiers == ("fixed (test@v1)",)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert dict(report.policy_trend) == {f"{today}, default {PACK.version}": report.by_policy[0][1]}
    html = render_safety_html(report)
    assert "blocked (prompt)" in html and "<svg" in html
    assert json.loads(json.dumps(report.to_json()))["by_category"]["none"] == {"released": 2}


def test_cli_reports(store: AuditStore, sqlite_url: str, tmp_path: Path) -> None:
    store.record_generation(record("a pilot", [faces(("monk-3", NOT_MEASURED))]))
    runner = CliRunner()
    as_json = runner.invoke(cli, ["report", "bias", "--db", sqlite_url, "--json", "--group-by", "occupation"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["label"] == "perceived" and data["groups"][0]["group"] == "pilot"
    out = tmp_path / "safety.html"
    written = runner.invoke(
        cli, ["report", "safety", "--db", sqlite_url, "-o", str(out), "--since", "2000-01-01"]
    )
    assert written.exit_code == 0 and out.read_text().startswith("<!DOCTYPE html>")
    bad = runner.invoke(cli, ["report", "bias", "--db", sqlite_url, "--since", "last tuesday"])
    assert bad.exit_code != 0
