"""Each tenant's space in the running service: its audit store, policy pack, signing identity and
watermark key. Every route and the job runner reach a tenant's store through `TenantSpaces` only.

A tenant's audit store (genguard.audit.tenant_spaces) is opened on first use and kept open, with a
`CheckpointTimer` of its own once the service runs; all close at shutdown. The tenant's settings (pack,
keys) are read from the service database at each use, so `genguard tenants set-policy` takes effect on
the next job without a restart. The service database's own audit tables are the shared space: the
records of a database that predates tenant spaces, and the public verifications that match no tenant.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genguard.audit import tenant_spaces
from genguard.audit.checkpoint import CheckpointTimer
from genguard.audit.service_store import ServiceStore, TenantInfo
from genguard.audit.store import AuditStore
from genguard.audit.tenant_spaces import TenantSpaceLayout
from genguard.audit.verify import VerifySpace
from genguard.guard.config import watermark_key

if TYPE_CHECKING:
    from genguard.guard.policy.schema import EditsSpec


@dataclass(frozen=True)
class TenantKeys:
    """A tenant's own key files (None: the service's configured ones)."""

    signing_key: Path | None
    signing_chain: Path | None
    watermark_key: Path | None


@dataclass
class TenantSpace:
    """One tenant's open space. `policy`: its pack (a shipped name or a path)."""

    tenant: TenantInfo
    layout: TenantSpaceLayout
    store: AuditStore
    policy: str
    keys: TenantKeys
    _credentials: Any = field(default=None, repr=False)
    _watermark: bytes | None = field(default=None, repr=False)
    _anchor: bytes | None = field(default=None, repr=False)

    def edit_limits(self) -> tuple[str, EditsSpec]:
        """The tenant's pack's name and its `edits:` section, read again when the pack's file changes:
        a route checks an edit's files against them when the job is submitted."""
        from genguard.guard.policy import pack_file

        path = pack_file(self.policy)
        stat = path.stat()
        return _pack_edits(str(path), stat.st_mtime_ns, stat.st_size)

    @property
    def pipeline_key(self) -> tuple[str, str, str, str, str]:
        """What a worker's pipeline for this tenant depends on (the store is the tenant's)."""
        keys = self.keys
        return (
            self.tenant.id,
            self.policy,
            str(keys.signing_key or ""),
            str(keys.signing_chain or ""),
            str(keys.watermark_key or ""),
        )

    def watermark_key(self) -> bytes | None:
        """The tenant's own watermark key, None for the service's."""
        if self.keys.watermark_key is None:
            return None
        if self._watermark is None:
            self._watermark = tenant_spaces.read_watermark_key(self.keys.watermark_key)
        return self._watermark

    def content_credentials(self) -> Any:
        """The tenant's own signer (a ContentCredentials, built once), None for the service's."""
        if self.keys.signing_key is None or self.keys.signing_chain is None:
            return None
        if self._credentials is None:
            from genguard.guard.provenance import ContentCredentials, LocalKeySigner, TsaConfig

            signer = LocalKeySigner.from_files(self.keys.signing_key, self.keys.signing_chain)
            self._credentials = ContentCredentials(signer, tsa=TsaConfig.from_env())
        return self._credentials

    def trust_anchor_pem(self) -> bytes | None:
        """The root of the tenant's own signing chain (its last certificate), None for the service's."""
        if self.keys.signing_chain is None:
            return None
        if self._anchor is None:
            from cryptography.hazmat.primitives import serialization

            from genguard.guard.provenance.keys import load_certificates

            data = self.keys.signing_chain.read_bytes()
            chain = load_certificates(data, str(self.keys.signing_chain))
            self._anchor = chain[-1].public_bytes(serialization.Encoding.PEM) if chain else b""
        return self._anchor or None


class TenantSpaces:
    """The open tenant spaces of one service, and its shared space (`shared`)."""

    def __init__(
        self, service_url: str | None, store: ServiceStore, shared: AuditStore, default_policy: str
    ) -> None:
        self.service_url = service_url
        self.store = store
        self.shared = shared
        self.default_policy = default_policy
        self._open: dict[str, TenantSpace] = {}
        self._timers: dict[str, CheckpointTimer] = {}
        self._lock = threading.Lock()
        self._running = False

    def get(self, tenant_id: str) -> TenantSpace:
        """The tenant's space, its store opened (and its space created, for a tenant made before spaces
        existed) on first use; its settings as the service database says now."""
        return self._space(self.store.tenant_by_id(tenant_id))

    def _space(self, tenant: TenantInfo) -> TenantSpace:
        tenant_id = tenant.id
        with self._lock:
            space = self._open.get(tenant_id)
            if space is None:
                place = tenant_spaces.layout(self.service_url, tenant_id)
                tenant_spaces.prepare(place)
                space = self._settled(tenant, place, tenant_spaces.open_store(place))
                if self._running:
                    self._timers[tenant_id] = CheckpointTimer(space.store).start()
            elif space.tenant != tenant:  # settings changed: pack, keys and signer are read again
                space = self._settled(tenant, space.layout, space.store)
            return space

    def _settled(self, tenant: TenantInfo, place: TenantSpaceLayout, store: AuditStore) -> TenantSpace:
        space = TenantSpace(tenant, place, store, tenant.policy or self.default_policy, _keys(place, tenant))
        self._open[tenant.id] = space
        return space

    def audit(self, tenant_id: str) -> AuditStore:
        """The tenant's audit store."""
        return self.get(tenant_id).store

    def all(self) -> list[TenantSpace]:
        """Every tenant's space, oldest tenant first (opened as needed)."""
        return [self._space(tenant) for tenant in self.store.list_tenants()]

    def stores(self) -> list[AuditStore]:
        """Every audit store the public lookups search: the shared space's, then each tenant's."""
        return [self.shared, *(space.store for space in self.all())]

    def verify_spaces(self) -> list[VerifySpace]:
        """The stores a public verification searches: the shared space first (where a verification that
        matches no tenant is recorded), then each tenant's, with the watermark key of each."""
        shared_key = watermark_key()
        spaces = [VerifySpace(self.shared, shared_key)]
        for space in self.all():
            spaces.append(VerifySpace(space.store, space.watermark_key() or shared_key))
        return spaces

    def trust_anchors_pem(self) -> bytes | None:
        """The configured trust anchors and the root of each tenant's own signing chain."""
        from genguard.guard.provenance import trust_anchors_from_config

        parts = [trust_anchors_from_config() or b""]
        parts += [space.trust_anchor_pem() or b"" for space in self.all()]
        joined = b"".join(part if part.endswith(b"\n") or not part else part + b"\n" for part in parts)
        return joined or None

    def start(self) -> None:
        """Run a checkpoint timer for every store opened now and later."""
        with self._lock:
            self._running = True
            for tenant_id, space in self._open.items():
                if tenant_id not in self._timers:
                    self._timers[tenant_id] = CheckpointTimer(space.store).start()

    def close(self) -> None:
        with self._lock:
            self._running = False
            for timer in self._timers.values():
                timer.stop()
            self._timers.clear()
            for space in self._open.values():
                space.store.close()
            self._open.clear()


def _keys(place: TenantSpaceLayout, tenant: TenantInfo) -> TenantKeys:
    return TenantKeys(
        signing_key=place.path(tenant.signing_key) if tenant.signing_key else None,
        signing_chain=place.path(tenant.signing_chain) if tenant.signing_chain else None,
        watermark_key=place.path(tenant.watermark_key) if tenant.watermark_key else None,
    )


__all__ = ["TenantKeys", "TenantSpace", "TenantSpaces"]


@lru_cache(maxsize=32)
def _pack_edits(path: str, mtime_ns: int, size: int) -> tuple[str, EditsSpec]:
    """(name, edits section) of the pack file at `path` as it was at (`mtime_ns`, `size`)."""
    from genguard.guard.policy import load_pack

    pack = load_pack(path)
    return pack.name, pack.edits
