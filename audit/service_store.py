"""The service's records: tenants, API keys and generation jobs, in the service database (migrations
0003, 0005, 0006).

An API key is shown once, when it is issued, and stored only as its SHA-256 (a key is 256 random bits,
so a plain hash is enough: nothing to brute-force). A key reads ``ggk.<key id>.<secret>``; the key id is
what the service records as a generation's actor, never the key. Keys have a role, may expire, and can
be revoked; a revoked or expired key authenticates nothing.

Jobs: `queued` -> `running` -> `done` / `blocked` / `invalid` / `failed`. A worker claims the oldest
queued job in a write transaction (so two workers, in one process or several, never run the same job).
A finished job's row keeps no prompt: the generation's audit record holds it, stored as the policy pack
says (in clear, hashed or not at all). At start, `recover_jobs` marks jobs left `running` by a stopped
service as failed (their generation may or may not have been recorded: running them again could record
it twice); queued ones simply wait.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self

from sqlalchemy import Connection, Engine, RowMapping, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from genguard.audit import db
from genguard.audit.chain import format_time, parse_time
from genguard.audit.job_inputs import drop_inputs, load_inputs, put_inputs
from genguard.audit.models import ApiKey, Job, Tenant
from genguard.guard.config import default_db_url
from genguard.guard.errors import BadInputError, NotFoundError

ROLES = ("generator", "reviewer", "auditor", "admin")
KEY_PREFIX = "ggk"
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
TENANT_ID = re.compile(r"tn_[0-9a-f]{12}")
TENANT_SETTINGS = ("policy", "signing_key", "signing_chain", "watermark_key")
JOB_STATES = ("queued", "running", "done", "blocked", "invalid", "failed")
FINISHED = frozenset(JOB_STATES[2:])
_BUSY_RETRIES = 6
_PROMPT_FIELDS = ("prompt", "negative_prompt")
_INTERRUPTED = "interrupted: the service stopped while this job ran; submit it again"


class KeyState(StrEnum):
    VALID = "valid"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True)
class TenantInfo:
    """A tenant. `policy`: its pack (a shipped name or a YAML path; None: the service's). `signing_key`,
    `signing_chain`: its C2PA signing identity's files, `watermark_key`: its watermark key's file (None:
    the service's configured ones); relative paths are inside the tenant's folder
    (genguard.audit.tenant_spaces). Paths only: no key material is ever stored here."""

    id: str
    name: str
    created_at: datetime
    policy: str | None = None
    signing_key: str | None = None
    signing_chain: str | None = None
    watermark_key: str | None = None


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key as stored: never the key itself."""

    id: str
    tenant_id: str
    tenant_name: str
    role: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> KeyState:
        if self.revoked_at is not None:
            return KeyState.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyState.EXPIRED
        return KeyState.VALID


@dataclass(frozen=True)
class IssuedKey:
    """A new key: `secret` is the key to hand over, shown once (its repr hides it)."""

    info: ApiKeyInfo
    secret: str

    def __repr__(self) -> str:
        return f"IssuedKey(info={self.info!r}, secret=<hidden>)"


@dataclass(frozen=True)
class KeyCheck:
    """What `authenticate` found: `key` is set for every state but UNKNOWN."""

    state: KeyState
    key: ApiKeyInfo | None


@dataclass(frozen=True)
class JobRecord:
    id: str
    tenant_id: str
    key_id: str
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    request: dict[str, Any]
    generation_id: str | None
    result: dict[str, Any] | None
    error: str | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _time(value: str | None) -> datetime | None:
    return None if value is None else parse_time(value)


class ServiceStore:
    """Tenants, keys and jobs. Open with `ServiceStore.open(url)` (the audit database's URL); thread-safe."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def open(cls, url: str | None = None) -> Self:
        """Connect and migrate to head; raises AuditUnavailableError when the database cannot be used."""
        parsed = db.normalise_url(url if url is not None else default_db_url())
        engine = db.create_audit_engine(parsed)
        try:
            for attempt in range(_BUSY_RETRIES + 1):
                try:
                    db.upgrade_to_head(engine)
                    break
                except SQLAlchemyError as exc:
                    if not db.is_sqlite_busy(exc) or attempt == _BUSY_RETRIES:
                        raise
                    time.sleep(0.05 * 2**attempt)
        except SQLAlchemyError as exc:
            engine.dispose()
            raise db.unavailable(parsed, exc) from exc
        return cls(engine)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ping(self) -> None:
        """Read one row: raises AuditUnavailableError when the database cannot be read."""
        with self._reading() as conn:
            conn.execute(select(Tenant.id).limit(1)).all()

    # ------------------------------------------------------------------------------ tenants

    def create_tenant(self, name: str, *, tenant_id: str | None = None, **settings: str | None) -> TenantInfo:
        """A new tenant; `settings`: `policy`, `signing_key`, `signing_chain`, `watermark_key` (see
        TenantInfo; None: the service's). `tenant_id`: the id to give it (default: a fresh random one;
        genguard.audit.tenant_spaces prepares the tenant's folder under this id first)."""
        if not isinstance(name, str) or not TENANT_NAME.match(name):
            raise BadInputError(
                f"tenant name: expected 1-64 lower-case letters, digits or '-' (not first), found {name!r}"
            )
        _check_settings(settings)
        new_id = tenant_id if tenant_id is not None else new_tenant_id()
        if not TENANT_ID.fullmatch(new_id):
            raise BadInputError(f"tenant id: expected 'tn_' and 12 hex digits, found {new_id!r}")
        tenant = TenantInfo(id=new_id, name=name, created_at=_now(), **settings)
        with self._writing() as conn:
            if conn.execute(select(Tenant.id).where(Tenant.name == name)).first() is not None:
                raise BadInputError(f"tenant name: expected a new name, found {name!r} already in use")
            conn.execute(
                insert(Tenant).values(
                    id=tenant.id, name=name, created_at=format_time(tenant.created_at), **settings
                )
            )
        return tenant

    def update_tenant(self, name: str, **settings: str | None) -> TenantInfo:
        """Change the tenant's `policy`, `signing_key`, `signing_chain` or `watermark_key` (None: the
        service's from now on); the generations already recorded keep what they were made with."""
        _check_settings(settings)
        tenant = self.tenant(name)
        if settings:
            with self._writing() as conn:
                conn.execute(update(Tenant).where(Tenant.id == tenant.id).values(**settings))
        return self.tenant(name)

    def list_tenants(self) -> list[TenantInfo]:
        with self._reading() as conn:
            rows = conn.execute(select(Tenant).order_by(Tenant.created_at, Tenant.name)).mappings().all()
        return [_tenant(row) for row in rows]

    def tenant_by_id(self, tenant_id: str) -> TenantInfo:
        """The tenant with this id; raises NotFoundError."""
        with self._reading() as conn:
            row = conn.execute(select(Tenant).where(Tenant.id == tenant_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"tenant id: expected an existing tenant, found {tenant_id!r}")
        return _tenant(row)

    def tenant(self, name: str) -> TenantInfo:
        """The tenant called `name`; raises NotFoundError."""
        for tenant in self.list_tenants():
            if tenant.name == name:
                return tenant
        raise NotFoundError(f"tenant: expected an existing tenant name, found {name!r}")

    # ---------------------------------------------------------------------------------- keys

    def issue_key(
        self, tenant_name: str, role: str, *, expires_at: datetime | None = None, label: str = ""
    ) -> IssuedKey:
        """A new key for the tenant with the role; the returned secret is not stored anywhere."""
        if role not in ROLES:
            raise BadInputError(f"role: expected one of {', '.join(ROLES)}, found {role!r}")
        now = _now()
        if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
            raise BadInputError(
                f"expires_at: expected a time-zone-aware time in the future, found {expires_at.isoformat()}"
            )
        if len(label) > 128:
            raise BadInputError(f"label: expected at most 128 characters, found {len(label)}")
        tenant = self.tenant(tenant_name)
        key_id = f"key_{secrets.token_hex(6)}"
        secret = f"{KEY_PREFIX}.{key_id}.{secrets.token_urlsafe(32)}"
        with self._writing() as conn:
            conn.execute(
                insert(ApiKey).values(
                    id=key_id,
                    tenant_id=tenant.id,
                    role=role,
                    key_hash=hash_key(secret),
                    label=label,
                    created_at=format_time(now),
                    expires_at=None if expires_at is None else format_time(expires_at),
                    revoked_at=None,
                )
            )
        info = ApiKeyInfo(key_id, tenant.id, tenant.name, role, label, now, expires_at, None)
        return IssuedKey(info=info, secret=secret)

    def list_keys(self, tenant_name: str | None = None) -> list[ApiKeyInfo]:
        query = select(ApiKey, Tenant.name.label("tenant_name")).join(Tenant, Tenant.id == ApiKey.tenant_id)
        if tenant_name is not None:
            query = query.where(Tenant.name == self.tenant(tenant_name).name)
        with self._reading() as conn:
            rows = conn.execute(query.order_by(ApiKey.created_at, ApiKey.id)).mappings().all()
        return [_key_info(row) for row in rows]

    def revoke_key(self, key_id: str) -> ApiKeyInfo:
        """Revoke the key (idempotent: a revoked key keeps its first revocation time)."""
        with self._writing() as conn:
            found = conn.execute(select(ApiKey.id).where(ApiKey.id == key_id)).first()
            if found is None:
                raise NotFoundError(f"key id: expected an existing key id, found {key_id!r}")
            conn.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=format_time(_now()))
            )
        return next(k for k in self.list_keys() if k.id == key_id)

    def authenticate(self, presented: str) -> KeyCheck:
        """The key a caller presented, checked: unknown, revoked, expired or valid."""
        parts = presented.split(".")
        if len(parts) != 3 or parts[0] != KEY_PREFIX or len(presented) > 200:
            return KeyCheck(KeyState.UNKNOWN, None)
        with self._reading() as conn:
            row = (
                conn.execute(
                    select(ApiKey, Tenant.name.label("tenant_name"))
                    .join(Tenant, Tenant.id == ApiKey.tenant_id)
                    .where(ApiKey.id == parts[1])
                )
                .mappings()
                .first()
            )
        if row is None or not hmac.compare_digest(row["key_hash"], hash_key(presented)):
            return KeyCheck(KeyState.UNKNOWN, None)
        info = _key_info(row)
        return KeyCheck(info.state(_now()), info)

    # ---------------------------------------------------------------------------------- jobs

    def create_job(
        self,
        tenant_id: str,
        key_id: str,
        request: dict[str, Any],
        inputs: Mapping[str, bytes] | None = None,
    ) -> JobRecord:
        """Queue a job. `inputs`: an edit's files ("image", "mask"), stored sealed with the job
        (genguard.audit.job_inputs) until it finishes."""
        job_id = f"job_{secrets.token_hex(10)}"
        with self._writing() as conn:
            conn.execute(
                insert(Job).values(
                    id=job_id,
                    tenant_id=tenant_id,
                    key_id=key_id,
                    status="queued",
                    created_at=format_time(_now()),
                    request_json=json.dumps(request, sort_keys=True),
                )
            )
            if inputs:
                put_inputs(conn, job_id, inputs)
        job = self.get_job(job_id)
        assert job is not None
        return job

    def get_job(self, job_id: str, tenant_id: str | None = None) -> JobRecord | None:
        """The job; with `tenant_id`, only when it belongs to that tenant (else None, as if absent)."""
        query = select(Job).where(Job.id == job_id)
        if tenant_id is not None:
            query = query.where(Job.tenant_id == tenant_id)
        with self._reading() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _job(row)

    def job_for_generation(self, generation_id: str, tenant_id: str) -> JobRecord | None:
        with self._reading() as conn:
            row = (
                conn.execute(
                    select(Job).where(Job.generation_id == generation_id, Job.tenant_id == tenant_id)
                )
                .mappings()
                .first()
            )
        return None if row is None else _job(row)

    def job_inputs(self, job_id: str) -> dict[str, bytes]:
        """The job's edit files, opened ("image", "mask"; empty when it holds none)."""
        with self._reading() as conn:
            return load_inputs(conn, job_id)

    def claim_next_job(self) -> JobRecord | None:
        """Mark the oldest queued job running and return it (None: nothing queued)."""
        with self._writing() as conn:
            job_id = conn.execute(
                select(Job.id).where(Job.status == "queued").order_by(Job.created_at, Job.id).limit(1)
            ).scalar()
            if job_id is None:
                return None
            claimed = conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(status="running", started_at=format_time(_now()))
            )
            if claimed.rowcount != 1:
                return None
        return self.get_job(job_id)

    def finish_job(
        self,
        job_id: str,
        status: str,
        *,
        generation_id: str | None = None,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        if status not in FINISHED:
            raise BadInputError(f"job status: expected one of {sorted(FINISHED)}, found {status!r}")
        with self._writing() as conn:
            if not _finish(conn, job_id, status, generation_id, result, error):
                raise NotFoundError(f"job id: expected an existing job, found {job_id!r}")

    def requeue_job(self, job_id: str) -> bool:
        """Put a `running` job back to `queued` (a stopping worker's job that had not started sampling,
        so nothing of it is recorded); False when it was not running."""
        with self._writing() as conn:
            moved = conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running")
                .values(status="queued", started_at=None)
            )
        return bool(moved.rowcount == 1)

    def recover_jobs(self) -> int:
        """Mark jobs left `running` by a stopped service failed; returns how many."""
        with self._writing() as conn:
            running = conn.execute(select(Job.id).where(Job.status == "running")).scalars().all()
            for job_id in running:
                _finish(conn, job_id, "failed", None, None, _INTERRUPTED)
        return len(running)

    def count_jobs(self, status: str) -> int:
        with self._reading() as conn:
            return len(conn.execute(select(Job.id).where(Job.status == status)).all())

    # ------------------------------------------------------------------------------- plumbing

    def _writing(self) -> Any:
        return _guarded(self._engine, db.write_transaction)

    def _reading(self) -> Any:
        return _guarded(self._engine, db.read_transaction)


class _guarded:
    """A transaction whose driver errors become AuditUnavailableError (the database named, no secrets)."""

    def __init__(self, engine: Engine, opener: Any) -> None:
        self._engine = engine
        self._context = opener(engine)

    def __enter__(self) -> Any:
        try:
            return self._context.__enter__()
        except SQLAlchemyError as exc:
            raise db.unavailable(self._engine.url, exc) from exc

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._context.__exit__(*exc_info)
        except SQLAlchemyError as exc:
            raise db.unavailable(self._engine.url, exc) from exc
        if isinstance(exc_info[1], SQLAlchemyError):
            raise db.unavailable(self._engine.url, exc_info[1]) from exc_info[1]


def _finish(
    conn: Connection,
    job_id: str,
    status: str,
    generation_id: str | None,
    result: dict[str, Any] | None,
    error: str | None,
) -> bool:
    """End the job (False: no such job). Its prompts leave the row: the generation's audit record keeps
    them as the pack says (in clear, hashed or not at all); its sealed edit files are deleted."""
    asked = conn.execute(select(Job.request_json).where(Job.id == job_id)).scalar()
    if asked is None:
        return False
    kept = {k: v for k, v in json.loads(asked).items() if k not in _PROMPT_FIELDS}
    drop_inputs(conn, job_id)
    conn.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            request_json=json.dumps({**kept, "prompts_removed": True}, sort_keys=True),
            status=status,
            finished_at=format_time(_now()),
            generation_id=generation_id,
            result_json=None if result is None else json.dumps(result, sort_keys=True),
            error=error,
        )
    )
    return True


def new_tenant_id() -> str:
    return f"tn_{secrets.token_hex(6)}"


def _check_settings(settings: dict[str, str | None]) -> None:
    for name, value in settings.items():
        if name not in TENANT_SETTINGS:
            raise BadInputError(
                f"tenant setting: expected one of {', '.join(TENANT_SETTINGS)}, found {name!r}"
            )
        if value is not None and (not isinstance(value, str) or not value or len(value) > 1024):
            raise BadInputError(
                f"{name}: expected a non-empty path or name of at most 1024 characters, found {value!r}"
            )


def _tenant(row: RowMapping) -> TenantInfo:
    return TenantInfo(
        id=row["id"],
        name=row["name"],
        created_at=parse_time(row["created_at"]),
        **{name: row[name] for name in TENANT_SETTINGS},
    )


def _key_info(row: RowMapping) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row["id"],
        tenant_id=row["tenant_id"],
        tenant_name=row["tenant_name"],
        role=row["role"],
        label=row["label"],
        created_at=parse_time(row["created_at"]),
        expires_at=_time(row["expires_at"]),
        revoked_at=_time(row["revoked_at"]),
    )


def _job(row: RowMapping) -> JobRecord:
    return JobRecord(
        id=row["id"],
        tenant_id=row["tenant_id"],
        key_id=row["key_id"],
        status=row["status"],
        created_at=parse_time(row["created_at"]),
        started_at=_time(row["started_at"]),
        finished_at=_time(row["finished_at"]),
        request=json.loads(row["request_json"]),
        generation_id=row["generation_id"],
        result=None if row["result_json"] is None else json.loads(row["result_json"]),
        error=row["error"],
    )


__all__ = [
    "FINISHED",
    "JOB_STATES",
    "ROLES",
    "TENANT_SETTINGS",
    "ApiKeyInfo",
    "IssuedKey",
    "JobRecord",
    "KeyCheck",
    "KeyState",
    "ServiceStore",
    "TenantInfo",
    "hash_key",
    "new_tenant_id",
]
