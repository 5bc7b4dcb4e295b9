"""An edit job's input image and mask while the job waits: sealed in the service database, never in clear.

A queued edit must hold its input until a worker runs it, across a restart of the service, and a
photograph of a real person must not sit readable in the database meanwhile. Each part is sealed
(AES-256-GCM) under the installation's quarantine key, with the same sealing the edit path uses for
`edits.input_storage: encrypted` (genguard.guard.quarantine), its associated data naming the job and the
part, so a sealed part moved onto another job or part does not open. The rows are written in the
transaction that queues the job and deleted in the one that finishes it (done, blocked, invalid,
failed, or failed by a restart's recovery): no input outlives its job. The job's own row keeps only the
parts' SHA-256 and sizes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from sqlalchemy import Connection, delete, insert, select

from genguard.audit.models import JobInput
from genguard.guard.errors import BadInputError, ImageInputError
from genguard.guard.quarantine import quarantine_key, seal, unseal

# The parts a job may hold, and the index each is sealed under (the sealing binds job id and index).
PARTS = {"image": 0, "mask": 1}


def seal_part(job_id: str, part: str, data: bytes) -> bytes:
    """`data` sealed for `part` of job `job_id`."""
    return seal(data, quarantine_key(), job_id, _index(part))


def put_inputs(conn: Connection, job_id: str, inputs: Mapping[str, bytes]) -> None:
    """Seal and store the job's parts (in the caller's transaction)."""
    for part, data in inputs.items():
        if not data:
            raise BadInputError(f"job input {part}: expected the file's bytes, found none")
        conn.execute(
            insert(JobInput).values(
                job_id=job_id,
                part=part,
                sha256=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
                sealed=seal_part(job_id, part, data),
            )
        )


def load_inputs(conn: Connection, job_id: str) -> dict[str, bytes]:
    """The job's parts, opened and checked against their SHA-256 (an empty dict: the job holds none)."""
    rows = conn.execute(select(JobInput).where(JobInput.job_id == job_id)).mappings().all()
    key = quarantine_key() if rows else b""
    opened: dict[str, bytes] = {}
    for row in rows:
        part = row["part"]
        try:
            data = unseal(row["sealed"], key, job_id, _index(part))
        except ImageInputError:
            raise ImageInputError(
                f"job input {job_id}/{part}: expected it to open with this installation's quarantine key, "
                "found it altered, moved from another job, or sealed under another key"
            ) from None
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            raise ImageInputError(
                f"job input {job_id}/{part}: expected SHA-256 {row['sha256']}, found other bytes"
            )
        opened[part] = data
    return opened


def drop_inputs(conn: Connection, job_id: str) -> int:
    """Delete the job's parts (in the caller's transaction); returns how many there were."""
    deleted = conn.execute(delete(JobInput).where(JobInput.job_id == job_id))
    return int(deleted.rowcount or 0)


def _index(part: str) -> int:
    if part not in PARTS:
        raise BadInputError(f"job input part: expected one of {', '.join(PARTS)}, found {part!r}")
    return PARTS[part]


__all__ = ["PARTS", "drop_inputs", "load_inputs", "put_inputs", "seal_part"]
