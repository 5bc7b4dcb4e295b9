"""Engines, connection settings and migrations for the audit database (internal to audit/).

SQLite: WAL, a busy timeout, foreign keys on, and write transactions opened with BEGIN IMMEDIATE
so that two writers never both read the chain head and then race to append (pysqlite's own
BEGIN handling is switched off, following SQLAlchemy's documented recipe for SQLite transactions).
PostgreSQL (psycopg 3): a short connect timeout so that an unreachable server fails fast.

SQLite durability: ``synchronous = FULL`` by default, so that a committed record (and so every image
that left) survives a power loss: each commit waits for the disk (fdatasync of the WAL). The URL
option ``?synchronous=normal`` trades that for speed, explicitly: WAL + NORMAL survives the
application crashing, but the last commits before a power loss or an OS crash may be lost.

Read-only opening (`read_only=True`, an auditor's evidence copy): SQLite is opened by URI with
``mode=ro`` (SQLite itself refuses every write, whoever runs it, root included); a file whose mode has no
write bit and that has no ``-wal`` file beside it is opened ``immutable=1`` too (no lock, no ``-shm`` file:
it works in a read-only folder). PostgreSQL sessions get ``default_transaction_read_only``.

PostgreSQL connection options: the URL's libpq ``options`` (e.g. ``-csearch_path=genguard_t_...``, how a
tenant's audit space lives in its own schema, genguard.audit.tenant_spaces) are passed on with genguard's own.

PostgreSQL lock timeout: a writer waits at most ``PG_LOCK_TIMEOUT_S`` (URL option ``?lock_timeout=S``)
for a lock (the chain head, the migration lock), then fails closed instead of hanging.

A new SQLite file is created with mode 0600 (its ``-wal`` / ``-shm`` files take the same mode): it holds
every prompt and the prompt-HMAC key.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from genguard.guard.errors import AuditUnavailableError, BadInputError

HEAD_REVISION = "0006"  # tests check that this is the head of audit/migrations/versions
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
CONNECT_TIMEOUT_S = 5
SQLITE_BUSY_TIMEOUT_S = 30.0
SQLITE_SYNCHRONOUS = ("full", "normal")  # the URL option ?synchronous=...; the first is the default
PG_LOCK_TIMEOUT_S = 30.0  # the URL option ?lock_timeout=SECONDS overrides it
# Drivers SQLAlchemy imports for a bare dialect name, and the package a user installs for each.
_DRIVER_PACKAGES = {
    "MySQLdb": "mysqlclient",
    "psycopg2": "psycopg2",
    "pymysql": "PyMySQL",
    "cx_Oracle": "cx_Oracle",
}
# pg_advisory_lock key held while migrating: "genguard" in ASCII, so that it says whose lock it is
_PG_MIGRATION_LOCK = 0x67656E6775617264
_WRITE = "genguard_write"
# Alembic keeps the running migration in module globals (alembic.context, alembic.op): two threads
# migrating at once would run each other's operations on each other's connections.
_ALEMBIC_LOCK = threading.Lock()


def normalise_url(url: str | URL) -> URL:
    """Parse a database URL; plain ``postgresql://`` (and ``postgres://``) mean psycopg 3."""
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1) if isinstance(url, str) else url)
    except ArgumentError as exc:
        raise BadInputError(
            f"audit database URL: expected an SQLAlchemy URL, found {str(url)!r} ({exc})"
        ) from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def describe(url: URL) -> str:
    """The URL with any password masked, for messages."""
    return url.render_as_string(hide_password=True)


def unavailable(url: URL, exc: BaseException) -> AuditUnavailableError:
    """An AuditUnavailableError naming the database and the driver's first line of explanation."""
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    cause = (str(original).strip().splitlines() or [type(original).__name__])[0]
    return AuditUnavailableError(f"audit database {describe(url)} is unavailable: {cause}")


def is_sqlite_busy(exc: BaseException) -> bool:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return isinstance(orig, sqlite3.OperationalError) and "locked" in str(orig)


def sqlite_file(url: URL) -> Path | None:
    """The database file of an SQLite URL (None for other backends and in-memory databases)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if str(url.query.get("uri", "")).lower() in ("true", "1"):
        return None  # an SQLite URI (file:...?mode=ro): the caller chose its own opening mode
    return Path(url.database)


def read_only_file(path: Path) -> bool:
    """True when an existing database file must not be written: its mode has no write bit (an evidence
    copy made read-only: root would otherwise ignore the mode) or this user may not write it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    return mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) == 0 or not os.access(path, os.W_OK)


def create_sqlite_file(path: Path) -> None:
    """Create an empty database file with mode 0600 (its -wal/-shm files inherit the mode)."""
    if path.exists():
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass  # another opener created it first


def create_audit_engine(url: URL, read_only: bool = False) -> Engine:
    """An engine with genguard's connection settings for the URL's backend; `read_only`: no writes."""
    connect_args: dict[str, Any] = {}
    synchronous = SQLITE_SYNCHRONOUS[0]
    creator = None
    if url.get_backend_name() == "sqlite":
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_S
        url, synchronous = _sqlite_synchronous(url)
        path = sqlite_file(url)
        if read_only and path is not None:
            creator = _read_only_sqlite(path)
        elif path is not None and path.parent.is_dir():
            create_sqlite_file(path)  # 0600 before SQLite creates it 0644
    elif url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        url, lock_timeout = _pg_lock_timeout(url)
        options = [f"-c lock_timeout={int(lock_timeout * 1000)}"]
        asked = url.query.get("options")  # libpq's own (a tenant space's search_path): kept, not replaced
        if isinstance(asked, str) and asked.strip():
            options.insert(0, asked.strip())
        url = url.difference_update_query(["options"])
        if read_only:
            options.append("-c default_transaction_read_only=on")
        connect_args["options"] = " ".join(options)
    try:
        if creator is not None:
            engine = create_engine(url, creator=creator, pool_pre_ping=False)
        else:
            engine = create_engine(url, connect_args=connect_args, pool_pre_ping=False)
    except (NoSuchModuleError, ArgumentError) as exc:
        raise BadInputError(f"audit database URL {describe(url)}: unsupported ({exc})") from None
    except ImportError as exc:  # the dialect is known but its driver is not installed
        module = (exc.name or str(exc)).split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module)
        raise BadInputError(
            f"audit database URL {describe(url)}: expected its driver {module!r} to be installed "
            f"(pip install {package}), found it missing; genguard is tested on sqlite:// and postgresql://"
        ) from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, synchronous, read_only)
    return engine


def _read_only_sqlite(path: Path) -> Any:
    """A connection factory that opens the file read-only by URI (see the module docstring)."""
    wal = path.with_name(path.name + "-wal")
    immutable = read_only_file(path) and not (wal.exists() and wal.stat().st_size > 0)
    query = "mode=ro" + ("&immutable=1" if immutable else "")
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?{query}"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False)

    return connect


def _pg_lock_timeout(url: URL) -> tuple[URL, float]:
    """The URL without genguard's ``lock_timeout`` option, and the option's value in seconds."""
    value = url.query.get("lock_timeout", str(PG_LOCK_TIMEOUT_S))
    try:
        seconds = float(value) if isinstance(value, str) else -1.0
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise BadInputError(
            f"audit database URL {describe(url)}: lock_timeout expected seconds in (0, 3600], found {value!r}"
        )
    return url.difference_update_query(["lock_timeout"]), seconds


def _sqlite_synchronous(url: URL) -> tuple[URL, str]:
    """The URL without genguard's ``synchronous`` option, and the option's value (default: full)."""
    value = url.query.get("synchronous", SQLITE_SYNCHRONOUS[0])
    if not isinstance(value, str) or value.lower() not in SQLITE_SYNCHRONOUS:
        raise BadInputError(
            f"audit database URL {describe(url)}: synchronous expected one of {SQLITE_SYNCHRONOUS}, "
            f"found {value!r}"
        )
    return url.difference_update_query(["synchronous"]), value.lower()


def _configure_sqlite(engine: Engine, synchronous: str, read_only: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN itself (documented pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if engine.url.database not in (None, "", ":memory:") and not read_only:
                cursor.execute("PRAGMA journal_mode = WAL")
            # In WAL mode FULL syncs the log on every commit: a committed audit record survives power
            # loss. NORMAL (asked for in the URL) syncs only at checkpoints: it survives crashes only.
            cursor.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front; readers get a snapshot without blocking writers.
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the database's write lock from its start on SQLite; commits or rolls back."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


@contextmanager
def read_transaction(engine: Engine, snapshot: bool = False) -> Iterator[Connection]:
    """A read transaction; `snapshot` asks PostgreSQL for one consistent view (SQLite's is always one)."""
    with engine.connect() as conn:
        if snapshot and engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def current_revision(conn: Connection) -> str | None:
    """The schema's Alembic revision, or None for a database genguard has never opened."""
    from sqlalchemy import inspect

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()


def upgrade_to_head(engine: Engine) -> None:
    """Apply the migrations (``alembic upgrade head``) unless the schema is already at head.

    Concurrent openers: on PostgreSQL an advisory lock is held around the upgrade; on SQLite the
    upgrade runs in a BEGIN IMMEDIATE transaction, so a second opener waits and then finds head.
    Within one process a lock serialises Alembic itself, which is not thread-safe.
    """
    with engine.connect() as conn:
        if current_revision(conn) == HEAD_REVISION:
            conn.rollback()
            return
        conn.rollback()
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with _ALEMBIC_LOCK, engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            conn.commit()
        try:
            conn.execution_options(**{_WRITE: True})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
        finally:
            if engine.dialect.name == "postgresql":
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK})
                conn.commit()


_PG_WRITES = {"generations": "INSERT", "images": "INSERT", "audit_log": "INSERT", "chain_head": "UPDATE"}


def check_writable(engine: Engine) -> None:
    """Fail now, not at the first record, when the database cannot be written (e.g. a read-only file,
    a role without INSERT); raises SQLAlchemyError or ReadOnlyDatabase."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{_WRITE: True})
            transaction = conn.begin()
            try:
                # BEGIN IMMEDIATE alone can succeed on a read-only file: a write must be attempted.
                conn.execute(text("UPDATE chain_head SET seq = seq WHERE id = 1"))
            finally:
                transaction.rollback()
        elif engine.dialect.name == "postgresql":
            missing = [
                f"{privilege} on {table}"
                for table, privilege in _PG_WRITES.items()
                if not conn.execute(
                    text("SELECT has_table_privilege(:table, :privilege)"),
                    {"table": table, "privilege": privilege},
                ).scalar_one()
            ]
            read_only = conn.execute(text("SHOW transaction_read_only")).scalar_one() == "on"
            conn.rollback()
            if missing or read_only:
                raise ReadOnlyDatabase(
                    "read-only transactions" if read_only else f"this role lacks {', '.join(missing)}"
                )
        else:
            conn.execute(text("SELECT 1"))
            conn.rollback()


class ReadOnlyDatabase(Exception):
    """The database can be read but not written (its reason is the message)."""


def is_read_only_error(exc: BaseException) -> bool:
    """True when a driver error says the database refuses writes (a read-only file or role)."""
    if isinstance(exc, ReadOnlyDatabase):
        return True
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    message = str(orig).lower()
    return "readonly database" in message or "read-only" in message or "permission denied" in message


__all__ = [
    "HEAD_REVISION",
    "PG_LOCK_TIMEOUT_S",
    "ReadOnlyDatabase",
    "SQLAlchemyError",
    "check_writable",
    "create_audit_engine",
    "create_sqlite_file",
    "describe",
    "is_read_only_error",
    "is_sqlite_busy",
    "normalise_url",
    "read_only_file",
    "read_transaction",
    "sqlite_file",
    "unavailable",
    "upgrade_to_head",
    "write_transaction",
]
