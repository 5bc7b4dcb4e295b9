"""PostgreSQL specifics: several processes migrating and writing one chain, plain postgresql:// URLs.

(The store's behaviour on PostgreSQL is covered by tests/test_audit_store.py, parametrised over both databases.)
"""

from __future__ import annotations

import multiprocessing

import psycopg
import pytest

from genguard.audit import AuditStore
from tests.test_audit_store import make_record

pytestmark = pytest.mark.postgres

WORKERS, RECORDS = 4, 25


def write_records(url: str, worker: int, start: multiprocessing.synchronize.Event) -> None:
    """One writer process: open the (possibly fresh) database when told, then write its records,
    one per transaction (even workers) or in group commits of 5 (odd workers)."""
    start.wait(timeout=60)
    records = [make_record(worker * 1000 + n, images=n % 3) for n in range(RECORDS)]
    with AuditStore.open(url) as store:
        if worker % 2:
            for first in range(0, RECORDS, 5):
                store.record_generations(records[first : first + 5])
        else:
            for record in records:
                store.record_generation(record)


def test_processes_share_one_chain(postgres_url: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Event()
    processes = [spawn.Process(target=write_records, args=(postgres_url, w, start)) for w in range(WORKERS)]
    for process in processes:
        process.start()
    start.set()  # all open the fresh database at once: the migration lock must hold
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * WORKERS

    images = WORKERS * sum(n % 3 for n in range(RECORDS))
    with AuditStore.open(postgres_url) as store:
        result = store.verify_chain()
        assert result.ok, result.reason
        assert result.entries_checked == result.head_seq == WORKERS * RECORDS + images
        assert len(store.list_generations(limit=1000)) == WORKERS * RECORDS
    with psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql")) as raw:
        seqs = [row[0] for row in raw.execute("SELECT seq FROM audit_log ORDER BY seq")]
        (versions,) = raw.execute("SELECT count(*) FROM alembic_version").fetchone() or (0,)
    assert seqs == list(range(1, WORKERS * RECORDS + images + 1))
    assert versions == 1


def test_plain_postgresql_url_and_tampering(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with AuditStore.open(plain) as store:
        assert store.url.startswith("postgresql+psycopg://")
        store.record_generation(make_record(1, images=2))
        store.record_generation(make_record(2, images=1))
        assert store.verify_chain().ok
        with psycopg.connect(plain, autocommit=True) as raw:
            raw.execute("UPDATE images SET width = 512 WHERE generation_id = 'gen-000002'")
        result = store.verify_chain()
        assert not result.ok and result.first_bad_seq == 5
        assert result.reason is not None and "image 0 of generation 'gen-000002'" in result.reason
