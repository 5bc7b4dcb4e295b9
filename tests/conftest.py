"""Shared fixtures: a fresh SQLite URL, and a fresh uniquely named PostgreSQL database (dropped after).

PostgreSQL: 127.0.0.1:5432, user postgres, trust auth, maintenance database `test`. When it is down
the tests fail (never skip) with the command that starts it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from genguard.guard.policy import PolicyEngine, PolicyPack, load_pack

PG_HOST, PG_PORT, PG_USER, PG_MAINTENANCE_DB = "127.0.0.1", 5432, "postgres", "test"
PG_START_HINT = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An SQLAlchemy URL for a new SQLite file in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'audit.sqlite3'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An SQLAlchemy URL for a new, empty PostgreSQL database, dropped after the test."""
    import psycopg

    name = f"genguard_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(
            host=PG_HOST,
            port=PG_PORT,
            user=PG_USER,
            dbname=PG_MAINTENANCE_DB,
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable ({exc}); start it with: {PG_START_HINT}"
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache of embedded tiny models for the whole run (each is built once, then loaded)."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("genguard-session")
        patch.setenv("GENGUARD_CACHE", str(root / "cache"))
        yield root / "cache"


@pytest.fixture(scope="session")
def default_pack() -> PolicyPack:
    """The shipped default pack, loaded once (a pack is an immutable value)."""
    return load_pack("default")


@pytest.fixture(scope="session")
def default_engine(default_pack: PolicyPack) -> PolicyEngine:
    """An engine over the default pack with all its layers (the semantic encoder loads once)."""
    return PolicyEngine(default_pack)


@pytest.fixture(autouse=True)
def genguard_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own configuration folder (keys, default database), never the user's."""
    home = tmp_path / "genguard-home"
    monkeypatch.setenv("GENGUARD_HOME", str(home))
    monkeypatch.delenv("GENGUARD_DB", raising=False)
    monkeypatch.delenv("GENGUARD_WATERMARK_KEY", raising=False)
    return home


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    """This machine has 2 noisy cores; tests that touch torch use one thread."""
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
