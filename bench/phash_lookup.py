"""Near-duplicate lookup latency: `AuditStore.find_similar_images` among --n recorded images.

    python bench/phash_lookup.py                       # 1,000,000 images, 500 queries, both databases
    python bench/phash_lookup.py --n 100000 --db sqlite --queries 200

Data: half the hashes uniformly random, half clustered: copies of a few thousand random centres
(--centres) with 0 to 8 bits flipped (near-duplicates); --hot of the uniform ones share their top
21-bit segment (a hot segment value, as flat images give), timed apart. Loaded by bulk
inserts straight into the generations and images tables (4 images per generation), with SQLAlchemy
Core executemany on SQLite and COPY on PostgreSQL, in big transactions: the chained write path is
NOT what is measured here (bench/audit_write.py measures it) and these rows have no log entries.
The schema comes from the real migrations (AuditStore.open); the images' secondary indexes are
dropped for the load and built again after it from the models' definitions (several times faster
than inserting into them), then the database is analysed (PostgreSQL: VACUUM ANALYZE, which
autovacuum would do, so that index-only scans need no heap visits).

Queries (--queries, one thread, one connection): half a stored hash with 0 to 4 bits flipped, half
uniformly random, then --queries/10 near the hot images; p50/p95/p99 of the public call at each
--radius (default 8), which includes reading the full rows of the (at most 20) nearest images, and
this process's CPU time per query (less sensitive than wall time to the other work on a shared
machine; on SQLite it is all the work). Target: p50 <= 10 ms at radius 8 with
1,000,000 images on both databases. Exactness: --check queries (default 50), every one with an
unbounded limit and the default limit, are compared with a brute-force scan (numpy popcount over
all hashes). A fresh SQLite file under /tmp and a fresh PostgreSQL database (127.0.0.1:5432, user
postgres, created from maintenance database `test`) are made for each run and removed after it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from genguard.audit import AuditStore, chain
from genguard.audit.models import Base
from genguard.audit.store import phash_chunks
from genguard.guard.phash import to_signed64

IMAGES_PER_GENERATION = 4
BATCH = 50_000
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
GENERATION_COLUMNS = (
    "id", "created_at", "status", "actor", "model_id", "pipeline_class", "prompt_storage", "prompt_length",
    "negative_prompt_length", "params_json", "decision_action", "policy_name", "policy_version",
    "policy_digest", "decision_json", "extra_json",
)  # fmt: skip
IMAGE_COLUMNS = (
    "generation_id", "index", "sha256", "phash", "phash_c0", "phash_c1", "phash_c2", "phash_c3",
    "width", "height", "status", "verdict_action", "verdict_json",
)  # fmt: skip


def make_hashes(n: int, centres: int, hot: int, rng: np.random.Generator) -> np.ndarray:
    """n unsigned 64-bit hashes: the first half uniform, the second near `centres` random centres;
    the first `hot` uniform ones share their top segment (21 bits)."""
    uniform = rng.integers(0, 2**64, size=n - n // 2, dtype=np.uint64)
    uniform[:hot] = (uniform[:hot] & np.uint64((1 << 43) - 1)) | (
        rng.integers(0, 1 << 21, dtype=np.uint64) << 43
    )
    centre = rng.integers(0, 2**64, size=centres, dtype=np.uint64)[rng.integers(0, centres, size=n // 2)]
    return np.concatenate([uniform, flip_bits(centre, rng.integers(0, 9, size=n // 2), rng)])


def flip_bits(hashes: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each hash with counts[i] distinct random bits flipped."""
    order = np.argsort(rng.random((len(hashes), 64)), axis=1)  # a random permutation of bits per hash
    chosen = order < counts[:, None]
    masks = (chosen.astype(np.uint64) << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    flipped: np.ndarray = hashes ^ masks
    return flipped


def generation_rows(n: int) -> Iterator[tuple[object, ...]]:
    now = chain.format_time(datetime.now(UTC))
    for number in range((n + IMAGES_PER_GENERATION - 1) // IMAGES_PER_GENERATION):
        yield (f"bench-{number:08d}", now, "completed", "bench", "bench-model", "Bench", "redacted", 10, 0,
               "{}", "allow", "default", "1.0.0", "0" * 64, "{}", "{}")  # fmt: skip


def image_rows(hashes: np.ndarray) -> Iterator[tuple[object, ...]]:
    for number, value in enumerate(hashes.tolist()):
        generation, index = divmod(number, IMAGES_PER_GENERATION)
        yield (f"bench-{generation:08d}", index, f"{number:064x}", to_signed64(value), *phash_chunks(value),
               512, 512, "released", "release", '{"action":"release","flagged":[],"scores":[]}')  # fmt: skip


def batches(rows: Iterator[tuple[object, ...]]) -> Iterator[list[tuple[object, ...]]]:
    batch: list[tuple[object, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def load(store: AuditStore, hashes: np.ndarray) -> None:
    engine = store._engine
    indexes = [index for index in Base.metadata.tables["images"].indexes if index.name != "ix_images_mark_id"]
    with engine.begin() as conn:
        for index in indexes:
            index.drop(conn)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            for table, columns, rows in (
                ("generations", GENERATION_COLUMNS, generation_rows(len(hashes))),
                ("images", IMAGE_COLUMNS, image_rows(hashes)),
            ):
                names = ", ".join(f'"{column}"' for column in columns)
                with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        else:
            cursor.execute("BEGIN")
            for table, columns, rows in (
                ("generations", GENERATION_COLUMNS, generation_rows(len(hashes))),
                ("images", IMAGE_COLUMNS, image_rows(hashes)),
            ):
                names = ", ".join(f'"{column}"' for column in columns)
                sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
                for batch in batches(rows):
                    cursor.executemany(sql, batch)
        raw.commit()
    finally:
        raw.close()
    with engine.begin() as conn:
        for index in indexes:
            index.create(conn)
        if engine.dialect.name == "sqlite":
            conn.execute(text("ANALYZE"))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))


def near(hashes: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` queries: stored hashes with 0 to 4 bits flipped."""
    return flip_bits(hashes[rng.integers(0, len(hashes), size=count)], rng.integers(0, 5, size=count), rng)


def timed(store: AuditStore, queries: np.ndarray, radius: int, what: str) -> None:
    times, cpu, hits = [], [], []
    for query in queries.tolist():
        start, start_cpu = time.perf_counter(), time.thread_time()
        found = store.find_similar_images(query, radius)
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.thread_time() - start_cpu) * 1000)
        hits.append(len(found))
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    cpu_cuts = statistics.quantiles(cpu, n=100, method="inclusive")
    print(f"  radius {radius}, {what}: p50 {cuts[49]:.2f} ms  p95 {cuts[94]:.2f} ms  "
          f"p99 {cuts[98]:.2f} ms  max {max(times):.2f} ms; "
          f"results per query: mean {statistics.fmean(hits):.1f}, max {max(hits)}")  # fmt: skip
    print(f"    this process's CPU per query (the database server's excluded): p50 {cpu_cuts[49]:.2f} ms  "
          f"p95 {cpu_cuts[94]:.2f} ms; load average now {os.getloadavg()[0]:.1f}")  # fmt: skip


def brute_force(hashes: np.ndarray, query: int, radius: int, limit: int | None) -> list[tuple[int, str, int]]:
    distances = np.bitwise_count(hashes ^ np.uint64(query))
    found = sorted(
        (int(distances[i]), f"bench-{i // IMAGES_PER_GENERATION:08d}", int(i % IMAGES_PER_GENERATION))
        for i in np.flatnonzero(distances <= radius)
    )
    return found if limit is None else found[:limit]


def run(store: AuditStore, hashes: np.ndarray, args: argparse.Namespace, rng: np.random.Generator) -> None:
    half = args.queries // 2
    queries = np.concatenate(
        [near(hashes, half, rng), rng.integers(0, 2**64, size=args.queries - half, dtype=np.uint64)]
    )
    rng.shuffle(queries)
    store.find_similar_images(0, 8)  # connect once before timing
    hot = near(hashes[: args.hot], args.queries // 10 if args.hot else 0, rng)
    mismatches = checked = 0
    for radius in args.radius:
        timed(store, queries, radius, f"{len(queries)} queries (half near stored hashes)")
        if args.hot:
            timed(
                store, hot, radius, f"{len(hot)} queries near the {args.hot:,} images sharing a top segment"
            )
        for query in queries[: args.check].tolist() + hot[: args.check // 5].tolist():
            checked += 1
            for limit in (None, 20):
                found = store.find_similar_images(query, radius, limit or 10**9)
                got = [(item.distance, item.image.generation_id, item.image.index) for item in found]
                mismatches += got != brute_force(hashes, query, radius, limit)
    print(f"  exactness vs numpy brute force: {checked} queries x 2 limits, {mismatches} mismatches")
    if mismatches:
        raise SystemExit(1)


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="genguard-phash-") as folder:
            yield f"sqlite:///{folder}/audit.sqlite3?synchronous=normal"
        return
    import psycopg

    name = f"genguard_phash_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="test", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="images recorded")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--check", type=int, default=50, help="queries compared with brute force")
    parser.add_argument("--radius", type=int, nargs="+", default=[8], help="one or more radii (0..11)")
    parser.add_argument("--centres", type=int, default=3000, help="cluster centres of the clustered half")
    parser.add_argument("--hot", type=int, default=20_000, help="uniform images sharing one top segment")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    hashes = make_hashes(args.n, args.centres, args.hot, rng)
    print(f"{args.n:,} images ({args.n // 2:,} uniform, {args.n - args.n // 2:,} near {args.centres} "
          f"centres, {args.hot:,} sharing a top segment); load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    for kind in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        with database(kind) as url:
            store = AuditStore.open(url)
            try:
                start = time.perf_counter()
                load(store, hashes)
                print(f"{kind}: loaded and indexed in {time.perf_counter() - start:.1f} s")
                run(store, hashes, args, np.random.default_rng(args.seed + 1))
            finally:
                store.close()


if __name__ == "__main__":
    main()
