"""Evidence copies (a read-only SQLite file, a SELECT-only PostgreSQL role), file permissions, a missing
driver and PostgreSQL's lock timeout: real databases, the real CLI entry point."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from genguard.audit import AuditStore
from genguard.audit.checkpoint import create_checkpoint, public_key_pem
from genguard.guard.config import ExposedFileWarning, watermark_key
from genguard.guard.errors import AuditUnavailableError, BadInputError
from genguard.guard.quarantine import QuarantineVault
from genguard.pipeline.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_audit_store import make_record

READ_COMMANDS = (
    ["audit", "list"],
    ["audit", "list", "--json"],
    ["audit", "show", "gen-000002"],
    ["audit", "verify"],
    ["report", "bias", "--json"],
    ["report", "safety", "--json"],
)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def fill(url: str, checkpoint_dir: Path) -> tuple[Path, Path]:
    """Two generations and a signed checkpoint; returns the checkpoint and its public key files."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    with AuditStore.open(url) as store:
        store.record_generation(make_record(1))
        store.record_generation(make_record(2, images=1))
        checkpoint = create_checkpoint(store, key)
    (checkpoint_dir / "log.checkpoint").write_text(checkpoint.to_text(), encoding="utf-8")
    (checkpoint_dir / "log.pub").write_text(public_key_pem(key), encoding="utf-8")
    return checkpoint_dir / "log.checkpoint", checkpoint_dir / "log.pub"


def photo_png(path: Path) -> Path:
    from PIL import Image

    from tests._photos import photographs

    Image.fromarray(photographs(256, ("coffee",))["coffee"]).save(path)
    return path


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def evidence(tmp_path: Path) -> Iterator[tuple[str, Path, Path, Path]]:
    """An SQLite evidence copy: file 0444 in a folder 0555 (restored after, so tmp_path can be removed)."""
    work = tmp_path / "work"
    work.mkdir()
    checkpoint, public = fill(f"sqlite:///{work / 'audit.sqlite3'}", tmp_path)
    folder = tmp_path / "evidence"
    folder.mkdir()
    shutil.copy(work / "audit.sqlite3", folder / "audit.sqlite3")
    os.chmod(folder / "audit.sqlite3", 0o444)
    os.chmod(folder, 0o555)
    try:
        yield f"sqlite:///{folder / 'audit.sqlite3'}", folder, checkpoint, public
    finally:
        os.chmod(folder, 0o755)


def test_every_read_command_works_on_a_read_only_sqlite_copy(
    evidence: tuple[str, Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, folder, checkpoint, public = evidence
    before = digest(folder)
    for args in READ_COMMANDS:
        code, out, err = run_cli([*args, "--db", url], capsys)
        assert code == 0, (args, err)
        assert out.strip(), args
    code, out, err = run_cli(
        ["audit", "verify", "--checkpoint", str(checkpoint), "--public-key", str(public), "--db", url], capsys
    )
    assert code == 0 and "still holds" in out, err
    code, out, err = run_cli(["audit", "list", "--read-only", "--db", url], capsys)
    assert code == 0 and "gen-000001" in out

    image = photo_png(tmp_path / "coffee.png")
    code, out, err = run_cli(["verify", str(image), "--no-record", "--db", url], capsys)
    assert code == 1 and "unknown" in out, err  # a photo we never made: verified, nothing recorded
    # Recording asked for on a read-only store: the report is printed, then exit 4 saying why.
    code, out, err = run_cli(["verify", str(image), "--db", url], capsys)
    assert code == 4 and "coffee.png: unknown" in out
    assert "could not be recorded" in err and "read-only" in err
    assert digest(folder) == before  # not a byte changed, no -wal / -shm file left beside it


def test_a_writer_refuses_a_read_only_file_even_as_root(
    evidence: tuple[str, Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url = evidence[0]
    with pytest.raises(AuditUnavailableError, match=r"expected a writable file, found mode 0444"):
        AuditStore.open(url)
    with AuditStore.open(url, allow_read_only=True) as store:
        assert store.read_only
        with pytest.raises(AuditUnavailableError, match="not recorded.*opened read-only"):
            store.append_event("test.event", {"a": 1})
    code, _, err = run_cli(["audit", "checkpoint", "--db", url], capsys)
    assert code == 4 and "0444" in err  # a command that writes fails closed


def test_read_only_flag_on_a_writable_file_writes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    fill(url, tmp_path)
    before = (tmp_path / "audit.sqlite3").read_bytes()
    with AuditStore.open(url, read_only=True) as store:
        assert store.read_only and len(store.list_generations()) == 2
        with pytest.raises(AuditUnavailableError):
            store.append_event("test.event", {"a": 1})
        assert store.verify_chain().ok
    assert (tmp_path / "audit.sqlite3").read_bytes() == before
    with pytest.raises(AuditUnavailableError, match="expected an existing database file"):
        AuditStore.open(f"sqlite:///{tmp_path / 'none.sqlite3'}", read_only=True)


@pytest.fixture
def select_only_url(postgres_url: str) -> Iterator[str]:
    """A URL for a new role that may log in to `postgres_url`'s database (grants are the test's)."""
    role = f"auditor_{uuid.uuid4().hex[:10]}"
    parsed = make_url(postgres_url)
    with psycopg.connect(_libpq(postgres_url), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        try:
            yield parsed.set(username=role).render_as_string(hide_password=False)
        finally:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
            )
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_every_read_command_works_for_a_select_only_postgres_role(
    postgres_url: str, select_only_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, public = fill(postgres_url, tmp_path)
    role = make_url(select_only_url).username
    with psycopg.connect(_libpq(postgres_url), autocommit=True) as c:
        c.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
    with pytest.raises(AuditUnavailableError, match="lacks INSERT on generations"):
        AuditStore.open(select_only_url)  # a writer fails up front, not at its first record
    for args in READ_COMMANDS:
        code, out, err = run_cli([*args, "--db", select_only_url], capsys)
        assert code == 0, (args, err)
    code, out, err = run_cli(
        [
            "audit",
            "verify",
            "--checkpoint",
            str(checkpoint),
            "--public-key",
            str(public),
            "--db",
            select_only_url,
        ],
        capsys,
    )
    assert code == 0 and "still holds" in out, err
    image = photo_png(tmp_path / "coffee.png")
    code, out, err = run_cli(["verify", str(image), "--no-record", "--db", select_only_url], capsys)
    assert code == 1 and "unknown" in out, err
    code, out, err = run_cli(["verify", str(image), "--db", select_only_url], capsys)
    assert code == 4 and "unknown" in out and "could not be recorded" in err


# ------------------------------------------------------------------------------------- permissions


def test_new_database_and_secret_folders_are_private(tmp_path: Path, genguard_home: Path) -> None:
    db = tmp_path / "audit.sqlite3"
    with AuditStore.open(f"sqlite:///{db}") as store:
        store.record_generation(make_record(1))
        modes = {
            p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.name.startswith("audit")
        }
    assert modes == {"audit.sqlite3": 0o600, "audit.sqlite3-wal": 0o600, "audit.sqlite3-shm": 0o600}
    watermark_key()
    QuarantineVault().keep("gen-1", 0, b"png bytes")
    assert stat.S_IMODE((genguard_home / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((genguard_home / "quarantine").stat().st_mode) == 0o700
    assert stat.S_IMODE((genguard_home / "keys" / "watermark.key").stat().st_mode) == 0o600


def test_wider_existing_files_are_warned_about(tmp_path: Path, genguard_home: Path) -> None:
    db = tmp_path / "audit.sqlite3"
    AuditStore.open(f"sqlite:///{db}").close()
    os.chmod(db, 0o644)
    with pytest.warns(ExposedFileWarning, match=r"audit\.sqlite3: expected mode 0600.*found 0644.*chmod 600"):
        AuditStore.open(f"sqlite:///{db}").close()
    watermark_key()
    os.chmod(genguard_home / "keys", 0o755)
    with pytest.warns(ExposedFileWarning, match=r"keys: expected mode 0700 .*found 0755"):
        watermark_key()
    os.chmod(genguard_home / "keys", 0o700)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        watermark_key()  # private again: silent


# ----------------------------------------------------------------------------------- URL, locks


def test_a_url_whose_driver_is_missing_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(
        BadInputError, match=r"expected its driver 'MySQLdb' to be installed \(pip install mysqlclient\)"
    ):
        AuditStore.open("mysql://auditor:secret@127.0.0.1/audit")
    code, _out, err = run_cli(["audit", "list", "--db", "mysql://auditor:secret@127.0.0.1/audit"], capsys)
    assert code == 2 and "Traceback" not in err and "secret" not in err and "mysqlclient" in err


def test_postgres_writer_gives_up_on_a_held_lock(postgres_url: str) -> None:
    with AuditStore.open(postgres_url) as store:
        store.record_generation(make_record(1))
    blocker = psycopg.connect(_libpq(postgres_url))
    try:
        blocker.execute("SELECT seq FROM chain_head WHERE id = 1 FOR UPDATE")  # held, never committed
        with AuditStore.open(f"{postgres_url}?lock_timeout=1") as store:
            started = time.monotonic()
            with pytest.raises(AuditUnavailableError, match="lock timeout") as caught:
                store.record_generation(make_record(2))
            assert 0.9 < time.monotonic() - started < 10
            assert caught.value.exit_code == 4
            assert store.get_generation("gen-000002") is None  # nothing half-written
    finally:
        blocker.rollback()
        blocker.close()
    with pytest.raises(BadInputError, match="lock_timeout expected seconds"):
        AuditStore.open(f"{postgres_url}?lock_timeout=forever")
