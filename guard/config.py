"""Where genguard keeps its files and which database it uses.

GENGUARD_HOME sets the configuration folder (default: $XDG_CONFIG_HOME/genguard or ~/.config/genguard).
GENGUARD_DB sets the audit database URL (default: an SQLite file in that folder).

Private files and folders: key files are created 0600, `keys/` and `quarantine/` 0700 (the audit
database 0600, genguard.audit.db); an existing one that group or others may read raises an
`ExposedFileWarning` naming it, its mode and the `chmod` that fixes it (nothing is changed for the user).
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from genguard.guard.errors import BadInputError


def genguard_home() -> Path:
    """The configuration folder, created on first use."""
    explicit = os.environ.get("GENGUARD_HOME")
    if explicit:
        home = Path(explicit).expanduser()
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        home = Path(base) / "genguard"
    home.mkdir(parents=True, exist_ok=True)
    return home


def default_db_url() -> str:
    """GENGUARD_DB if set, else an SQLite file under the configuration folder."""
    return os.environ.get("GENGUARD_DB") or f"sqlite:///{genguard_home() / 'audit.sqlite3'}"


def cache_dir() -> Path:
    """Where embedded models and other derived files are cached (GENGUARD_CACHE overrides)."""
    explicit = os.environ.get("GENGUARD_CACHE")
    path = Path(explicit).expanduser() if explicit else genguard_home() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


class ExposedFileWarning(UserWarning):
    """A file or folder holding secrets (keys, prompts, quarantined images) that others may read."""


def warn_if_exposed(path: Path) -> None:
    """Warn when `path` (and, for a database file, its -wal / -shm files) is readable beyond its owner."""
    for item in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(item.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            private = 0o700 if item.is_dir() else 0o600
            warnings.warn(
                f"{item}: expected mode {private:04o} (owner only), found {mode:04o}; it holds secrets: "
                f"chmod {private:o} {item}",
                ExposedFileWarning,
                stacklevel=3,
            )


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) with mode 0700, or warn when an existing one is wider."""
    if path.is_dir():
        warn_if_exposed(path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass  # another process created it first
    return path


def write_secret_file(path: Path, data: bytes) -> None:
    """Write key material with mode 0600 from the start (never world-readable, not even briefly),
    in a folder created 0700."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def watermark_key() -> bytes:
    """The organisation's secret watermark key (32 bytes).

    GENGUARD_WATERMARK_KEY (hex) wins; else keys/watermark.key under the configuration folder,
    created with fresh random bytes on first use.
    """
    explicit = os.environ.get("GENGUARD_WATERMARK_KEY")
    if explicit:
        try:
            key = bytes.fromhex(explicit.strip())
        except ValueError:
            raise BadInputError(
                "GENGUARD_WATERMARK_KEY: expected hex digits, found other characters"
            ) from None
        if len(key) < 16:
            raise BadInputError(f"GENGUARD_WATERMARK_KEY: expected at least 16 bytes, found {len(key)}")
        return key
    path = genguard_home() / "keys" / "watermark.key"
    if not path.exists():
        try:
            write_secret_file(path, os.urandom(32))
        except FileExistsError:
            pass  # another process created it between the check and the write
    else:
        warn_if_exposed(path.parent)
        warn_if_exposed(path)
    return path.read_bytes()
