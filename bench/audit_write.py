"""Chained generation records per second into the audit store, with log signing on, against baselines
measured in the same run, and the time to verify the chain and its signatures.

Each record is one request with its prompt decision and 4 images (verdicts, perceptual hashes,
mark ids, a 6 KiB manifest each), written with its 5 chained entries.

    python bench/audit_write.py                 # every configuration below, 3 runs each
    python bench/audit_write.py --sqlite-only --n 2000 --runs 1

"Grouped" means --batch records (default 8, so 40 chained entries) written in ONE transaction by
`AuditStore.record_generations` (group commit: one chain-head lock, one Ed25519 signature and one disk
sync for the whole group); "1 rec/txn" is `record_generation`, one transaction per record.

Configurations: SQLite with one writer, synchronous=FULL (the default: survives power loss) and
synchronous=NORMAL (the explicit URL option: survives crashes only), 1 record per transaction and
grouped; PostgreSQL with --writers processes, 1 record per transaction and grouped.

Each configuration is measured three ways, on fresh databases, in the same run:
- signed: the real store, log signing on (one Ed25519 signature per committed transaction);
- unsigned: the same store with a signer that returns a constant (what signing adds, isolated);
- bare: the same rows (read back from the signed database: generations, images, log entries) inserted
  with plain SQLAlchemy Core executemany, same grouping, no chain head, no hashing, no signature.
It prints records/s for each, signed/bare and signed/unsigned, the writers' CPU ms per record (less
sensitive than records/s to a busy machine), the load average, and what one Ed25519 signature costs
(timed alone: per transaction, and so per entry at 1 record and grouped).

Targets (signed): SQLite grouped >= 1,000 records/s with one writer; PostgreSQL >= 500 records/s in
total with 4 writers. PostgreSQL: fresh databases on 127.0.0.1:5432 (user postgres, maintenance database
`test`), dropped after.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa

from genguard.audit import AuditStore, GenerationRecord, ImageRecord
from genguard.audit.db import create_audit_engine, normalise_url
from genguard.audit.models import Generation, Image, LogEntry
from genguard.guard.types import (
    CategoryScore,
    ClassifierScore,
    GenerationParams,
    GenerationRequest,
    ImageAction,
    ImageVerdict,
    PolicyRef,
    PromptAction,
    PromptDecision,
    PromptStorage,
    RuleHit,
)

CATEGORIES = (
    "sexual_content", "sexual_minors", "violent_content", "hate", "self_harm", "harassment",
    "illegal_activity", "weapons", "deceptive_real_people", "copyrighted_style",
)  # fmt: skip
POLICY = PolicyRef("default", "1.0.0", hashlib.sha256(b"bench").hexdigest())
IMAGES_PER_RECORD = 4
MANIFEST = os.urandom(6 * 1024)


def build_record(number: int, worker: int = 0, manifest: bytes | None = MANIFEST) -> GenerationRecord:
    """A realistic completed record: decision over 10 categories, 2 rule hits, 4 scored images."""
    prompt = (
        f"a detailed oil painting of a lighthouse on a cliff at dusk, storm clouds, waves, variant {number}"
    )
    decision = PromptDecision(
        action=PromptAction.ALLOW,
        prompt=prompt,
        original_prompt=prompt,
        categories=tuple(
            CategoryScore(c, 0.0137 * (i + 1), PromptAction.ALLOW) for i, c in enumerate(CATEGORIES)
        ),
        rules=(
            RuleHit("weapons", "semantic", "weapons.exemplar.12", 0.31),
            RuleHit("hate", "lexical", "hate.q.4", 0.2),
        ),
        policy=POLICY,
        negative_prompt_additions=("gore", "nudity"),
    )
    images = []
    for index in range(IMAGES_PER_RECORD):
        key = f"{worker}/{number}/{index}".encode()
        digest = hashlib.sha256(key).digest()
        verdict = ImageVerdict(
            action=ImageAction.RELEASE,
            scores=tuple(
                ClassifierScore("clip-zero-shot", "openai/clip-vit-base-patch32", c, 1.5e-4 * (i + index + 1))
                for i, c in enumerate(CATEGORIES)
            ),
        )
        images.append(
            ImageRecord(
                index=index,
                sha256=digest.hex(),
                phash=int.from_bytes(digest[:8], "big"),
                width=512,
                height=512,
                verdict=verdict,
                status="released",
                path=f"/srv/genguard/out/{worker}/{number}_{index}.png",
                mark_id=int.from_bytes(digest[8:16], "big"),
                manifest=manifest,
            )
        )
    return GenerationRecord(
        generation_id=f"w{worker}-{number:08d}",
        request=GenerationRequest(
            prompt, "blurry, low quality", GenerationParams(512, 512, 30, 7.5, 4, number)
        ),
        decision=decision,
        prompt_storage=PromptStorage.HASHED,
        status="completed",
        model_id="stabilityai/stable-diffusion-2-1",
        pipeline_class="StableDiffusionPipeline",
        seed=number,
        images=tuple(images),
    )


Measure = tuple[float, float]  # records/s, CPU ms per record


class ConstantSigner:
    """A LogSigner whose signature is a constant: the "unsigned" baseline (its log does not verify)."""

    public_key = bytes(32)

    def sign(self, message: bytes) -> bytes:
        return bytes(64)


def time_verify(store: AuditStore) -> tuple[float, int]:
    started = time.perf_counter()
    result = store.verify_log(store.log_public_key)
    if not result.ok:
        raise SystemExit(f"verify failed: {result}")
    return time.perf_counter() - started, result.entries_checked


def write_all(store: AuditStore, records: Sequence[GenerationRecord], batch: int) -> None:
    """One record per transaction (batch 1, `record_generation`), or `batch` per transaction."""
    if batch == 1:
        for record in records:
            store.record_generation(record)
    else:
        for first in range(0, len(records), batch):
            store.record_generations(records[first : first + batch])


RowGroup = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


def read_groups(url: str, prefix: str = "") -> list[RowGroup]:
    """Per record, in the order written: its generation row, image rows and log entries (as dicts)."""
    engine = sa.create_engine(url)
    groups: dict[str, RowGroup] = {}
    like = f"{prefix}%"
    with engine.connect() as conn:
        for row in conn.execute(
            sa.select(Generation.__table__).where(Generation.id.like(like)).order_by(Generation.id)
        ):
            groups[row.id] = ([dict(row._mapping)], [], [])
        for row in conn.execute(sa.select(Image.__table__).where(Image.generation_id.like(like))):
            image = dict(row._mapping)
            image.pop("id")  # assigned by the database, as on the real path
            groups[row.generation_id][1].append(image)
        for row in conn.execute(
            sa.select(LogEntry.__table__).where(LogEntry.generation_id.like(like)).order_by(LogEntry.seq)
        ):
            groups[row.generation_id][2].append(dict(row._mapping))
    engine.dispose()
    return list(groups.values())


def bare_insert(engine: sa.engine.Engine, groups: Sequence[RowGroup], batch: int) -> None:
    """The baseline: the same rows, `batch` records per transaction, SQLAlchemy Core executemany."""
    generations, images, entries = (
        Generation.__table__.insert(),
        Image.__table__.insert(),
        LogEntry.__table__.insert(),
    )
    for first in range(0, len(groups), batch):
        chunk = groups[first : first + batch]
        with engine.begin() as conn:
            conn.execute(generations, [row for group in chunk for row in group[0]])
            conn.execute(images, [row for group in chunk for row in group[1]])
            conn.execute(entries, [row for group in chunk for row in group[2]])


def timed(work: Callable[[], None], n: int) -> Measure:
    started, cpu = time.perf_counter(), time.process_time()
    work()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return n / elapsed, 1000 * cpu / n


def bench_sqlite(n: int, synchronous: str, batch: int) -> dict[str, Any]:
    query = "" if synchronous == "full" else f"?synchronous={synchronous}"
    records = [build_record(i) for i in range(n)]
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        with AuditStore.open(f"sqlite:///{folder}/signed.sqlite3{query}") as store:
            result["signed"] = timed(lambda: write_all(store, records, batch), n)
            result["verify"] = time_verify(store)
        with AuditStore.open(
            f"sqlite:///{folder}/unsigned.sqlite3{query}", log_signer=ConstantSigner()
        ) as store:
            result["unsigned"] = timed(lambda: write_all(store, records, batch), n)
        groups = read_groups(f"sqlite:///{folder}/signed.sqlite3")
        AuditStore.open(f"sqlite:///{folder}/bare.sqlite3{query}").close()  # the schema, outside the timing
        engine = create_audit_engine(normalise_url(f"sqlite:///{folder}/bare.sqlite3{query}"))
        result["bare"] = timed(lambda: bare_insert(engine, groups, batch), n)
        engine.dispose()
    return result


def _pg_writer(
    url: str, mode: str, source: str, worker: int, n: int, batch: int,
    ready: multiprocessing.queues.Queue[float], start: object,
) -> None:  # fmt: skip
    if mode == "bare":
        groups = read_groups(source, f"w{worker}-")
        engine = create_audit_engine(normalise_url(url))
        ready.put(0.0)
        start.wait()  # type: ignore[attr-defined]
        cpu = time.process_time()
        bare_insert(engine, groups, batch)
        ready.put(time.process_time() - cpu)
        engine.dispose()
        return
    records = [build_record(i, worker) for i in range(n)]
    signer = ConstantSigner() if mode == "unsigned" else None
    with AuditStore.open(url, log_signer=signer) as store:
        ready.put(0.0)
        start.wait()  # type: ignore[attr-defined]
        cpu = time.process_time()
        write_all(store, records, batch)
        ready.put(time.process_time() - cpu)


def _pg_run(url: str, mode: str, source: str, share: int, writers: int, batch: int) -> Measure:
    spawn = multiprocessing.get_context("spawn")
    ready: multiprocessing.queues.Queue[float] = spawn.Queue()
    start = spawn.Event()
    processes = [
        spawn.Process(target=_pg_writer, args=(url, mode, source, w, share, batch, ready, start))
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=300)
    started = time.perf_counter()
    start.set()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    if any(process.exitcode != 0 for process in processes):
        raise SystemExit(f"a PostgreSQL writer failed ({mode})")
    cpu = sum(ready.get(timeout=10) for _ in processes)
    return share * writers / elapsed, 1000 * cpu / (share * writers)


def bench_postgres(n: int, writers: int, batch: int, admin_url: str) -> dict[str, Any]:
    import psycopg

    share = n // writers
    names = {mode: f"genguard_bench_{mode}_{uuid.uuid4().hex[:8]}" for mode in ("signed", "unsigned", "bare")}
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    urls = {mode: f"{base}/{name}" for mode, name in names.items()}
    result: dict[str, Any] = {}
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        try:
            for mode, name in names.items():
                admin.execute(f'CREATE DATABASE "{name}"')
                AuditStore.open(urls[mode]).close()  # migrate once, outside the timing
            for mode in ("signed", "unsigned", "bare"):
                result[mode] = _pg_run(urls[mode], mode, urls["signed"], share, writers, batch)
            with AuditStore.open(urls["signed"]) as store:
                result["verify"] = time_verify(store)
        finally:
            for name in names.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return result


def repeat(runs: int, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Per mode: the median and best rate and the median CPU ms/record over `runs`; the median verify."""
    results = [measure() for _ in range(runs)]
    summary: dict[str, Any] = {}
    for mode in ("signed", "unsigned", "bare"):
        rates = [r[mode][0] for r in results]
        summary[mode] = (statistics.median(rates), max(rates), statistics.median(r[mode][1] for r in results))
    summary["verify"] = (statistics.median(r["verify"][0] for r in results), results[-1]["verify"][1])
    return summary


def signature_cost() -> float:
    """Microseconds for one Ed25519 signature of a batch message (one per committed transaction)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from genguard.audit.log_key import LocalLogSigner, batch_message

    signer = LocalLogSigner(Ed25519PrivateKey.generate())
    message = batch_message("0" * 32, 1, 5, bytes(32))
    count = 2000
    start = time.perf_counter()
    for _ in range(count):
        signer.sign(message)
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000, help="records per run (default 2000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (default 3)")
    parser.add_argument("--batch", type=int, default=8, help="records per grouped transaction (default 8)")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--postgres-only", action="store_true", help="skip SQLite")
    parser.add_argument("--writers", type=int, default=4, help="PostgreSQL writer processes (default 4)")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    entries = 1 + IMAGES_PER_RECORD
    per_signature = signature_cost()
    load_before = os.getloadavg()
    rows = []
    if not args.postgres_only:
        for synchronous in ("full", "normal"):
            for batch in (1, args.batch):
                summary = repeat(args.runs, lambda: bench_sqlite(args.n, synchronous, batch))  # noqa: B023
                rows.append((f"SQLite {synchronous.upper()}", 1, batch, summary, 1000 if batch > 1 else None))
    if not args.sqlite_only:
        for batch in (1, args.batch):
            summary = repeat(
                args.runs,
                lambda: bench_postgres(args.n, args.writers, batch, args.pg_admin_url),  # noqa: B023
            )
            rows.append(("PostgreSQL", args.writers, batch, summary, 500))
    load_after = os.getloadavg()
    print(
        f"records: {args.n} per run, {IMAGES_PER_RECORD} images each ({entries} entries); grouped = "
        f"{args.batch} records ({args.batch * entries} entries) per transaction; {args.runs} runs per line; "
        f"{os.cpu_count()} CPUs; load average (1, 5, 15 min) before {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {' '.join(f'{x:.2f}' for x in load_after)}"
    )
    print(
        f"log signature (Ed25519, one per transaction): {per_signature:.0f} us = {per_signature / entries:.1f} us "
        f"per entry at 1 rec/txn, {per_signature / (entries * args.batch):.2f} us per entry grouped"
    )
    print(
        f"{'database':<18}{'writers':>8}{'rec/txn':>8}{'signed rec/s':>13}{'best':>7}{'target':>8}"
        f"{'unsigned':>9}{'bare':>7}{'signed/bare':>12}{'signed/unsigned':>16}"
        f"{'CPU ms/rec s|u|b':>19}{'entries':>9}{'verify s':>9}"
    )
    for database, writers, batch, summary, target in rows:
        signed, unsigned, bare = summary["signed"], summary["unsigned"], summary["bare"]
        cpu = f"{signed[2]:.2f}|{unsigned[2]:.2f}|{bare[2]:.2f}"
        print(
            f"{database:<18}{writers:>8}{batch:>8}{signed[0]:>13.0f}{signed[1]:>7.0f}{target or '-':>8}"
            f"{unsigned[0]:>9.0f}{bare[0]:>7.0f}{signed[0] / bare[0]:>12.2f}{signed[0] / unsigned[0]:>16.2f}"
            f"{cpu:>19}{summary['verify'][1]:>9}{summary['verify'][0]:>9.2f}"
        )


if __name__ == "__main__":
    main()
