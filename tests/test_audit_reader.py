"""The store's read API (`AuditStore.reader()`, genguard.audit.reader) on real SQLite and PostgreSQL:
entries only inside the chain, pagination without gaps or overlaps, streaming in chunks, one snapshot."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from genguard.audit import AuditStore, chain
from genguard.audit import reader as reader_module
from genguard.audit.reader import QuarantinedImage, ReportImage, StoredEvent
from genguard.audit.review import APPROVED, decisions
from genguard.guard.errors import BadInputError
from genguard.guard.types import PromptStorage
from tests.test_audit_store import make_record


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> Any:
    opened = AuditStore.open(request.getfixturevalue(f"{request.param}_url"))
    yield opened
    opened.close()


def fill(store: AuditStore, count: int = 5) -> None:
    for seed in range(count):
        store.record_generation(make_record(seed, images=2))
        store.append_event("verify.performed", {"n": seed}, f"gen-{seed:06d}")


def test_event_pages_by_cursor_cover_the_log_in_order(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store)
    monkeypatch.setattr(reader_module, "CHUNK", 4)  # several keyset chunks per read
    reader = store.reader()
    everything = reader.events()
    assert [e.seq for e in everything] == list(range(1, 21)) and all(
        isinstance(e, StoredEvent) for e in everything
    )
    pages, after = [], 0
    while page := reader.events(after_seq=after, limit=6):
        pages.append([e.seq for e in page])
        after = page[-1].seq
    assert pages == [list(range(1, 7)), list(range(7, 13)), list(range(13, 19)), [19, 20]]
    verified = reader.events(("verify.performed",))
    assert [e.payload["n"] for e in verified] == [0, 1, 2, 3, 4]
    assert [e.seq for e in reader.iter_events(generation_ids=["gen-000001"])] == [5, 6, 7, 8]
    assert reader.events(generation_ids=[]) == []
    assert reader.last_event_seqs(["gen-000001", "gen-000004", "gen-nope"]) == {
        "gen-000001": 8,
        "gen-000004": 20,
    }


def test_many_generation_ids_are_read_in_chunks_merged_by_seq(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store, 4)
    monkeypatch.setattr(reader_module, "_IN_LIST", 1)  # one IN list per id: the streams are merged
    monkeypatch.setattr(reader_module, "CHUNK", 2)
    ids = ["gen-000003", "gen-000000", "gen-000002"]
    seqs = [e.seq for e in store.reader().iter_events(generation_ids=ids)]
    assert seqs == [1, 2, 3, 4, 9, 10, 11, 12, 13, 14, 15, 16]
    assert [e.seq for e in store.reader().events(generation_ids=ids, limit=5)] == [1, 2, 3, 4, 9]


def test_an_entry_beyond_the_chain_head_is_never_read_as_an_event(sqlite_url: str) -> None:
    with AuditStore.open(sqlite_url) as store:
        store.record_generation(make_record(1, images=2))  # image 1 is quarantined; entries 1..3
        path = sqlite_url.removeprefix("sqlite:///")
    raw = sqlite3.connect(path)
    (prev,) = raw.execute("SELECT entry_hash FROM audit_log WHERE seq = 3").fetchone()
    payload = '{"image_index":1,"reason":"","released_sha256":"' + "a" * 64 + '","reviewer":"mallory"}'
    with raw:  # a forged approval appended behind genguard's back: the head still names entry 3
        raw.execute(
            "INSERT INTO audit_log VALUES (4, ?, ?, 'gen-000001', ?, ?, ?)",
            (APPROVED, chain.format_time(datetime.now(UTC)), payload, prev, "f" * 64),
        )
    raw.close()
    with AuditStore.open(sqlite_url) as store:
        reader = store.reader()
        assert [e.seq for e in reader.events()] == [1, 2, 3]
        assert [e.seq for e in store.get_generation("gen-000001").events] == [1, 2, 3]  # type: ignore[union-attr]
        assert reader.last_event_seqs(["gen-000001"]) == {"gen-000001": 3}
        assert decisions(store, ["gen-000001"], released_sha256="a" * 64) == {}  # not a decision
        assert reader.entry(4) is not None  # as stored, for the checkpoint tools to disprove
        assert not store.verify_chain().ok


def test_generation_and_queue_pages(store: AuditStore) -> None:
    for seed in range(5):
        store.record_generation(
            make_record(seed, images=2, storage=PromptStorage.HASHED if seed == 2 else PromptStorage.FULL)
        )
    reader = store.reader()
    newest = [g.generation_id for g in reader.generations(limit=100)]
    pages = [g.generation_id for offset in (0, 2, 4) for g in reader.generations(limit=2, offset=offset)]
    assert pages == newest and len(newest) == 5
    queue = reader.quarantined_images()
    assert all(isinstance(q, QuarantinedImage) for q in queue)
    assert [(q.generation_id, q.index) for q in queue] == [(f"gen-{s:06d}", 1) for s in range(5)]
    assert reader.quarantined_images(limit=2, offset=3) == queue[3:5]
    assert queue[2].prompt.text is None and queue[2].prompt.digest == store.prompt_digest(
        "a watercolour fox in the snow"
    )
    assert queue[0].verdict.flagged == (("violent_content", 0.5),)
    assert reader.quarantined_images("gen-000003", 1) == [queue[3]]


def test_report_reads_stream_typed_rows_with_their_filters(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "CHUNK", 3)
    for seed in range(4):
        store.record_generation(make_record(seed, images=2, prompt=f"a nurse number {seed}"))
    store.record_generation(make_record(9, images=0, status="blocked", prompt="something else"))
    reader = store.reader()
    images = list(reader.report_images(extra_keys=("batch",)))
    assert len(images) == 8 and all(isinstance(i, ReportImage) for i in images)
    assert {i.generation.extra["batch"] for i in images} == {0}
    assert all(i.pixel_marked and i.signed and not i.latent_marked for i in images)
    released = list(reader.report_images(status="released", prompt_like="%NURSE number 1%"))
    assert [(i.generation.generation_id, i.index) for i in released] == [("gen-000001", 0)]
    assert released[0].generation.extra == {}  # only the keys asked for
    blocked = list(reader.report_generations(status="blocked"))
    assert [g.generation_id for g in blocked] == ["gen-000009"] and blocked[0].categories
    assert reader.count_generations() == 5 and reader.count_generations(tenant="user0") == 3  # seeds 0, 3, 9
    later = datetime.now(UTC) + timedelta(hours=1)
    assert list(reader.report_generations(since=later)) == [] and reader.count_generations(until=later) == 5


def test_a_snapshot_reads_one_consistent_state(store: AuditStore) -> None:
    store.record_generation(make_record(1))
    with store.reader().snapshot() as view:
        assert view.count_generations() == 1
        store.record_generation(make_record(2))  # committed meanwhile
        assert view.count_generations() == 1 and view.head().seq == 3
        assert [e.seq for e in view.events()] == [1, 2, 3]
    assert store.reader().count_generations() == 2 and store.reader().head().seq == 6


def test_bad_arguments_name_the_field(sqlite_url: str) -> None:
    with AuditStore.open(sqlite_url) as store:
        reader = store.reader()
        for call, field in (
            (lambda: reader.events(limit=0), "limit"),
            (lambda: reader.events(after_seq=-1), "after_seq"),
            (lambda: reader.events(generation_ids="gen-1"), "generation_ids"),
            (lambda: reader.generations(offset=-1), "offset"),
            (lambda: list(reader.report_images(status="gone")), "status"),
            (lambda: reader.count_generations(tenant="a/b"), "tenant"),
        ):
            with pytest.raises(BadInputError, match=field):
                call()


def test_a_read_only_store_reads_through_the_same_view(sqlite_url: str, tmp_path: Path) -> None:
    with AuditStore.open(sqlite_url) as store:
        fill(store, 2)
    with AuditStore.open(sqlite_url, read_only=True) as copy:
        assert [e.seq for e in copy.reader().events(limit=3)] == [1, 2, 3]
        assert len(copy.reader().quarantined_images()) == 2
