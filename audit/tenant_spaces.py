"""A service tenant's audit space: its own chain, log key, checkpoints and prompt key.

The service database (`genguard serve --db`) holds the control plane: tenants, API keys, jobs
(genguard.audit.service_store). Each tenant's generations, reviews and verifications are recorded in
the tenant's own audit database, so that its auditor verifies its chain with that database and its
checkpoint folder alone, and sees no other tenant's rows, sizes or times.

<service home> is the folder of the service's SQLite file, else the configuration folder
(GENGUARD_HOME). The tenant's folder, `<service home>/tenants/<tenant id>/` (0700), holds:

    audit.sqlite3      the tenant's audit database (SQLite service database only; 0600)
    log.ed25519        the key that signs the tenant's log batches (0600; genguard.audit.log_key)
    checkpoints/       its automatic checkpoints: checkpoints/<log id>/, with the log key and the
                       signing start pinned beside them (genguard.audit.checkpoint)
    c2pa/, watermark.key   its own signing chain and watermark key, when it has them (`own_keys`)

With a PostgreSQL service database the tenant's audit tables live in the schema `genguard_t_<12 hex>`
of the same database (its migrations, `alembic_version` included, run inside it): the tenant's URL is
the service's with ``options=-csearch_path=<schema>``. The checkpoints are signed with the service's
checkpoint key (the operator vouches for every tenant's log); the log key is the tenant's.

A database that held generations before tenants had spaces keeps them in its own audit tables (the
"shared space"): they stay where they are, verified by `genguard audit verify --db SERVICE_DB`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL

from genguard.audit import db
from genguard.audit.checkpoint import AutoCheckpoints
from genguard.audit.log_key import LocalLogSigner, ed25519_key_file, public_key_pem, raw_public_key
from genguard.audit.service_store import TENANT_ID, ServiceStore, TenantInfo, new_tenant_id
from genguard.audit.store import AuditStore
from genguard.guard.config import default_db_url, genguard_home, private_dir, write_secret_file
from genguard.guard.errors import AuditUnavailableError, BadInputError

TENANTS_DIR = "tenants"
AUDIT_FILE = "audit.sqlite3"
LOG_KEY_FILE = "log.ed25519"
LOG_PUBLIC_KEY_FILE = "log-key.pem"
CHECKPOINTS_DIR = "checkpoints"
OWN_SIGNING_DIR = "c2pa"
OWN_WATERMARK_KEY = "watermark.key"
SCHEMA_PREFIX = "genguard_t_"


@dataclass(frozen=True)
class TenantSpaceLayout:
    """Where a tenant's audit space lives. `audit_url` may hold the database password: use
    `audit_url_shown` in messages."""

    tenant_id: str
    folder: Path
    audit_url: str
    schema: str | None  # PostgreSQL: the tenant's schema; None for SQLite

    @property
    def audit_url_shown(self) -> str:
        return db.describe(db.normalise_url(self.audit_url))

    @property
    def log_key(self) -> Path:
        return self.folder / LOG_KEY_FILE

    @property
    def log_public_key(self) -> Path:
        """The log key's public half (PEM), for the tenant's auditor (`audit verify --log-public-key`)."""
        return self.folder / LOG_PUBLIC_KEY_FILE

    @property
    def checkpoints(self) -> Path:
        """The base folder of the tenant's automatic checkpoints (one folder per log id below it)."""
        return self.folder / CHECKPOINTS_DIR

    def path(self, value: str) -> Path:
        """A tenant setting's path: a relative one is inside the tenant's folder."""
        given = Path(value).expanduser()
        return given if given.is_absolute() else self.folder / given


def service_home(service_url: str | None) -> Path:
    """The folder of the service's SQLite file, else the configuration folder."""
    parsed = db.normalise_url(service_url if service_url is not None else default_db_url())
    path = db.sqlite_file(parsed)
    return path.resolve().parent if path is not None else genguard_home()


def layout(service_url: str | None, tenant_id: str) -> TenantSpaceLayout:
    """The tenant's space for the service database `service_url` (None: the configured one)."""
    if not isinstance(tenant_id, str) or not TENANT_ID.fullmatch(tenant_id):
        raise BadInputError(f"tenant id: expected 'tn_' and 12 hex digits, found {tenant_id!r}")
    parsed = db.normalise_url(service_url if service_url is not None else default_db_url())
    folder = service_home(service_url) / TENANTS_DIR / tenant_id
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        url: URL = parsed.set(database=str(folder / AUDIT_FILE)).difference_update_query(["uri"])
        return TenantSpaceLayout(tenant_id, folder, url.render_as_string(hide_password=False), None)
    if backend == "postgresql":
        schema = SCHEMA_PREFIX + tenant_id.removeprefix("tn_")
        url = parsed.update_query_dict({"options": f"-csearch_path={schema}"})
        return TenantSpaceLayout(tenant_id, folder, url.render_as_string(hide_password=False), schema)
    raise BadInputError(
        f"service database {db.describe(parsed)}: expected sqlite or postgresql for tenant spaces, "
        f"found {backend}"
    )


def prepare(space: TenantSpaceLayout) -> None:
    """Create the tenant's folder (0700), its log key (0600) and public key file, and on PostgreSQL
    its schema. Idempotent: what exists is kept."""
    private_dir(space.folder)
    key = ed25519_key_file(
        space.log_key, "tenant log key", create=True, missing="it is made when the tenant is created"
    )
    if not space.log_public_key.exists():
        space.log_public_key.write_text(public_key_pem(raw_public_key(key.public_key())), encoding="ascii")
    if space.schema is None:
        return
    service = db.normalise_url(space.audit_url).difference_update_query(["options"])
    engine = db.create_audit_engine(service)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{space.schema}"'))
    except db.SQLAlchemyError as exc:
        raise db.unavailable(service, exc) from exc
    finally:
        engine.dispose()


def open_store(
    space: TenantSpaceLayout, *, read_only: bool = False, auto_checkpoints: bool = True
) -> AuditStore:
    """The tenant's audit store: its database (migrated to head unless `read_only`), signing with the
    tenant's log key, writing automatic checkpoints to the tenant's folder (the periods of
    `AutoCheckpoints.from_env`). The space must exist (`prepare`)."""
    if not space.log_key.exists():
        raise AuditUnavailableError(
            f"tenant {space.tenant_id}: expected its audit space in {space.folder}, found no log key there"
        )
    signer = LocalLogSigner(
        ed25519_key_file(
            space.log_key, "tenant log key", create=False, missing="it is made when the tenant is created"
        )
    )
    policy = (
        dataclasses.replace(AutoCheckpoints.from_env(), base=space.checkpoints) if auto_checkpoints else None
    )
    return AuditStore.open(space.audit_url, read_only=read_only, log_signer=signer, auto_checkpoints=policy)


def open_tenant_store(service_url: str | None, tenant_id: str, *, read_only: bool = False) -> AuditStore:
    """The audit store of tenant `tenant_id` of the service database `service_url` (`open_store`)."""
    return open_store(layout(service_url, tenant_id), read_only=read_only)


@dataclass(frozen=True)
class OwnKeys:
    """Paths (relative to the tenant's folder) of keys made for one tenant."""

    signing_key: str
    signing_chain: str
    watermark_key: str


def create_own_keys(space: TenantSpaceLayout, organisation: str, *, signing: bool = True) -> OwnKeys:
    """A fresh watermark key (32 random bytes, 0600) and, when `signing`, a development signing chain
    (as `genguard keys init` makes, for `organisation`) in the tenant's folder. Refuses to replace any."""
    from genguard.guard.provenance.keys import SIGNER_CHAIN, SIGNER_KEY, init_keys

    private_dir(space.folder)
    if signing:
        init_keys(space.folder / OWN_SIGNING_DIR, organisation=organisation)
    watermark = space.folder / OWN_WATERMARK_KEY
    try:
        write_secret_file(watermark, os.urandom(32))
    except FileExistsError:
        raise BadInputError(f"{watermark}: already exists; expected no watermark key there") from None
    return OwnKeys(
        signing_key=f"{OWN_SIGNING_DIR}/{SIGNER_KEY}",
        signing_chain=f"{OWN_SIGNING_DIR}/{SIGNER_CHAIN}",
        watermark_key=OWN_WATERMARK_KEY,
    )


def read_watermark_key(path: Path) -> bytes:
    """A tenant's watermark key file: at least 16 bytes (BadInputError naming the file otherwise)."""
    from genguard.audit.log_key import read_bounded

    data = read_bounded(path, "tenant watermark key", 4096)
    if len(data) < 16:
        raise BadInputError(f"{path}: expected a watermark key of at least 16 bytes, found {len(data)}")
    return data


def create_tenant(
    store: ServiceStore,
    service_url: str | None,
    name: str,
    *,
    policy: str | None = None,
    own_keys: bool = False,
    signing_key: Path | None = None,
    signing_chain: Path | None = None,
) -> TenantInfo:
    """Create tenant `name` with its audit space (folder, log key, database or schema, migrated).

    `policy`: its pack (a shipped name or a YAML path, checked by loading it; None: the service's).
    `own_keys`: a fresh watermark key, and a development signing chain for an organisation named after
    the tenant unless `signing_key` and `signing_chain` name an organisation's own (checked by loading
    them). Without either the service's configured keys are used."""
    from genguard.guard.errors import NotFoundError

    try:
        store.tenant(name)
    except NotFoundError:
        pass
    else:
        raise BadInputError(f"tenant name: expected a new name, found {name!r} already in use")
    if (signing_key is None) != (signing_chain is None):
        raise BadInputError(
            "signing_chain: expected both a signing key and its chain, or neither, found "
            + ("only the key" if signing_key is not None else "only the chain")
        )
    settings: dict[str, str | None] = {"policy": check_policy(policy) if policy is not None else None}
    if signing_key is not None and signing_chain is not None:
        settings["signing_key"], settings["signing_chain"] = check_signing(signing_key, signing_chain)
    tenant_id = new_tenant_id()
    space = layout(service_url, tenant_id)
    prepare(space)
    if own_keys:
        made = create_own_keys(space, name, signing=signing_key is None)
        settings["watermark_key"] = made.watermark_key
        if signing_key is None:
            settings["signing_key"], settings["signing_chain"] = made.signing_key, made.signing_chain
    open_store(space).close()  # its schema at head now: its auditor can read it from the start
    return store.create_tenant(name, tenant_id=tenant_id, **settings)


def set_policy(store: ServiceStore, name: str, policy: str | None) -> TenantInfo:
    """Give tenant `name` the pack `policy` (checked by loading it; None: the service's) for its next jobs."""
    return store.update_tenant(name, policy=check_policy(policy) if policy is not None else None)


def check_policy(policy: str) -> str:
    """A pack name, or a YAML path made absolute, once `load_pack` accepts it (BadInputError otherwise)."""
    from genguard.guard.policy import load_pack

    load_pack(policy)
    path = Path(policy).expanduser()
    return str(path.resolve()) if path.suffix.lower() in (".yaml", ".yml") and path.exists() else policy


def check_signing(key: Path, chain: Path) -> tuple[str, str]:
    """The key and chain paths, absolute, once they load as a signer (BadInputError naming the file)."""
    from genguard.guard.provenance.keys import LocalKeySigner

    LocalKeySigner.from_files(key.expanduser(), chain.expanduser())
    return str(key.expanduser().resolve()), str(chain.expanduser().resolve())


__all__ = [
    "OwnKeys",
    "TenantSpaceLayout",
    "check_policy",
    "check_signing",
    "create_own_keys",
    "create_tenant",
    "layout",
    "open_store",
    "open_tenant_store",
    "prepare",
    "read_watermark_key",
    "service_home",
    "set_policy",
]
