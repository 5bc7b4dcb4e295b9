"""Near-duplicate lookup (`AuditStore.find_similar_images`, genguard.audit.similar) on real SQLite and PostgreSQL:
exact against a brute-force scan, radius edges, both 64-bit readings, hot segment values, bad input,
the query plans, and the upgrade from schema 0001 to 0002 of a database that already holds images."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from genguard.audit import AuditStore, GenerationRecord
from genguard.audit import db as audit_db
from genguard.audit.models import LogSignature
from genguard.audit.similar import (
    MAX_DISTANCE,
    NO_CAP,
    SEGMENTS,
    _probe_sql,
    ball,
    find_similar,
    probe_plan,
    segments,
)
from genguard.guard.errors import BadInputError
from genguard.guard.phash import hamming, to_signed64
from tests.test_audit_store import make_record

IMAGES_PER_RECORD = 4


@pytest.fixture(params=["sqlite", "postgres"])
def audit_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def flip(value: int, count: int, rng: random.Random) -> int:
    for position in rng.sample(range(64), count):
        value ^= 1 << position
    return value


def records_for(hashes: list[int], first_seed: int = 0) -> list[GenerationRecord]:
    """Generation records whose images carry `hashes`, in order (4 images per generation)."""
    records = []
    for start in range(0, len(hashes), IMAGES_PER_RECORD):
        chunk = hashes[start : start + IMAGES_PER_RECORD]
        record = make_record(first_seed + start // IMAGES_PER_RECORD, images=len(chunk))
        images = tuple(replace(image, phash=value) for image, value in zip(record.images, chunk, strict=True))
        records.append(replace(record, images=images))
    return records


def record_all(store: AuditStore, hashes: list[int], first_seed: int = 0) -> dict[tuple[str, int], int]:
    """Record the hashes through the real write path; give (generation_id, index) -> hash."""
    records = records_for(hashes, first_seed)
    for start in range(0, len(records), 200):
        store.record_generations(records[start : start + 200])
    return {(r.generation_id, image.index): image.phash for r in records for image in r.images}


def brute_force(stored: dict[tuple[str, int], int], query: int, radius: int) -> list[tuple[int, str, int]]:
    return sorted(
        (d, gid, index) for (gid, index), value in stored.items() if (d := hamming(query, value)) <= radius
    )


def found(store: AuditStore, query: int, radius: int, limit: int = 10**6) -> list[tuple[int, str, int]]:
    return [
        (item.distance, item.image.generation_id, item.image.index)
        for item in store.find_similar_images(query, radius, limit)
    ]


def test_segments_and_balls() -> None:
    rng = random.Random(3)
    assert sum(bits for _, bits in SEGMENTS) == 64
    for _ in range(100):
        value = rng.getrandbits(64)
        parts = segments(value)
        assert sum(part << shift for part, (shift, _) in zip(parts, SEGMENTS, strict=True)) == value
        assert segments(to_signed64(value)) == parts
    for radius in range(MAX_DISTANCE + 1):  # every plan keeps the pigeonhole bound
        for usable in [(0, 1, 2), (0, 1), (0, 2), (1, 2), (0,), (2,)]:
            plan = probe_plan(usable, radius)
            assert {k for k, _ in plan} <= set(usable)
            assert sum(within + 1 for _, within in plan) > radius
    assert probe_plan((0, 1, 2), 8) == ((0, 2), (1, 2), (2, 2))
    values = ball(0b1011, 21, 2)
    assert values[0] == 0b1011 and len(values) == len(set(values)) == 1 + 21 + 210
    assert all(0 <= v < 1 << 21 and (v ^ 0b1011).bit_count() <= 2 for v in values)


def test_exact_against_brute_force(audit_url: str) -> None:
    """Uniform and clustered hashes (near-duplicates share segment values); every radius up to the bound."""
    rng = random.Random(7)
    centres = [rng.getrandbits(64) for _ in range(25)]
    hashes = [rng.getrandbits(64) for _ in range(1200)]
    hashes += [flip(rng.choice(centres), rng.randrange(0, 9), rng) for _ in range(1200)]
    with AuditStore.open(audit_url) as store:
        stored = record_all(store, hashes)
        queries = [flip(rng.choice(hashes), rng.randrange(0, 6), rng) for _ in range(25)]
        queries += [rng.getrandbits(64) for _ in range(10)] + centres[:5]
        nonempty = 0
        for query in queries:
            for radius in (0, 1, 2, 4, 6, 8, 9, MAX_DISTANCE):
                expected = brute_force(stored, query, radius)
                assert found(store, query, radius) == expected, (hex(query), radius)
                assert found(store, query, radius, limit=20) == expected[:20]
                nonempty += bool(expected)
        assert nonempty > 80  # the comparison is not between empty lists
        hit = store.find_similar_images(centres[0], 8, limit=1)[0]
        assert hit.image.phash == stored[(hit.image.generation_id, hit.image.index)]
        assert hit.image.verdict is not None and hit.image.sha256


def test_radius_edges_and_both_readings(audit_url: str) -> None:
    rng = random.Random(11)
    query = (1 << 63) | rng.getrandbits(63)  # high bit set: stored signed, given back unsigned
    radius = 6
    hashes = [query, flip(query, radius, rng), flip(query, radius + 1, rng), flip(query, 1, rng)]
    with AuditStore.open(audit_url) as store:
        stored = record_all(store, hashes)
        results = store.find_similar_images(query, radius)
        assert [item.distance for item in results] == [0, 1, radius]
        assert results[0].image.phash == query
        assert found(store, query, radius + 1) == brute_force(stored, query, radius + 1)
        assert len(found(store, query, radius + 1)) == 4
        assert found(store, query, 0) == [(0, "gen-000000", 0)]
        assert found(store, to_signed64(query), radius) == found(store, query, radius)
        assert to_signed64(query) < 0
        assert found(store, query ^ (1 << 63), 0) == []


def test_ties_ordered_by_generation_and_index(audit_url: str) -> None:
    """More hits than `limit`, all at one distance: the first by (generation_id, index) are returned."""
    value = 0x0123456789ABCDEF
    with AuditStore.open(audit_url) as store:
        record_all(store, [value] * 10, first_seed=50)
        record_all(store, [value ^ 1] * 3 + [value] * 5, first_seed=10)
        got = found(store, value, 2, limit=7)
        assert got == [(0, "gen-000010", 3), *[(0, "gen-000011", k) for k in range(4)]] + [
            (0, "gen-000050", 0),
            (0, "gen-000050", 1),
        ]
        assert found(store, value, 2, limit=16)[-1] == (1, "gen-000010", 0)  # 15 at distance 0, then
        assert found(store, value, 2, limit=18)[-3:] == [(1, "gen-000010", k) for k in range(3)]


def test_ties_in_code_point_order_on_every_database(audit_url: str) -> None:
    """Generation ids compare by code point (Python's order), not by the database's locale collation."""
    value = 0xFEDCBA9876543210
    names = ["b-1", "B-2", "a_3", "a-4", "A_5"]
    records = [replace(records_for([value], k)[0], generation_id=name) for k, name in enumerate(names)]
    with AuditStore.open(audit_url) as store:
        if store._engine.dialect.name == "postgresql":  # a locale order that differs from code points
            with store._engine.begin() as conn:
                conn.exec_driver_sql(
                    'ALTER TABLE images ALTER COLUMN generation_id TYPE varchar(64) COLLATE "en-x-icu"'
                )
        store.record_generations(records)
        for limit in range(1, 6):
            got = [item.image.generation_id for item in store.find_similar_images(value, 3, limit)]
            assert got == sorted(names)[:limit]


@pytest.mark.parametrize("shared_bits", [21, 43])
def test_hot_segment_values_stay_exact(audit_url: str, shared_bits: int) -> None:
    """Many images sharing the top segment (21 bits) fall back to the other segments with a wider
    radius; sharing two segments (43 bits) leaves one, whose radius is too wide: uncapped reads."""
    rng = random.Random(shared_bits)
    top = rng.getrandbits(shared_bits) << (64 - shared_bits)
    hashes = [top | rng.getrandbits(64 - shared_bits) for _ in range(400)]
    hashes += [rng.getrandbits(64) for _ in range(200)]
    with AuditStore.open(audit_url) as store:
        stored = record_all(store, hashes)
        engine = store._engine
        statements: list[str] = []
        sa.event.listen(
            engine, "before_cursor_execute", lambda *args: statements.append(f"{args[2]} {args[3]!r}")
        )
        for query in [flip(rng.choice(hashes[:400]), rng.randrange(0, 4), rng) for _ in range(12)]:
            for radius in (3, 8):
                with engine.connect() as conn:
                    rows = find_similar(conn, query, radius, 10**6, hot_rows=50)
                got = [(item.distance, item.row["generation_id"], item.row["index"]) for item in rows]
                assert got == brute_force(stored, query, radius)
        # the fallbacks did run: probes without the hot segment(s), and (43 bits, radius 8) uncapped reads
        assert any("probe0" not in sql and "probe2" in sql for sql in statements)
        assert any(f", {NO_CAP}" in sql for sql in statements) == (shared_bits == 43)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((2**64, 8, 20), "phash: expected a 64-bit integer"),
        ((-(2**63) - 1, 8, 20), "phash: expected a 64-bit integer"),
        (("ff00", 8, 20), "phash: expected a 64-bit integer"),
        ((True, 8, 20), "phash: expected a 64-bit integer"),
        ((1, MAX_DISTANCE + 1, 20), f"max_distance: expected an integer 0..{MAX_DISTANCE}, found 12"),
        ((1, -1, 20), "max_distance: expected an integer 0..11, found -1"),
        ((1, 8.0, 20), "max_distance: expected an integer 0..11, found 8.0"),
        ((1, 8, 0), "limit: expected an integer >= 1, found 0"),
        ((1, 8, True), "limit: expected an integer >= 1, found True"),
    ],
)
def test_bad_input(sqlite_url: str, arguments: tuple[Any, ...], message: str) -> None:
    with AuditStore.open(sqlite_url) as store, pytest.raises(BadInputError, match=message):
        store.find_similar_images(*arguments)


def test_probes_read_the_segment_indexes_only(audit_url: str) -> None:
    """The probe SQL must be the expressions migration 0002 indexed, or the planner scans the table."""
    with AuditStore.open(audit_url) as store:
        record_all(store, [random.Random(k).getrandbits(64) for k in range(40)])
        with store._engine.connect() as conn:
            for k in range(len(SEGMENTS)):
                if conn.dialect.name == "sqlite":
                    sql = _probe_sql("sqlite", (k,))
                    plan = " ".join(
                        row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", ("[1]", 9))
                    )
                    assert f"USING COVERING INDEX ix_images_phash_segment{k}" in plan
                else:
                    conn.exec_driver_sql("SET enable_seqscan = off")
                    sql = _probe_sql("postgresql", (k,))
                    plan = " ".join(conn.exec_driver_sql(f"EXPLAIN {sql}", ("{1}", 9)).scalars())
                    assert f"using ix_images_phash_segment{k}" in plan
            conn.rollback()


def migrate(url: str, step: Callable[[Config, str], None], revision: str) -> None:
    """Run alembic's `command.upgrade` or `command.downgrade` to `revision`, as genguard.audit.db runs it."""
    engine = audit_db.create_audit_engine(audit_db.normalise_url(url))
    config = Config()
    config.set_main_option("script_location", str(audit_db.MIGRATIONS_DIR))
    try:
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            step(config, revision)
            conn.commit()
    finally:
        engine.dispose()


def image_indexes(url: str) -> set[str]:
    engine = audit_db.create_audit_engine(audit_db.normalise_url(url))
    catalog = (  # SQLAlchemy's reflection skips expression indexes on SQLite
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'images'"
        if engine.dialect.name == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE tablename = 'images'"
    )
    try:
        with engine.connect() as conn:
            return set(conn.exec_driver_sql(catalog).scalars())
    finally:
        engine.dispose()


SEGMENT_INDEXES = {f"ix_images_phash_segment{k}" for k in range(3)}
CHUNK_INDEXES = {f"ix_images_phash_c{k}" for k in range(4)}


def test_upgrade_from_0001_finds_images_written_before(audit_url: str) -> None:
    rng = random.Random(5)
    hashes = [rng.getrandbits(64) for _ in range(40)]
    migrate(audit_url, command.upgrade, "0001")
    assert CHUNK_INDEXES <= image_indexes(audit_url)
    engine = audit_db.create_audit_engine(audit_db.normalise_url(audit_url))
    with engine.connect() as conn:
        key = conn.execute(sa.text("SELECT value FROM audit_meta WHERE key = 'prompt_hmac_key'")).scalar_one()
        conn.rollback()
    # The 0001 schema, written by the same write path. That path signs each batch into
    # `log_signatures` (migration 0004): the table stands in for the writes and goes again before the
    # upgrade, which creates it and marks these entries as older than signing.
    LogSignature.__table__.create(engine)
    old = AuditStore(engine, bytes(key))
    stored = record_all(old, hashes)
    old.close()
    LogSignature.__table__.drop(engine)

    with AuditStore.open(audit_url) as store:  # upgrades to head
        with store._engine.connect() as conn:
            assert audit_db.current_revision(conn) == audit_db.HEAD_REVISION
            conn.rollback()
        indexes = image_indexes(audit_url)
        assert SEGMENT_INDEXES <= indexes and not CHUNK_INDEXES & indexes
        for query in [flip(value, rng.randrange(0, 9), rng) for value in hashes[:15]]:
            assert found(store, query, 8) == brute_force(stored, query, 8)
        more = record_all(store, [flip(hashes[0], 2, rng)], first_seed=1000)
        assert (2, *next(iter(more))) in found(store, hashes[0], 8)
        assert store.verify_chain().ok

    migrate(audit_url, command.downgrade, "0001")  # and back: the 16-bit chunk indexes return
    indexes = image_indexes(audit_url)
    assert CHUNK_INDEXES <= indexes and not SEGMENT_INDEXES & indexes
