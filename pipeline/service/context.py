"""The service's settings and the shared objects every route uses."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from genguard.audit.service_store import ServiceStore
from genguard.audit.store import AuditStore
from genguard.pipeline.service.jobs import JobRunner, WorkerSettings
from genguard.pipeline.service.spaces import TenantSpaces
from genguard.pipeline.service.telemetry import Telemetry


@dataclass(frozen=True)
class ServiceConfig:
    """`genguard serve`'s settings. Limits: `max_upload_bytes` (a verify upload's body, refused before it
        is read in full), `max_upload_pixels` (refused from the header, before decoding), the public verify's
        token bucket per client address (`verify_burst` requests, refilled at `verify_per_second`), at most
    `verify_concurrency` verifications at once over all addresses (a request waits up to `verify_queue_s`
    for a slot, then is answered 503),
        `max_wait_s` (the longest `?wait=` and the OpenAI endpoint's wait for its images), `shutdown_grace_s`
    (how long a stop lets running jobs finish)."""

    db_url: str | None = None
    files_dir: Path = Path("genguard-service-files")
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    workers: int = 1
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 4096 * 4096
    verify_burst: int = 10
    verify_per_second: float = 1.0
    verify_concurrency: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    verify_queue_s: float = 10.0
    max_wait_s: float = 120.0
    shutdown_grace_s: float = 30.0


class TokenBuckets:
    """A token bucket per client address, in memory (one process); at most `max_clients` remembered."""

    def __init__(self, burst: int, per_second: float, max_clients: int = 10_000) -> None:
        self.burst = burst
        self.per_second = per_second
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0.0 when a token was taken, else the seconds until one will be there."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.per_second)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                if len(self._buckets) > self.max_clients:  # forget the longest idle
                    oldest = min(self._buckets, key=lambda k: self._buckets[k][1])
                    del self._buckets[oldest]
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.per_second if self.per_second > 0 else 3600.0


@dataclass
class ServiceContext:
    """`store`: the control plane (tenants, keys, jobs). `spaces`: each tenant's audit store, pack and
    keys, the only way to a tenant's records. `audit`: the service database's own audit store, the shared
    space (records from before tenant spaces; public verifications that match no tenant)."""

    config: ServiceConfig
    store: ServiceStore
    audit: AuditStore
    spaces: TenantSpaces
    runner: JobRunner
    verify_limits: TokenBuckets
    verify_slots: threading.BoundedSemaphore
    telemetry: Telemetry = field(default_factory=Telemetry.disabled)
