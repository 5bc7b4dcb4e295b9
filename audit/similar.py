"""Near-duplicate lookup by perceptual hash: multi-index hashing (Norouzi, Punjani & Fleet, 2012).

The 64-bit hash is read as three segments of 21, 21 and 22 bits, most significant first. Migration
0002 indexes each segment as an expression, with the hash (and the row id) as further index
columns, so that candidates and their hashes come from the index alone. No extra columns: rows
written before the migration are indexed by it, and the chained image payload does not change.

Pigeonhole: if two hashes differ in at most r bits, some segment differs in at most floor(r / 3)
(generalised in `probe_plan`: radii t_k per segment with sum(t_k + 1) > r). A query enumerates,
for each segment, every value within t_k bits of its own segment (232 values for 21 bits at
r = 8), reads the index entries with those values, and keeps the candidates whose exact Hamming
distance is <= r. Three 21-bit segments rather than four 16-bit ones: ~700 probes for ~330
candidates at r = 8 among 1,000,000 uniform hashes, not ~550 probes for ~8,400 candidates.

Bound: r <= MAX_DISTANCE = 11, where the plan reads radius 3 in every segment (4,918 probe
values); pHash near-duplicates lie well inside it.

Hot segment values (many images sharing a segment, e.g. flat images): each segment's read stops
after HOT_ROWS rows. A segment that hits the cap is dropped and the others are planned again for
the same r (wider radii: (4, 3) bits in the two left at r = 8, 9,341 probe values) while no probe
list passes PROBE_BUDGET values. When that comes back hot too (or a list would be too long), every
segment is read without a cap: the cost follows the candidates, which are then mostly real
near-copies. Every path stays exact.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations, product
from math import comb
from typing import Any

from sqlalchemy.engine import Connection, RowMapping

from genguard.guard.errors import BadInputError
from genguard.guard.phash import hamming, to_unsigned64

MAX_DISTANCE = 11
HOT_ROWS = 5000  # index entries read per segment before the segment counts as hot
PROBE_BUDGET = 20_000  # probe values per segment in a fallback plan; beyond it: uncapped reads
# (shift, bits) of each segment, most significant first; the SQL below must stay the expressions
# that migration 0002 indexes, character for character (tests check that the plans use them).
SEGMENTS = ((43, 21), (22, 21), (0, 22))
SEGMENT_SQL = tuple(
    f"((phash >> {shift}) & {(1 << bits) - 1})" if shift else f"(phash & {(1 << bits) - 1})"
    for shift, bits in SEGMENTS
)
# Each list of values (probes, ids) travels as ONE text parameter, "{1,2}" read as a PostgreSQL array
# or "[1,2]" read by SQLite's json_each: the statement text stays fixed, so the driver prepares it
# once, and no list meets a limit on parameters. An expanded IN list of 232 parameters, or psycopg
# dumping a Python list into an array, cost more on the client than the lookup did on the server.
_VALUES_IN = {
    "postgresql": "= ANY(CAST(%s AS {type}[]))",
    "sqlite": "IN (SELECT value FROM json_each(?))",
}
_MARKER = {"postgresql": "%s", "sqlite": "?"}
NO_CAP = 1 << 62  # a LIMIT that never binds
# Generation ids compared by code point, as Python compares them (SQLite's default collation already does)
_COLLATE_CODE_POINTS = {"postgresql": ' COLLATE "C"', "sqlite": ""}
_FIRST_TIES = {
    dialect: f"SELECT id FROM images WHERE id {_VALUES_IN[dialect].format(type='bigint')} "
    f'ORDER BY generation_id{_COLLATE_CODE_POINTS[dialect]}, "index" LIMIT {_MARKER[dialect]}'
    for dialect in _VALUES_IN
}


@dataclass(frozen=True)
class SimilarRow:
    """What `find_similar` gives: an images row (the reader turns it into a StoredImage) and its distance."""

    row: RowMapping
    distance: int


def segments(phash: int) -> tuple[int, ...]:
    """The segment values of a 64-bit hash (signed or unsigned reading), most significant first."""
    bits = to_unsigned64(phash)
    return tuple((bits >> shift) & ((1 << width) - 1) for shift, width in SEGMENTS)


@lru_cache(maxsize=64)
def _ball_masks(bits: int, radius: int) -> tuple[int, ...]:
    """Every mask of `bits` bits with at most `radius` bits set."""
    return tuple(
        sum(1 << position for position in chosen)
        for weight in range(radius + 1)
        for chosen in combinations(range(bits), weight)
    )


def ball(value: int, bits: int, radius: int) -> list[int]:
    """Every `bits`-bit value within `radius` bits of `value` (value itself first)."""
    return [value ^ mask for mask in _ball_masks(bits, radius)]


def ball_size(bits: int, radius: int) -> int:
    return sum(comb(bits, weight) for weight in range(radius + 1))


def _check_count(value: Any, name: str, low: int, high: int | None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        expected = f"an integer {low}..{high}" if high is not None else f"an integer >= {low}"
        raise BadInputError(f"{name}: expected {expected}, found {value!r}")
    return value


def find_similar(
    conn: Connection, phash: int, max_distance: int, limit: int, hot_rows: int = HOT_ROWS
) -> list[SimilarRow]:
    """The image rows within `max_distance` bits of `phash`, nearest first (ties by generation, index),
    at most `limit` of them. `phash` in either 64-bit reading."""
    radius = _check_count(max_distance, "max_distance", 0, MAX_DISTANCE)
    _check_count(limit, "limit", 1, None)
    query = to_unsigned64(phash)
    candidates = _candidates(conn, query, radius, hot_rows)
    hits = {row_id: d for row_id, stored in candidates.items() if (d := hamming(query, stored)) <= radius}
    return _nearest(conn, hits, limit)


def _candidates(conn: Connection, query: int, radius: int, hot_rows: int) -> dict[int, int]:
    """id -> stored hash for a superset of the rows within `radius` (exact by the pigeonhole bound)."""
    every = tuple(range(len(SEGMENTS)))
    usable = every
    while usable:
        plan = probe_plan(usable, radius)
        if any(ball_size(SEGMENTS[k][1], within) > PROBE_BUDGET for k, within in plan):
            break
        rows = _probe(conn, query, plan, hot_rows + 1)
        read = Counter(segment for segment, _, _ in rows)
        hot = {k for k, _ in plan if read[k] > hot_rows}
        if not hot:
            return {row_id: to_unsigned64(stored) for _, row_id, stored in rows}
        usable = tuple(k for k in usable if k not in hot)
    # Hot wherever it looks (e.g. thousands of near-copies of the query): read every candidate, a cost in
    # proportion to them, which a table scan would only exceed.
    rows = _probe(conn, query, probe_plan(every, radius), NO_CAP)
    return {row_id: to_unsigned64(stored) for _, row_id, stored in rows}


@lru_cache(maxsize=256)
def probe_plan(usable: tuple[int, ...], radius: int) -> tuple[tuple[int, int], ...]:
    """(segment, radius within it) to read, from the `usable` segments, for a query of `radius`.

    Pigeonhole, generalised: if every segment k differed in more than t_k bits, the hashes would
    differ in at least sum(t_k + 1) bits; so with sum(t_k + 1) > radius, every match lies within t_k
    bits in some segment k (t_k = -1: segment k is not read). Of those splits, the one with the fewest
    probe values, then the fewest expected candidates: (2, 2, 2) at radius 8, (3, 2, 2) at 9, and a
    single segment at radius 0.
    """

    def cost(split: tuple[int, ...]) -> tuple[int, float]:
        sizes = [(ball_size(SEGMENTS[k][1], within), SEGMENTS[k][1]) for k, within in zip(usable, split)]
        return sum(size for size, _ in sizes), sum(size / 2**bits for size, bits in sizes)

    splits = (
        tuple(part - 1 for part in parts)
        for parts in product(range(radius + 2), repeat=len(usable))
        if sum(parts) == radius + 1
    )
    best = min(splits, key=cost)
    return tuple((k, within) for k, within in zip(usable, best) if within >= 0)


def _probe(conn: Connection, query: int, plan: tuple[tuple[int, int], ...], cap: int) -> list[Any]:
    """(segment, id, phash) of the rows whose segment k lies within the plan's radius of the query's,
    at most `cap` rows per segment."""
    dialect = conn.dialect.name
    if dialect not in _VALUES_IN:
        raise BadInputError(
            f"near-duplicate lookup: expected a sqlite or postgresql database, found {dialect}"
        )
    parts = segments(query)
    params: list[Any] = []
    for k, within in plan:
        params += [_value_list(dialect, ball(parts[k], SEGMENTS[k][1], within)), cap]
    statement = _probe_sql(dialect, tuple(k for k, _ in plan))
    return list(conn.exec_driver_sql(statement, tuple(params)).all())


def _value_list(dialect: str, values: list[int]) -> str:
    joined = ",".join(map(str, values))
    return f"{{{joined}}}" if dialect == "postgresql" else f"[{joined}]"


@lru_cache(maxsize=32)
def _probe_sql(dialect: str, probed: tuple[int, ...]) -> str:
    """One statement reading every probed segment's index entries, each read capped by a LIMIT."""
    return " UNION ALL ".join(
        f"SELECT * FROM (SELECT {k} AS segment, id, phash FROM images "
        f"WHERE {SEGMENT_SQL[k]} {_VALUES_IN[dialect].format(type='integer')} LIMIT {_MARKER[dialect]})"
        f" AS probe{k}"
        for k in probed
    )


def _nearest(conn: Connection, hits: dict[int, int], limit: int) -> list[SimilarRow]:
    """The `limit` nearest hits as full rows; ties in distance broken by (generation_id, index)."""
    if not hits:
        return []
    dialect = conn.dialect.name
    ids = list(hits)
    if len(ids) > limit:
        cutoff = sorted(hits.values())[limit - 1]
        ids = [row_id for row_id, d in hits.items() if d < cutoff]
        tied = [row_id for row_id, d in hits.items() if d == cutoff]
        # The database picks the first ties by generation and index (in code point order, as Python
        # sorts below), so that thousands of near-copies are not all read back.
        ids += conn.exec_driver_sql(
            _FIRST_TIES[dialect], (_value_list(dialect, tied), limit - len(ids))
        ).scalars()
    rows = conn.exec_driver_sql(
        f"SELECT * FROM images WHERE id {_VALUES_IN[dialect]}".format(type="bigint"),
        (_value_list(dialect, ids),),
    )
    found = [SimilarRow(row._mapping, hits[row.id]) for row in rows]
    found.sort(key=lambda item: (item.distance, item.row["generation_id"], item.row["index"]))
    return found


__all__ = [
    "MAX_DISTANCE",
    "SEGMENTS",
    "SimilarRow",
    "ball",
    "find_similar",
    "probe_plan",
    "segments",
]
