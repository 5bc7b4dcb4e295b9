"""Cleaning up after a crash: leftovers that no committed record accounts for.

A generation killed at the wrong moment can leave two kinds of files, never a visible image without
its record (files are written only after the commit, under a temporary name, then renamed):
- hidden temporary files `.NAME.tmp` in an output folder (a write interrupted before its rename);
- encrypted quarantine files `<generation id>-<index>.ggq` sealed before a commit that never happened.

`remove_temporary_files` removes the first kind from one folder; `remove_orphan_quarantine` removes
quarantine files whose generation this database does not hold, or holds without that image kept.
Only files older than `min_age` seconds are touched, so that a generation running at the same time
(its files exist for the moment between sealing or writing and the commit or rename) keeps its own.
The quarantine folder belongs to one database: run the second only against the database the
generator writes to (`genguard audit repair`), never against another one sharing the folder.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from genguard.audit.store import AuditStore
from genguard.guard.errors import BadInputError

DEFAULT_MIN_AGE = 3600.0  # seconds
# What genguard itself writes as temporary files: `.NAME.tmp` (images, sidecars, the write probe).
_TEMPORARY = re.compile(r"^\.(?:[0-9a-f]{32}-\d+\.(?:png|jpg|webp|c2pa)|genguard-probe-.+)\.tmp$")
_QUARANTINED = re.compile(r"^(?P<generation>[0-9A-Za-z_-]{1,64})-(?P<index>\d+)\.ggq$")


@dataclass(frozen=True)
class RepairReport:
    """What a repair removed, and what it left because it was too recent (or could not remove)."""

    removed: tuple[Path, ...]
    kept_recent: tuple[Path, ...]
    failed: tuple[tuple[Path, str], ...] = ()


def remove_temporary_files(folder: Path, *, min_age: float = DEFAULT_MIN_AGE) -> list[Path]:
    """Remove genguard's own temporary files older than `min_age` seconds from `folder` (not its
    subfolders); returns what was removed. A missing folder has none."""
    return list(repair_output_folder(folder, min_age=min_age).removed)


def repair_output_folder(folder: Path, *, min_age: float = DEFAULT_MIN_AGE) -> RepairReport:
    _check_age(min_age)
    if not folder.is_dir():
        return RepairReport((), ())
    return _remove([path for path in folder.iterdir() if _TEMPORARY.match(path.name)], min_age)


def remove_orphan_quarantine(
    store: AuditStore, folder: Path, *, min_age: float = DEFAULT_MIN_AGE
) -> RepairReport:
    """Remove quarantine files in `folder` that no committed record of `store` keeps."""
    _check_age(min_age)
    if not folder.is_dir():
        return RepairReport((), ())
    orphans: list[Path] = []
    for path in sorted(folder.iterdir()):
        match = _QUARANTINED.match(path.name)
        if match is None or not path.is_file():
            continue
        detail = store.get_generation(match["generation"], with_events=False)
        index = int(match["index"])
        kept = detail is not None and any(
            image.index == index and image.status == "quarantined" for image in detail.images
        )
        if not kept:
            orphans.append(path)
    return _remove(orphans, min_age)


def _check_age(min_age: float) -> None:
    if isinstance(min_age, bool) or not isinstance(min_age, (int, float)) or not min_age >= 0:
        raise BadInputError(f"min_age: expected seconds, zero or more, found {min_age!r}")


def _remove(paths: list[Path], min_age: float) -> RepairReport:
    now = time.time()
    removed: list[Path] = []
    recent: list[Path] = []
    failed: list[tuple[Path, str]] = []
    for path in sorted(paths):
        try:
            if now - path.stat().st_mtime < min_age:
                recent.append(path)
                continue
            path.unlink()
        except FileNotFoundError:
            continue  # removed meanwhile (renamed into place, or by another repair)
        except OSError as exc:
            failed.append((path, exc.strerror or type(exc).__name__))
            continue
        removed.append(path)
    return RepairReport(tuple(removed), tuple(recent), tuple(failed))
