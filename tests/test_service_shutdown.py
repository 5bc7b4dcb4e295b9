"""Graceful shutdown of a real `genguard serve` subprocess on loopback, sent SIGTERM mid-job.

Three runs on one SQLite database: a job claimed but not yet sampling (the worker is still loading the
model) goes back to `queued`; a job sampling when SIGTERM comes finishes within a long grace period while
the job queued behind it is not claimed; a job still sampling when a short grace period ends is recorded
failed. Each run exits on its own after SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from genguard.audit.service_store import ServiceStore
from genguard.audit.tenant_spaces import open_tenant_store

LONG = {"prompt": "a lighthouse on a cliff", "n": 1, "size": "256x256", "steps": 100}  # ~10 s of sampling


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    def __init__(self, home: Path, cache: Path, db_url: str, grace: float) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "GENGUARD_HOME": str(home), "GENGUARD_CACHE": str(cache)}
        env.pop("GENGUARD_DB", None)
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        command = [sys.executable, "-m", "genguard", "serve", "--db", db_url, "--workers", "1"]
        command += ["--port", self.url.rsplit(":", 1)[1], "--grace", str(grace), "--no-dev-keys"]
        command += ["--files", str(home / "files")]
        self.log = home / f"serve-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("wb")
        )
        self.until(lambda: httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200, "start")

    def until(self, check: Any, what: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited before {what}: {self.log.read_text()[-2000:]}")
            try:
                if check():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def job(self, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{self.url}/v1/generations/{job_id}", headers=headers).json()
        return answer

    def model_loaded(self) -> bool:
        return bool(httpx.get(f"{self.url}/readyz", timeout=2).json()["model_loaded"])

    def sampling(self, job_id: str) -> bool:
        """The worker's log says the job has started sampling (a stop can no longer put it back)."""
        return any(
            '"job sampling"' in line and job_id in line
            for line in self.log.read_text(errors="replace").splitlines()
        )

    def terminate(self, timeout: float = 180) -> str:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError("the server did not stop after SIGTERM") from None
        return self.log.read_text()


@pytest.mark.timeout(600)
def test_sigterm_requeues_finishes_or_fails_running_jobs(tmp_path: Path, embedded_cache: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    with ServiceStore.open(db_url) as store:
        store.create_tenant("acme")
        key = store.issue_key("acme", "generator")
    headers = {"Authorization": f"Bearer {key.secret}"}

    # 1. SIGTERM while the worker has claimed the job but is still loading the model: back to `queued`.
    first = Serve(tmp_path, embedded_cache, db_url, grace=120)
    a = httpx.post(f"{first.url}/v1/generations", json=LONG, headers=headers).json()["id"]
    b = httpx.post(f"{first.url}/v1/generations", json=LONG, headers=headers).json()["id"]
    first.until(lambda: first.job(a, headers)["status"] == "running", "job a to be claimed")
    assert not first.model_loaded()
    log = first.terminate()
    assert "job put back in the queue by the stop" in log and '"job sampling"' not in log
    with ServiceStore.open(db_url) as store:
        job_a, job_b = store.get_job(a), store.get_job(b)
    assert job_a is not None and job_a.status == "queued" and job_a.started_at is None
    assert job_b is not None and job_b.status == "queued"
    with open_tenant_store(db_url, key.info.tenant_id, read_only=True) as audit:
        assert audit.reader().count_generations() == 0  # nothing of it was recorded

    # 2. SIGTERM while job a samples, with a long grace: it finishes; job b is not claimed.
    second = Serve(tmp_path, embedded_cache, db_url, grace=120)
    second.until(lambda: second.sampling(a), "job a to start sampling")  # which takes about ten seconds
    assert second.job(a, headers)["status"] == "running"
    second.terminate()
    with ServiceStore.open(db_url) as store:
        job_a, job_b = store.get_job(a), store.get_job(b)
    assert job_a is not None and job_a.status == "done" and job_a.result and job_a.result["released"]
    assert job_b is not None and job_b.status == "queued"

    # 3. SIGTERM while job b samples, with a one-second grace: recorded failed, nothing released.
    third = Serve(tmp_path, embedded_cache, db_url, grace=1)
    third.until(lambda: third.sampling(b), "job b to start sampling")
    assert third.job(b, headers)["status"] == "running"
    log = third.terminate()
    assert "job cut by the stop recorded failed" in log
    with ServiceStore.open(db_url) as store:
        job_b = store.get_job(b)
    assert job_b is not None and job_b.status == "failed" and "grace period of 1 s" in (job_b.error or "")
    with open_tenant_store(db_url, key.info.tenant_id, read_only=True) as audit:
        assert audit.reader().count_generations() == 1  # job a's alone, in the tenant's audit space
        assert audit.verify_chain().ok
