"""The chain's pure functions (against RFC 8785 examples) and verify_chain against every kind of tampering."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from genguard.audit import AuditStore
from genguard.audit.chain import (
    ENTRY_DOMAIN,
    GENESIS_PREV,
    RawJSON,
    canonical_json,
    entry_hash,
    event_document,
    event_json,
    flat_object_json,
    format_float,
    format_time,
    parse_time,
)
from genguard.guard.errors import BadInputError
from tests.test_audit_store import make_record

# ------------------------------------------------------------------------------------ canonical JSON


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        # RFC 8785 appendix B and ECMAScript's Number::toString
        (333333333.33333329, "333333333.3333333"),
        (1e30, "1e+30"),
        (4.50, "4.5"),
        (2e-3, "0.002"),
        (0.000000000000000000000000001, "1e-27"),
        (-0.0, "0"),
        (1.0, "1"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (123e-20, "1.23e-18"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e308".replace("e", "e+")),
        (-9007199254740991.0, "-9007199254740991"),
    ],
)
def test_float_format_matches_ecmascript(number: float, expected: str) -> None:
    assert format_float(number) == expected
    assert canonical_json([number]) == f"[{expected}]".encode()


def test_canonical_json_rules() -> None:
    # RFC 8785 section 3.2.3: keys sorted by UTF-16 code units (the emoji's surrogates sort before U+FB33)
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    encoded = canonical_json({key: i for i, key in enumerate(keys)}).decode()
    order = ["\\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    positions = [encoded.index(f'"{key}"') for key in order]
    assert positions == sorted(positions)
    assert canonical_json({"b": [1, None, True, False], "a": 'x\ny\u0001"\\'}) == (
        b'{"a":"x\\ny\\u0001\\"\\\\","b":[1,null,true,false]}'
    )
    assert canonical_json("é€😀") == '"é€😀"'.encode()  # UTF-8, not \u escapes
    assert canonical_json(2**64 - 1) == b"18446744073709551615"  # integers stay exact


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"scores": [0.5, float("nan")]}, r"payload\.scores\[1\].*finite"),
        ({"x": float("inf")}, r"payload\.x.*finite"),
        ({"x": {3: "a"}}, r"payload\.x.*string keys"),
        ({"x": b"bytes"}, r"payload\.x.*JSON value.*bytes"),
        ({"x": "\ud800"}, r"payload\.x.*surrogate"),
    ],
)
def test_canonical_json_rejects_non_json(value: object, where: str) -> None:
    with pytest.raises(BadInputError, match=where):
        canonical_json(value)


def test_event_json_equals_the_canonical_document() -> None:
    payload = {"zeta": [1.5, "ü"], "alpha": None, "": {"n": -3}}
    for generation_id in (None, "gen-1", 'we"ird\n'):
        spliced = event_json(
            42, "review.decision", "2026-01-02T03:04:05.000006Z", generation_id, canonical_json(payload)
        )
        document = event_document(
            42, "review.decision", "2026-01-02T03:04:05.000006Z", generation_id, payload
        )
        assert spliced == canonical_json(document)


def test_entry_hash_is_domain_separated_and_chained() -> None:
    document = canonical_json({"seq": 1})
    first = entry_hash(GENESIS_PREV, document)
    assert first == hashlib.sha256(ENTRY_DOMAIN + bytes(32) + document).digest()
    assert first != hashlib.sha256(bytes(32) + document).digest()
    assert entry_hash(first, document) != first  # the same event at another position hashes differently
    with pytest.raises(ValueError, match="32 bytes"):
        entry_hash(b"short", document)


def test_time_format_is_fixed_width_utc() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 8, tzinfo=timezone(timedelta(hours=2)))
    text = format_time(moment)
    assert text == "2026-03-04T03:06:07.000008Z"
    assert parse_time(text) == moment
    with pytest.raises(BadInputError, match="naive"):
        format_time(datetime(2026, 1, 1))
    assert format_time(datetime(2026, 1, 1, tzinfo=UTC)) < format_time(
        datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    )


# ---------------------------------------------------------------------------------------- tampering


@pytest.fixture
def chained(tmp_path: Path) -> Iterator[tuple[AuditStore, sqlite3.Connection]]:
    """A store with 4 generations (2 images each; entries 1..12) and a generic event (entry 13)."""
    path = tmp_path / "audit.sqlite3"
    store = AuditStore.open(f"sqlite:///{path}")
    for seed in range(4):
        store.record_generation(make_record(seed, images=2))
    store.append_event("review.decision", {"decision": "release"}, "gen-000001")
    assert store.verify_chain().ok
    raw = sqlite3.connect(path, isolation_level=None)  # foreign keys off: an attacker's connection
    yield store, raw
    raw.close()
    store.close()


def assert_caught(store: AuditStore, seq: int | None, reason: str) -> None:
    result = store.verify_chain()
    assert not result.ok
    assert result.first_bad_seq == seq, result.reason
    assert result.reason is not None and reason in result.reason


def test_edited_event_payload(chained: tuple[AuditStore, sqlite3.Connection]) -> None:
    store, raw = chained
    raw.execute(
        "UPDATE audit_log SET payload_json = replace(payload_json, 'release', 'block') WHERE seq = 13"
    )
    assert_caught(store, 13, "hash does not match")


def test_edited_generation_row(chained: tuple[AuditStore, sqlite3.Connection]) -> None:
    store, raw = chained
    raw.execute("UPDATE generations SET actor = 'mallory' WHERE id = 'gen-000002'")  # entry 7
    assert_caught(store, 7, "row of generation 'gen-000002' was changed")


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE images SET sha256 = '{}' WHERE generation_id = 'gen-000001' AND \"index\" = 1".format(
            "0" * 64
        ),
        "UPDATE images SET manifest = x'00' WHERE generation_id = 'gen-000001' AND \"index\" = 1",
        "UPDATE images SET status = 'released' WHERE generation_id = 'gen-000001' AND \"index\" = 1",
        (
            "UPDATE images SET verdict_json = replace(verdict_json, 'quarantine', 'release')"
            " WHERE generation_id = 'gen-000001' AND \"index\" = 1"
        ),
        "DELETE FROM images WHERE generation_id = 'gen-000001' AND \"index\" = 1",
    ],
)
def test_edited_or_deleted_image_row(chained: tuple[AuditStore, sqlite3.Connection], edit: str) -> None:
    store, raw = chained
    raw.execute(edit)  # image 1 of gen-000001 is entry 6
    assert_caught(store, 6, "image 1 of generation 'gen-000001'")


def test_deleted_entry(chained: tuple[AuditStore, sqlite3.Connection]) -> None:
    store, raw = chained
    raw.execute("DELETE FROM audit_log WHERE seq = 4")
    assert_caught(store, 4, "entry 4 is missing")


def test_swapped_entries(chained: tuple[AuditStore, sqlite3.Connection]) -> None:
    store, raw = chained
    raw.execute("UPDATE audit_log SET seq = -1 WHERE seq = 3")
    raw.execute("UPDATE audit_log SET seq = 3 WHERE seq = 5")
    raw.execute("UPDATE audit_log SET seq = 5 WHERE seq = -1")
    assert_caught(store, 3, "entry 3")


def test_truncated_tail(chained: tuple[AuditStore, sqlite3.Connection]) -> None:
    store, raw = chained
    raw.execute("DELETE FROM audit_log WHERE seq >= 12")
    raw.execute("DELETE FROM images WHERE generation_id = 'gen-000003' AND \"index\" = 1")
    assert_caught(store, 12, "removed from the tail")


def test_forged_entries(chained: tuple[AuditStore, sqlite3.Connection]) -> None:
    store, raw = chained
    # A well-formed entry 14, hashed correctly onto entry 13: only the chain head shows it was not ours.
    (prev,) = raw.execute("SELECT entry_hash FROM audit_log WHERE seq = 13").fetchone()
    payload = canonical_json({"decision": "release"})
    when = format_time(datetime.now(UTC))
    forged = entry_hash(bytes.fromhex(prev), event_json(14, "review.decision", when, None, payload))
    raw.execute(
        "INSERT INTO audit_log VALUES (14, 'review.decision', ?, NULL, ?, ?, ?)",
        (when, payload.decode(), prev, forged.hex()),
    )
    assert_caught(store, 14, "beyond the chain head")

    raw.execute("DELETE FROM audit_log WHERE seq = 14")
    raw.execute("UPDATE audit_log SET seq = seq + 100 WHERE seq >= 5")
    raw.execute("UPDATE audit_log SET seq = seq - 99 WHERE seq >= 105")  # a gap at 5, for the forgery
    raw.execute(
        "INSERT INTO audit_log VALUES (5, 'review.decision', ?, NULL, ?, ?, ?)",
        (when, payload.decode(), "ab" * 32, "cd" * 32),
    )
    assert_caught(store, 5, "prev_hash")


def test_rows_behind_the_log(chained: tuple[AuditStore, sqlite3.Connection]) -> None:
    store, raw = chained
    raw.execute(
        'INSERT INTO images (generation_id, "index", sha256, phash, phash_c0, phash_c1, phash_c2, phash_c3,'
        " width, height, status, verdict_action, verdict_json) SELECT generation_id, 7, sha256, phash,"
        " phash_c0, phash_c1, phash_c2, phash_c3, width, height, status, verdict_action, verdict_json"
        " FROM images LIMIT 1"
    )
    assert_caught(store, None, "inserted behind the log")


def test_edited_chain_head(chained: tuple[AuditStore, sqlite3.Connection]) -> None:
    store, raw = chained
    raw.execute("UPDATE chain_head SET entry_hash = ? WHERE id = 1", ("ee" * 32,))
    assert_caught(store, 13, "chain head's hash")


@pytest.mark.parametrize(
    "fields",
    [
        {"b": 1, "a": None, "c": 'x\n\u0001"\\ é😀', "id": -(2**63), "big": 2**64 - 1},
        {"z": RawJSON('{"k":[1,2]}'), "y": "", "x": 0},
        {"é": 1, "e": 2},  # a key beyond ASCII: the general encoder's path
        {"flag": True, "f": 1.0},  # values beyond the flat shape: the general encoder's path
        {},
    ],
)
def test_flat_object_json_is_canonical_json(fields: dict[str, object]) -> None:
    expected = canonical_json(
        {k: json.loads(v.text) if isinstance(v, RawJSON) else v for k, v in fields.items()}
    )
    assert flat_object_json(fields) == expected


def test_flat_object_json_names_a_lone_surrogate() -> None:
    with pytest.raises(BadInputError, match=r"payload\.path.*surrogate"):
        flat_object_json({"path": "\ud800"})
    with pytest.raises(BadInputError, match="generation_id.*surrogate"):
        event_json(1, "review.decision", "t", "\udfff", b"{}")


def test_write_path_entry_columns_are_the_tables() -> None:
    from genguard.audit.models import LogEntry
    from genguard.audit.store import _ENTRY_COLUMNS

    assert sorted(_ENTRY_COLUMNS) == sorted(column.name for column in LogEntry.__table__.columns)
