"""The write path's direct canonical writers give the general encoder's bytes, or defer to it."""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

from genguard.audit import chain
from genguard.audit.store import (
    _GENERATION_FIELDS,
    _IMAGE_FIELDS,
    AuditStore,
    _decision_json,
    _decision_text,
    _json_text,
    _row_payload,
    _verdict_json,
    _verdict_text,
    generation_payload,
    image_payload,
)
from genguard.guard.errors import BadInputError
from genguard.guard.types import (
    CategoryScore,
    CheckStatus,
    ClassifierScore,
    ImageAction,
    ImageVerdict,
    PolicyRef,
    PromptAction,
    PromptDecision,
    RuleHit,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_audit_store import make_record

POLICY = PolicyRef("default", "1.0.0", "ab" * 32)
# floats whose canonical text differs from repr (1.0, exponents), ints, non-ASCII and escapes
SCORES: list[Any] = [0.0137, 1.0, 1e-7, 2.5e21, 123456789.0, 0, 1, -0.0, 0.1 + 0.2]
NAMES = ["hate", 'é\u2028"q"\\', "😀 astral", "tab\tnl\n", ""]


class Shade(StrEnum):
    PALE = "pale"


def _decision(score: Any, name: str) -> PromptDecision:
    return PromptDecision(
        action=PromptAction.ALLOW,
        prompt="p",
        original_prompt="p",
        categories=(
            CategoryScore(name, score, PromptAction.BLOCK),
            CategoryScore("x", 0.5, PromptAction.ALLOW),
        ),
        rules=(RuleHit(name, "lexical", f"{name}.1", score),),
        policy=POLICY,
        negative_prompt_additions=(name, "gore"),
        heightened_categories=(name,),
    )


def _verdict(score: Any, name: str, **extra: Any) -> ImageVerdict:
    values: dict[str, Any] = {
        "action": ImageAction.QUARANTINE,
        "scores": (ClassifierScore(name, "m/1", "hate", score), ClassifierScore("c", name, name, 0.25)),
        "flagged": ((name, score),),
        "checks": (
            CheckStatus("nudenet", None, False, "not installed"),
            CheckStatus(name, "m/2", True, None),
        ),
    }
    return ImageVerdict(**(values | extra))


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("name", NAMES)
def test_direct_writers_give_the_general_encoders_bytes(score: Any, name: str) -> None:
    decision, verdict = _decision(score, name), _verdict(score, name)
    assert _decision_text(decision, "d") == _json_text(_decision_json(decision), "d")
    assert _verdict_text(verdict, "v") == _json_text(_verdict_json(verdict), "v")


def test_empty_and_unusual_values_defer_to_the_general_encoder() -> None:
    empty = PromptDecision(PromptAction.ALLOW, "p", "p", (), (), POLICY)
    assert _decision_text(empty, "d") == _json_text(_decision_json(empty), "d")
    bare = ImageVerdict(ImageAction.RELEASE, ())
    assert _verdict_text(bare, "v") == _verdict_text(bare, "v") == _json_text(_verdict_json(bare), "v")
    # a str subclass, an int-valued bool and a numpy-like float subclass: not the direct writer's shape
    odd = _verdict(0.5, "x", scores=(ClassifierScore(Shade.PALE, "m", "hate", 0.5),))
    assert _verdict_text(odd, "v") == _json_text(_verdict_json(odd), "v")
    flags = _verdict(0.5, "x", flagged=(("hate", True),))
    assert _verdict_text(flags, "v") == _json_text(_verdict_json(flags), "v")


@pytest.mark.parametrize(
    ("verdict", "message"),
    [
        (_verdict(float("nan"), "x"), "expected a finite number"),
        (_verdict(0.5, "\ud800"), "surrogate"),
        (_verdict(0.5, "x", checks=(CheckStatus("c", None, "yes", None),)), None),  # type: ignore[arg-type]
    ],
)
def test_faults_are_named_by_the_general_encoder(verdict: ImageVerdict, message: str | None) -> None:
    if message is None:  # a non-bool "ran": the general encoder writes it as the string it is
        assert _verdict_text(verdict, "v") == _json_text(_verdict_json(verdict), "v")
        return
    with pytest.raises(BadInputError, match=message):
        _verdict_text(verdict, "image 0.verdict")
    with pytest.raises(BadInputError, match=message):
        finite = "finite" in message
        _decision_text(_decision(float("nan") if finite else 0.5, "x" if finite else "\ud800"), "d")


def _image_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "generation_id": "g-1", "index": 0, "sha256": "ab" * 32, "phash": -(2**63), "phash_c0": 0,
        "phash_c1": 1, "phash_c2": 2, "phash_c3": 65535, "width": 512, "height": 512, "status": "released",
        "path": "/out/é.png", "mark_id": 2**63 - 1, "verdict_action": "release",
        "verdict_json": '{"action":"release"}', "manifest": b"\x00" * 100, "latent_nonce": b"n" * 16,
    }  # fmt: skip
    return row | changes


def _generation_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(_GENERATION_FIELDS)
    row |= {"id": "g-1", "created_at": "2026-01-01T00:00:00.000000Z", "status": "completed", "seed": 7,
            "params_json": '{"width":512}', "decision_json": "{}", "extra_json": "{}", "prompt_text": "ü\n"}  # fmt: skip
    return row | changes


@pytest.mark.parametrize(
    "row",
    [
        _image_row(),
        _image_row(manifest=None, latent_nonce=None, path=None, mark_id=None),
        _image_row(manifest=memoryview(b"abc"), latent_nonce=memoryview(b"m" * 12)),
        _image_row(path=b"bytes where text belongs"),  # a foreign row: the general path's reading
        _image_row(width=True, height=1.5),
        _image_row(verdict_json=None),
    ],
)
def test_image_payload_is_the_general_payload(row: dict[str, Any]) -> None:
    assert image_payload(row) == chain.flat_object_json(_row_payload(row, _IMAGE_FIELDS))


def test_payload_covers_the_manifest_by_digest() -> None:
    payload = image_payload(_image_row(manifest=b"m" * 10))
    assert f'"manifest_sha256":"{hashlib.sha256(b"m" * 10).hexdigest()}"'.encode() in payload
    assert b'"manifest_length":10' in payload


@pytest.mark.parametrize(
    "row",
    [
        _generation_row(),
        _generation_row(seed=None, error="é😀"),
        _generation_row(seed=-(2**63), prompt_text=""),
    ],
)
def test_generation_payload_is_the_general_payload(row: dict[str, Any]) -> None:
    assert generation_payload(row) == chain.flat_object_json(_row_payload(row, _GENERATION_FIELDS))


def test_a_lone_surrogate_in_a_row_is_named() -> None:
    with pytest.raises(BadInputError, match=r"payload\.path.*surrogate"):
        image_payload(_image_row(path="\udfff"))


def _rehash(db: Path, seq: int, payload: str) -> None:
    """Rewrite entry `seq`'s payload and its hash consistently (the attacker who can rehash)."""
    with sqlite3.connect(db) as raw:
        kind, when, gid, prev = raw.execute(
            "SELECT event_type, recorded_at, generation_id, prev_hash FROM audit_log WHERE seq = ?", (seq,)
        ).fetchone()
        document = chain.event_json(seq, kind, when, gid, payload.encode())
        digest = chain.entry_hash(bytes.fromhex(prev), document).hex()
        raw.execute(
            "UPDATE audit_log SET payload_json = ?, entry_hash = ? WHERE seq = ?", (payload, digest, seq)
        )


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda p: "{ " + p[1:], "entry 2: payload is not in canonical form"),
        (lambda p: p.replace('"index":0,', '"index":1,'), "entry 2: the row of image 1 of generation 'gen-000001' was changed"),
        (lambda p: p.replace('"index":0,', '"index":7,'), "entry 2: image 7 of generation 'gen-000001' has no row (deleted?)"),
        (lambda p: p[:-1], "entry 2: payload is not JSON"),
    ],
)  # fmt: skip
def test_verify_names_a_rehashed_domain_payload(
    sqlite_url: str, tmp_path: Path, edit: Any, reason: str
) -> None:
    with AuditStore.open(sqlite_url, auto_checkpoints=False) as store:
        store.record_generation(make_record(1, images=2))  # entries 1..3
        db = tmp_path / "audit.sqlite3"
        with sqlite3.connect(db) as raw:
            (payload,) = raw.execute("SELECT payload_json FROM audit_log WHERE seq = 2").fetchone()
        _rehash(db, 2, edit(payload))
        report = store.verify_chain()
        assert not report.ok and report.first_bad_seq == 2 and report.reason == reason
