"""The log signing key: who may append to the audit log.

Every committed write transaction (a batch of entries first..last) carries one Ed25519 signature,
stored in the table ``log_signatures`` keyed by the batch's last seq, over

    BATCH_DOMAIN || log id (ASCII) || 0x00 || first seq (8 bytes, big-endian) || last seq (8 bytes)
                 || the last entry's 32-byte chained hash

The last entry's hash commits to every entry before it (the chain), so the signature vouches for the
whole log up to `last`. Someone with database access alone can still edit rows, but cannot append,
rewrite or truncate-and-extend without the signature failing or missing (`AuditStore.verify_log`).
Cutting the tail back to an earlier batch's end is caught by the checkpoints (genguard.audit.checkpoint:
automatic checkpoints in a folder outside the database bound that window).

Verifiers need only the public key (Ed25519: a signature scheme, not a MAC): `--log-public-key PEM`, or
the public half of the local key, or the ``log-key.pem`` pinned beside the automatic checkpoints. The first
entry that must be signed (earlier ones predate signing) is pinned there too, in ``log-signed-from``:
the database's own record of it could otherwise be moved to pass later entries off as old and unsigned.

The key is separate from the checkpoint key (keys/checkpoint.ed25519): the log key must be online on
every writer, while the checkpoint key may be an organisation's key held elsewhere
(GENGUARD_CHECKPOINT_KEY). Default file: keys/log.ed25519 under the configuration folder (PKCS#8 PEM,
mode 0600, created on the first write); GENGUARD_LOG_KEY names another file (PEM or 32 raw bytes), which
must exist. A KMS or HSM plugs in as a `LogSigner` (`AuditStore.open(..., log_signer=...)`).
The private key never reaches the database, a message or a log line; only its public key's SHA-256
(the key id) is stored with each signature.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from genguard.guard.config import genguard_home, write_secret_file
from genguard.guard.errors import BadInputError

LOG_KEY_ENV = "GENGUARD_LOG_KEY"
BATCH_DOMAIN = b"genguard/audit-log/batch/v1\x00"
SIGNATURE_SIZE = 64
_MAX_KEY_FILE = 64 << 10


@runtime_checkable
class LogSigner(Protocol):
    """Signs log batches: a local key (`LocalLogSigner`) or a KMS/HSM behind the same two members."""

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        ...

    def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature (64 bytes) of `message`."""
        ...


class LocalLogSigner:
    """A LogSigner holding an Ed25519 private key in memory (its repr never shows the key)."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._public = raw_public_key(key.public_key())

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"LocalLogSigner(key_id={key_id(self._public)[:16]})"


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: bytes) -> str:
    """SHA-256 (hex) of the raw public key: stored with each signature, names the key in messages."""
    return hashlib.sha256(public_key).hexdigest()


def batch_message(log_id: str, first_seq: int, last_seq: int, last_entry_hash: bytes) -> bytes:
    """The bytes a batch signature covers (see the module docstring)."""
    if len(last_entry_hash) != 32:
        raise ValueError(f"last_entry_hash: expected 32 bytes, found {len(last_entry_hash)}")
    return (
        BATCH_DOMAIN
        + log_id.encode("ascii")
        + b"\x00"
        + struct.pack(">qq", first_seq, last_seq)
        + last_entry_hash
    )


def verify_batch(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def log_key_path() -> Path:
    """GENGUARD_LOG_KEY if set, else keys/log.ed25519 under the configuration folder."""
    explicit = os.environ.get(LOG_KEY_ENV)
    return Path(explicit).expanduser() if explicit else genguard_home() / "keys" / "log.ed25519"


def load_log_signer(create: bool = True) -> LocalLogSigner:
    """The local log key; the default file is created (0600) on first use when `create`.

    A file named by GENGUARD_LOG_KEY must exist: genguard never creates an organisation's key."""
    key = ed25519_key_file(
        log_key_path(),
        "log key",
        create=create and not os.environ.get(LOG_KEY_ENV),
        missing=f"the first write creates the default one; {LOG_KEY_ENV} must name an existing file",
    )
    return LocalLogSigner(key)


def ed25519_key_file(path: Path, what: str, *, create: bool, missing: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from `path` (unencrypted PEM or 32 raw bytes), the file created (0600)
    first when it does not exist and `create`; else BadInputError naming `what`, with `missing` as
    the hint. The log key and the checkpoint key are both read here."""
    if not path.exists():
        if not create:
            raise BadInputError(f"{what} {path}: expected a key file, found none ({missing})")
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            write_secret_file(path, pem)
        except FileExistsError:
            pass  # another process created it between the check and the write
    data = read_bounded(path, what)
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise BadInputError(
            f"{what} {path}: expected an unencrypted PEM Ed25519 private key or 32 raw bytes, "
            f"found {len(data)} bytes that are neither"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInputError(f"{what} {path}: expected an Ed25519 key, found {type(key).__name__}")
    return key


def public_key_pem(public_key: bytes) -> str:
    pem = Ed25519PublicKey.from_public_bytes(public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii")


def load_public_key(path: Path) -> bytes:
    """A trusted log public key (raw bytes) from a PEM file."""
    return raw_public_key(load_ed25519_public_key(path, "log public key"))


def load_ed25519_public_key(path: Path, what: str, limit: int = _MAX_KEY_FILE) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; errors name it as `what` and the path."""
    data = read_bounded(path, what, limit)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise BadInputError(
            f"{what} {path}: expected a PEM public key (BEGIN PUBLIC KEY), found {len(data)} bytes that are not"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadInputError(f"{what} {path}: expected an Ed25519 key, found {type(key).__name__}")
    return key


def local_public_key() -> bytes | None:
    """The public half of the local log key, or None when there is no key file (never creates one)."""
    path = log_key_path()
    if not path.exists():
        return None
    return load_log_signer(create=False).public_key


def read_bounded(path: Path, what: str, limit: int = _MAX_KEY_FILE) -> bytes:
    """At most `limit` bytes of a small file (keys, pins, checkpoints); errors name it as `what`."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise BadInputError(f"{what} {path}: expected a readable file, found {exc.strerror}") from None
    if len(data) > limit:
        raise BadInputError(f"{what} {path}: expected at most {limit} bytes, found more")
    return data


__all__ = [
    "BATCH_DOMAIN",
    "LOG_KEY_ENV",
    "LocalLogSigner",
    "LogSigner",
    "batch_message",
    "ed25519_key_file",
    "key_id",
    "load_ed25519_public_key",
    "load_log_signer",
    "load_public_key",
    "local_public_key",
    "log_key_path",
    "public_key_pem",
    "raw_public_key",
    "read_bounded",
    "verify_batch",
]
