"""The automatic checkpoints' time trigger fires while the log is idle, not only on writes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from genguard.audit.checkpoint import AutoCheckpoints, CheckpointTimer, latest_checkpoint
from genguard.audit.store import AuditStore
from genguard.pipeline.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_audit_store import make_record


def _latest_size(policy: AutoCheckpoints, store: AuditStore) -> int | None:
    latest = latest_checkpoint(policy.folder_for(store.log_id()))
    return None if latest is None else latest[0].tree_size


def test_an_idle_log_gets_its_time_checkpoint(sqlite_url: str, tmp_path: Path) -> None:
    policy = AutoCheckpoints(tmp_path / "checkpoints", every_entries=1000, every_seconds=0.3)
    with AuditStore.open(sqlite_url, auto_checkpoints=policy) as store:
        store.record_generation(make_record(1, images=2))  # entries 1..3: the period starts now
        assert _latest_size(policy, store) is None
        store.checkpoint_if_due()
        assert _latest_size(policy, store) is None  # not due yet: nothing written
        time.sleep(0.35)
        store.checkpoint_if_due()  # no write came: the idle check writes it
        assert _latest_size(policy, store) == 3
        assert store.reader().head().seq == 4  # its "audit.checkpoint" event
        store.checkpoint_if_due()  # that event alone makes none due
        assert _latest_size(policy, store) == 3


def test_the_timer_thread_checkpoints_an_idle_log(sqlite_url: str, tmp_path: Path) -> None:
    policy = AutoCheckpoints(tmp_path / "checkpoints", every_entries=1000, every_seconds=0.2)
    with AuditStore.open(sqlite_url, auto_checkpoints=policy) as store:
        store.record_generation(make_record(1, images=1))  # entries 1..2
        timer = CheckpointTimer(store, interval=0.05).start()
        try:
            deadline = time.monotonic() + 30
            while _latest_size(policy, store) is None and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            timer.stop()
        assert _latest_size(policy, store) == 2
        assert store.verify_log().ok


def test_the_timer_does_nothing_without_automatic_checkpoints(sqlite_url: str) -> None:
    with AuditStore.open(sqlite_url, auto_checkpoints=False) as store:
        store.record_generation(make_record(1, images=1))
        timer = CheckpointTimer(store, interval=0.01).start()
        timer.stop()
        store.checkpoint_if_due()
        assert store.reader().head().seq == 2  # no checkpoint event


def test_cron_audit_checkpoint_writes_the_due_automatic_checkpoint(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A CLI-only deployment: no long-running process; `genguard audit checkpoint` from cron is a write,
    # so it evaluates the time trigger too.
    monkeypatch.setenv("GENGUARD_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("GENGUARD_CHECKPOINT_SECONDS", "0.3")
    with AuditStore.open(sqlite_url) as store:
        store.record_generation(make_record(1, images=2))  # entries 1..3
        policy = store.auto_checkpoints
        assert policy is not None and _latest_size(policy, store) is None
    time.sleep(0.35)
    with pytest.raises(SystemExit) as exited:
        main(["audit", "checkpoint", "--db", sqlite_url])
    assert not exited.value.code, capsys.readouterr().err
    with AuditStore.open(sqlite_url) as store:
        assert _latest_size(policy, store) == 4  # entries 1..3 and the command's own checkpoint event
