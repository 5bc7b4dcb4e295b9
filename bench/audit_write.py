"""Chained generation records per second into the audit store, and the time to verify the chain.

Each record is one request with its prompt decision and 4 images (verdicts, perceptual hashes,
mark ids, a 6 KiB manifest each), written with its 5 chained entries in one transaction.

    python bench/audit_write.py                 # every configuration below, 3 runs each
    python bench/audit_write.py --sqlite-only --n 5000 --runs 1

Configurations: SQLite with one writer, synchronous=FULL (the default: survives power loss) and
synchronous=NORMAL (the explicit URL option: survives crashes only), one record per transaction
(`record_generation`) and batches of --batch records per transaction (`record_generations`, group
commit); PostgreSQL with --writers processes, one record and --batch records per transaction.
Each configuration runs --runs times on a fresh database; the median and best rates are printed,
with the writers' CPU ms per record (less sensitive than records/s to a busy machine) and the
load average, since other work on the machine changes the figures.

Log signing is always on (genguard.audit.log_key: one Ed25519 signature per committed transaction, made
under the chain head's lock); the script also prints what one signature costs, and so what it adds per
entry in each configuration.

Targets: SQLite >= 1,000 records/s with one writer; PostgreSQL >= 500 records/s in total with 4.
PostgreSQL: a fresh database on 127.0.0.1:5432 (user postgres, maintenance database `test`), dropped after.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genguard.audit import AuditStore, GenerationRecord, ImageRecord
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


def build_record(number: int, worker: int = 0) -> GenerationRecord:
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
                manifest=MANIFEST,
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


def time_verify(store: AuditStore) -> tuple[float, int]:
    started = time.perf_counter()
    result = store.verify_chain()
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


def bench_sqlite(n: int, synchronous: str, batch: int) -> tuple[float, float, float, int]:
    query = "" if synchronous == "full" else f"?synchronous={synchronous}"
    with (
        tempfile.TemporaryDirectory() as folder,
        AuditStore.open(f"sqlite:///{folder}/audit.sqlite3{query}") as store,
    ):
        records = [build_record(i) for i in range(n)]
        started, cpu = time.perf_counter(), time.process_time()
        write_all(store, records, batch)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        verify_s, entries = time_verify(store)
    return n / elapsed, 1000 * cpu / n, verify_s, entries


def _pg_writer(
    url: str, worker: int, n: int, batch: int, ready: multiprocessing.queues.Queue[float], start: object
) -> None:
    records = [build_record(i, worker) for i in range(n)]
    with AuditStore.open(url) as store:
        ready.put(0.0)
        start.wait()  # type: ignore[attr-defined]
        cpu = time.process_time()
        write_all(store, records, batch)
        ready.put(time.process_time() - cpu)


def bench_postgres(n: int, writers: int, batch: int, admin_url: str) -> tuple[float, float, float, int]:
    import psycopg

    name = f"genguard_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
            AuditStore.open(url).close()  # migrate once, outside the timing
            spawn = multiprocessing.get_context("spawn")
            ready: multiprocessing.queues.Queue[float] = spawn.Queue()
            start = spawn.Event()
            share = n // writers
            processes = [
                spawn.Process(target=_pg_writer, args=(url, w, share, batch, ready, start))
                for w in range(writers)
            ]
            for process in processes:
                process.start()
            for _ in processes:
                ready.get(timeout=120)
            started = time.perf_counter()
            start.set()
            for process in processes:
                process.join()
            elapsed = time.perf_counter() - started
            cpu = sum(ready.get(timeout=10) for _ in processes)
            if any(process.exitcode != 0 for process in processes):
                raise SystemExit("a PostgreSQL writer failed")
            with AuditStore.open(url) as store:
                verify_s, entries = time_verify(store)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return share * writers / elapsed, 1000 * cpu / (share * writers), verify_s, entries


def repeat(runs: int, measure: Callable[[], tuple[float, float, float, int]]) -> tuple[float, ...]:
    """Median and best rate over `runs`, and the median CPU ms/record, verify time and entries."""
    results = [measure() for _ in range(runs)]
    rates = [result[0] for result in results]
    return (
        statistics.median(rates),
        max(rates),
        statistics.median(result[1] for result in results),
        statistics.median(result[2] for result in results),
        results[-1][3],
    )


def print_signature_cost(batch: int) -> None:
    """Ed25519 signing of one batch message, the cost each committed transaction adds under the lock."""
    import time as _time

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from genguard.audit.log_key import LocalLogSigner, batch_message

    signer = LocalLogSigner(Ed25519PrivateKey.generate())
    message = batch_message("0" * 32, 1, 5, bytes(32))
    count = 2000
    start = _time.perf_counter()
    for _ in range(count):
        signer.sign(message)
    per_signature = (_time.perf_counter() - start) / count * 1e6
    entries = 1 + IMAGES_PER_RECORD
    print(
        f"log signature: {per_signature:.0f} us per committed transaction = {per_signature / entries:.1f} us "
        f"per entry at 1 record per transaction, {per_signature / (entries * batch):.1f} us per entry at {batch}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000, help="records per run (default 2000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (default 3)")
    parser.add_argument("--batch", type=int, default=8, help="records per group commit (default 8)")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--writers", type=int, default=4, help="PostgreSQL writer processes (default 4)")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    print_signature_cost(args.batch)
    load_before = os.getloadavg()
    rows = []
    for synchronous in ("full", "normal"):
        for batch in (1, args.batch):
            rate = repeat(args.runs, lambda: bench_sqlite(args.n, synchronous, batch))  # noqa: B023
            rows.append((f"SQLite {synchronous.upper()}", 1, batch, *rate, 1000))
    if not args.sqlite_only:
        for batch in (1, args.batch):
            rate = repeat(
                args.runs,
                lambda: bench_postgres(args.n, args.writers, batch, args.pg_admin_url),  # noqa: B023
            )
            rows.append(("PostgreSQL", args.writers, batch, *rate, 500))
    load_after = os.getloadavg()
    print(
        f"records: {args.n} per run, {IMAGES_PER_RECORD} images each ({1 + IMAGES_PER_RECORD} entries); "
        f"{args.runs} runs per line; {os.cpu_count()} CPUs; load average (1, 5, 15 min) "
        f"before {' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in load_after)}"
    )
    print(
        f"{'database':<18}{'writers':>8}{'rec/txn':>8}{'median rec/s':>13}{'best rec/s':>11}{'target':>8}"
        f"{'CPU ms/rec':>11}{'entries':>9}{'verify s':>10}"
    )
    for database, writers, batch, median, best, cpu_ms, verify_s, entries, target in rows:
        print(
            f"{database:<18}{writers:>8}{batch:>8}{median:>13.0f}{best:>11.0f}{target:>8}"
            f"{cpu_ms:>11.2f}{entries:>9}{verify_s:>10.2f}"
        )


if __name__ == "__main__":
    main()
