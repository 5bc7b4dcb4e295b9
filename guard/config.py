"""Where genguard keeps its files and which database it uses.

GENGUARD_HOME sets the configuration folder (default: $XDG_CONFIG_HOME/genguard or ~/.config/genguard).
GENGUARD_DB sets the audit database URL (default: an SQLite file in that folder).
"""

from __future__ import annotations

import os
from pathlib import Path

from guard.errors import BadInputError


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


def write_secret_file(path: Path, data: bytes) -> None:
    """Write key material with mode 0600 from the start (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
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
    return path.read_bytes()
