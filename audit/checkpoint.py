"""Signed checkpoints over the audit log, consistency checks against them and offline inclusion proofs.

The tree. Leaf `seq - 1` of the RFC 9162 Merkle tree (genguard.audit.merkle) is the 32 raw bytes of entry
`seq`'s chained `entry_hash`. That hash already commits to the entry's event JSON *and* to the
previous entry's hash, so a leaf pins the entry and, through the chain, everything before it; the
tree adds what the chain cannot give: a small signed value (the root) that a copy kept elsewhere can
hold the database to, and logarithmic proofs for one entry or for an append-only extension.

The checkpoint file is a C2SP signed note (c2sp.org/signed-note) whose text is a C2SP tlog-checkpoint
(c2sp.org/tlog-checkpoint); the log signs under its origin as the key name (as tlog-checkpoint asks;
checkpoints made before that carry the name ``genguard-audit-checkpoint`` and still verify), so any
signed-note library verifies it with the verifier key ``<origin>+<key hash>+<base64(0x01 || public key)>``
(`audit public-key` prints it). Witnesses add their cosignature lines (c2sp.org/tlog-cosignature)
after the log's; see genguard.audit.witness::

    genguard.audit/<log id>                  origin: AuditStore.log_id(), one per database
    <tree size>                              entries 1..size are covered
    <base64 root hash>
    time 2026-11-26T08:00:00.000000Z         extension lines, signed like the rest:
    key ed25519 <base64 public key>          the signer's key (its SHA-256 is the key id)
    block-size <B>                           a power of two: at most 256 blocks
    block <base64 MTH of entries iB+1 .. (i+1)B>      one line per block, in order
    <empty line>
    — genguard.audit/<log id> <base64(4-byte key hash || Ed25519 signature)>
    — witness.example/w1 <base64(4-byte key id || 8-byte time || Ed25519 cosignature)>   (optional)

Why the block roots: someone who can write the database can rewrite the whole chain consistently
(every entry hash and the chain head), which `verify_chain` cannot notice. The signed root then no
longer matches, and because leaves are chained, every leaf from the first edited entry on differs;
the first block whose root differs holds the first bad entry. So the first bad entry is named
exactly in logs of up to 256 entries and to within one block (size/256 entries) beyond; finer
would need more retained hashes (the file grows linearly). Verification reports the range.

A checkpoint is made only over a log whose chain verifies (it would vouch for tampering otherwise).
It is recorded in the log as an "audit.checkpoint" event appended *after* signing: it
cannot be inside the tree it signs (its payload holds the root), so a checkpoint of size n is
entry n + 1 and the next checkpoint covers it. Verification writes nothing.

Keys: Ed25519, the private key in keys/checkpoint.ed25519 under GENGUARD_HOME (PKCS#8 PEM, mode 0600,
created on first use) or the file GENGUARD_CHECKPOINT_KEY names (PEM or 32 raw bytes). Verifiers
trust a public key (PEM); by default the local key's.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from genguard.audit import chain
from genguard.audit.log_key import ed25519_key_file, load_ed25519_public_key, read_bounded
from genguard.audit.merkle import (
    HASH_SIZE,
    MerkleTree,
    fold_block_roots,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from genguard.guard.config import genguard_home
from genguard.guard.errors import BadInputError, GenguardError, NotFoundError

if TYPE_CHECKING:
    from genguard.audit.store import AuditStore, ChainVerification, StoredEvent

CHECKPOINT_KEY_ENV = "GENGUARD_CHECKPOINT_KEY"
KEY_NAME = (
    "genguard-audit-checkpoint"  # the signed-note key name of checkpoints made before origin-named keys
)
CHECKPOINT_EVENT = "audit.checkpoint"
PROOF_FORMAT = "genguard/inclusion-proof/v1"
MAX_BLOCKS = 256
_MAX_FILE = 4 << 20  # bytes: a checkpoint is at most ~12 KB, a proof a few KB plus one payload
_SIGNATURE_PREFIX = "\u2014 "  # "— ", as the signed-note format writes it
_ORIGIN = re.compile(r"[\x21-\x7e]{1,256}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


# ------------------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head over entries 1..tree_size. `public_key` is the signer's raw Ed25519 key."""

    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: datetime
    public_key: bytes
    block_size: int
    block_roots: tuple[bytes, ...]
    signature: bytes
    key_name: str = ""  # the signature line's key name; "" (new checkpoints): the origin
    cosignature_lines: tuple[
        str, ...
    ] = ()  # witnesses' signature lines, as received (genguard.audit.witness)

    @property
    def key_id(self) -> str:
        """SHA-256 (hex) of the signer's raw public key."""
        return hashlib.sha256(self.public_key).hexdigest()

    def body(self) -> str:
        """The signed text (tlog-checkpoint lines and extension lines)."""
        lines = [
            self.origin,
            str(self.tree_size),
            _b64(self.root_hash),
            f"time {chain.format_time(self.timestamp)}",
            f"key ed25519 {_b64(self.public_key)}",
            f"block-size {self.block_size}",
            *(f"block {_b64(root)}" for root in self.block_roots),
        ]
        return "\n".join(lines) + "\n"

    @property
    def signer_name(self) -> str:
        return self.key_name or self.origin

    def to_text(self) -> str:
        """The checkpoint file: the signed note, the log's signature line first, then any cosignatures."""
        stamp = _note_key_hash(self.public_key, self.signer_name) + self.signature
        lines = [f"{_SIGNATURE_PREFIX}{self.signer_name} {_b64(stamp)}", *self.cosignature_lines]
        return f"{self.body()}\n" + "".join(f"{line}\n" for line in lines)


@dataclass(frozen=True)
class CheckpointVerification:
    """What `verify_against_checkpoint` found.

    `first_bad_seq`..`first_bad_upto` bound the first bad entry (equal when it is known exactly; the
    checkpoint keeps one hash per `block_size` entries, see the module docstring); None when no entry
    is to blame (a bad signature, another log, or a domain row that no entry covers)."""

    ok: bool
    signature_valid: bool
    tree_size: int
    log_size: int | None  # entries now; None when the log was not read (bad signature, other log)
    first_bad_seq: int | None
    first_bad_upto: int | None
    reason: str | None
    consistency_proof: tuple[bytes, ...]  # RFC 9162 PROOF(tree_size, log_size) when the prefix matches
    log_root: bytes | None
    chain: ChainVerification | None


@dataclass(frozen=True)
class InclusionProof:
    """Entry `entry.seq` is leaf `entry.seq - 1` of the tree (`tree_size`, `root_hash`) of log `origin`."""

    origin: str
    tree_size: int
    root_hash: bytes
    path: tuple[bytes, ...]
    entry: StoredEvent
    checkpoint: Checkpoint | None  # the signed checkpoint of this very tree, when made against one

    def to_json(self) -> str:
        entry = self.entry
        document = {
            "format": PROOF_FORMAT,
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root_hash": _b64(self.root_hash),
            "path": [_b64(node) for node in self.path],
            "entry": {
                "seq": entry.seq,
                "type": entry.event_type,
                "time": chain.format_time(entry.recorded_at),
                "generation_id": entry.generation_id,
                "payload": entry.payload,
                "prev_hash": entry.prev_hash,
                "entry_hash": entry.entry_hash,
            },
            "checkpoint": None if self.checkpoint is None else self.checkpoint.to_text(),
        }
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class InclusionCheck:
    """What `check_inclusion_proof` found. `anchor` says what the root was checked against."""

    ok: bool
    seq: int
    tree_size: int
    anchor: str  # "checkpoint <key id>" or "root"
    reason: str | None


# -------------------------------------------------------------------------------------------- keys


def checkpoint_key_path() -> Path:
    """GENGUARD_CHECKPOINT_KEY if set, else keys/checkpoint.ed25519 under the configuration folder."""
    explicit = os.environ.get(CHECKPOINT_KEY_ENV)
    return Path(explicit).expanduser() if explicit else genguard_home() / "keys" / "checkpoint.ed25519"


def checkpoint_key(create: bool = True) -> Ed25519PrivateKey:
    """The signing key; the default file is created (0600) on first use when `create`.

    A path set by GENGUARD_CHECKPOINT_KEY must exist: genguard never creates an organisation's key."""
    return ed25519_key_file(
        checkpoint_key_path(),
        "checkpoint key",
        create=create and not os.environ.get(CHECKPOINT_KEY_ENV),
        missing="`genguard audit checkpoint` creates the default one; verifiers can pass --public-key",
    )


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A trusted public key from a PEM file (as `genguard audit public-key` writes it)."""
    return load_ed25519_public_key(path, "public key", _MAX_FILE)


def _trusted(public_key: Ed25519PublicKey | None) -> Ed25519PublicKey:
    return public_key if public_key is not None else checkpoint_key(create=False).public_key()


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _note_key_hash(public_key: bytes, name: str) -> bytes:
    """signed-note key hash: the first 4 bytes of SHA-256(name || "\\n" || 0x01 || key); 0x01 = Ed25519."""
    return hashlib.sha256(name.encode() + b"\n\x01" + public_key).digest()[:4]


def verifier_key(public_key: Ed25519PublicKey, name: str) -> str:
    """The signed-note verifier key string (`name`: the log origin), for other note verifiers."""
    raw = _raw(public_key)
    encoded = _b64(b"\x01" + raw)
    return f"{name}+{_note_key_hash(raw, name).hex()}+{encoded}"


# ------------------------------------------------------------------------------------ making them


def log_origin(store: AuditStore) -> str:
    return f"genguard.audit/{store.log_id()}"


def _block_size(tree_size: int) -> int:
    """The smallest power of two that cuts `tree_size` entries into at most MAX_BLOCKS blocks."""
    blocks = -(-tree_size // MAX_BLOCKS)
    return 1 << max(blocks - 1, 0).bit_length()


def _block_roots(tree: MerkleTree, tree_size: int, block_size: int) -> list[bytes]:
    return [
        tree.range_root(start, min(start + block_size, tree_size))
        for start in range(0, tree_size, block_size)
    ]


def create_checkpoint(
    store: AuditStore, key: Ed25519PrivateKey | None = None, verify_first: bool = True
) -> Checkpoint:
    """Sign the tree over every entry now in the log, then record an "audit.checkpoint" event (outside it).

    With `verify_first` the chain is verified before signing (GenguardError, exit 1, when it is broken):
    a checkpoint over a tampered log would vouch for the tampering."""
    key = key if key is not None else checkpoint_key()
    if verify_first:
        report = store.verify_chain()
        if not report.ok:
            where = "" if report.first_bad_seq is None else f" at entry {report.first_bad_seq}"
            raise GenguardError(f"the log does not verify{where} ({report.reason}): not signing it")
    tree = MerkleTree(store.entry_hashes())
    block_size = _block_size(tree.size)
    unsigned = Checkpoint(
        origin=log_origin(store),
        tree_size=tree.size,
        root_hash=tree.root(),
        timestamp=chain.parse_time(chain.format_time(datetime.now(UTC))),  # microseconds, as written
        public_key=_raw(key.public_key()),
        block_size=block_size,
        block_roots=tuple(_block_roots(tree, tree.size, block_size)),
        signature=b"",
    )
    signed = dataclasses.replace(unsigned, signature=key.sign(unsigned.body().encode("utf-8")))
    store.append_event(
        CHECKPOINT_EVENT,
        {
            "origin": signed.origin,
            "tree_size": signed.tree_size,
            "root_hash": signed.root_hash.hex(),
            "key_id": signed.key_id,
            "time": chain.format_time(signed.timestamp),
        },
    )
    return signed


def prove_inclusion(
    store: AuditStore, seq: int, checkpoint: Checkpoint | None = None, *, tree_size: int | None = None
) -> InclusionProof:
    """An inclusion proof of entry `seq` in the current log, or in `checkpoint`'s tree when given, or in
    the tree of the log's first `tree_size` entries (without a checkpoint: the caller anchors its root).

    Raises NotFoundError when there is no such entry (or the checkpoint or tree size does not cover it)
    and GenguardError (exit 1) when the log no longer matches the checkpoint."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise BadInputError(f"seq: expected a positive integer, found {seq!r}")
    if tree_size is not None:
        if checkpoint is not None:
            raise BadInputError("tree_size: expected a checkpoint or a tree size, found both")
        if isinstance(tree_size, bool) or not isinstance(tree_size, int) or tree_size < 1:
            raise BadInputError(f"tree_size: expected a positive integer, found {tree_size!r}")
    origin = log_origin(store)
    if checkpoint is not None and checkpoint.origin != origin:
        raise BadInputError(f"checkpoint: expected one of log {origin!r}, found one of {checkpoint.origin!r}")
    tree = MerkleTree(store.entry_hashes())
    if tree_size is not None and tree_size > tree.size:
        raise NotFoundError(
            f"tree_size: expected at most the {tree.size} entries the log holds, found {tree_size}"
        )
    size = (tree_size or tree.size) if checkpoint is None else checkpoint.tree_size
    if seq > size:
        covered = (
            "the log holds"
            if checkpoint is None and tree_size is None
            else "the tree size covers"
            if checkpoint is None
            else "the checkpoint covers"
        )
        raise NotFoundError(f"entry {seq}: not found ({covered} entries 1..{size})")
    if size > tree.size or (checkpoint is not None and tree.root(size) != checkpoint.root_hash):
        raise GenguardError(
            "the log no longer matches the checkpoint: run `genguard audit verify --checkpoint` to find where"
        )
    entry = store.entry(seq)
    if entry is None or tree.leaf_hash(seq - 1) != leaf_hash(_hex(entry.entry_hash, "entry_hash")):
        raise GenguardError(f"entry {seq}: not at its place in the log: run `genguard audit verify`")
    path = tuple(tree.inclusion_proof(seq - 1, size))
    return InclusionProof(origin, size, tree.root(size), path, entry, checkpoint)


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 PROOF(first, D[second]): the log's first `first` entries (root `first_root`) are a prefix
    of its first `second` entries (root `second_root`); `path` is empty when first is 0 or second."""

    origin: str
    first: int
    second: int
    first_root: bytes
    second_root: bytes
    path: tuple[bytes, ...]


def prove_consistency(store: AuditStore, first: int, second: int | None = None) -> ConsistencyProof:
    """A consistency proof from the tree of the log's first `first` entries to that of its first
    `second` (default: every entry now). Checked with `genguard.audit.merkle.verify_consistency`.
    Raises BadInputError for sizes out of order and NotFoundError for a size beyond the log."""
    for name, value in (("first", first), ("second", second)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise BadInputError(f"{name}: expected a positive integer, found {value!r}")
    tree = MerkleTree(store.entry_hashes())
    second = tree.size if second is None else second
    if second > tree.size:
        raise NotFoundError(f"second: expected at most the {tree.size} entries the log holds, found {second}")
    if first > second:
        raise BadInputError(f"first: expected at most second ({second}), found {first}")
    path = tuple(tree.consistency_proof(first, second))
    return ConsistencyProof(log_origin(store), first, second, tree.root(first), tree.root(second), path)


# --------------------------------------------------------------------------- automatic checkpoints

CHECKPOINT_DIR_ENV = "GENGUARD_CHECKPOINT_DIR"
CHECKPOINT_EVERY_ENV = "GENGUARD_CHECKPOINT_EVERY"
CHECKPOINT_SECONDS_ENV = "GENGUARD_CHECKPOINT_SECONDS"
DEFAULT_EVERY_ENTRIES = 10_000
DEFAULT_EVERY_SECONDS = 600.0
LOG_KEY_PIN = "log-key.pem"
SIGNED_FROM_PIN = "log-signed-from"
_CHECKPOINT_FILE = re.compile(r"checkpoint-([0-9]{12})\.txt")


@dataclass(frozen=True)
class AutoCheckpoints:
    """When the store writes checkpoints by itself, and where (a folder outside the database).

    A checkpoint is due when `every_entries` entries were appended since the last one, or when
    `every_seconds` have passed since it (before the first: since the log's first entry) and anything was
    appended. Checked after each committed write, and while the log is idle by
    `AuditStore.checkpoint_if_due` (which `CheckpointTimer` calls in long-running processes). Each goes to
    ``<base>/<log id>/checkpoint-<tree size, 12 digits>.txt``, signed with the checkpoint key;
    ``log-key.pem`` and ``log-signed-from`` beside them pin the log's public key and its first signed
    entry for verifiers (`pin_log_signing`). Truncating the log's tail then removes at most the entries
    since the last checkpoint unnoticed; keep the folder where the database's writers cannot rewrite it
    (another disk, a write-once bucket mount)."""

    base: Path
    every_entries: int = DEFAULT_EVERY_ENTRIES
    every_seconds: float = DEFAULT_EVERY_SECONDS

    def __post_init__(self) -> None:
        if (
            isinstance(self.every_entries, bool)
            or not isinstance(self.every_entries, int)
            or self.every_entries < 1
        ):
            raise BadInputError(f"every_entries: expected a positive integer, found {self.every_entries!r}")
        if not isinstance(self.every_seconds, (int, float)) or not self.every_seconds > 0:
            raise BadInputError(f"every_seconds: expected a positive number, found {self.every_seconds!r}")

    @classmethod
    def from_env(cls) -> AutoCheckpoints:
        """GENGUARD_CHECKPOINT_DIR (default: checkpoints/ under the configuration folder),
        GENGUARD_CHECKPOINT_EVERY (entries, default 10,000), GENGUARD_CHECKPOINT_SECONDS (default 600)."""
        base = os.environ.get(CHECKPOINT_DIR_ENV)
        every = os.environ.get(CHECKPOINT_EVERY_ENV, str(DEFAULT_EVERY_ENTRIES))
        seconds = os.environ.get(CHECKPOINT_SECONDS_ENV, str(DEFAULT_EVERY_SECONDS))
        try:
            entries_value = int(every)
        except ValueError:
            raise BadInputError(
                f"{CHECKPOINT_EVERY_ENV}: expected a positive integer, found {every!r}"
            ) from None
        try:
            seconds_value = float(seconds)
        except ValueError:
            raise BadInputError(f"{CHECKPOINT_SECONDS_ENV}: expected seconds, found {seconds!r}") from None
        folder = Path(base).expanduser() if base else genguard_home() / "checkpoints"
        return cls(folder, entries_value, seconds_value)

    def folder_for(self, log_id: str) -> Path:
        return self.base / log_id

    def due(self, last_size: int, last_time: float, head: int, now: float) -> bool:
        """True when the log (head `head`) needs a checkpoint after one of `last_size` made at `last_time`.
        A checkpoint of size n is followed by its own event (entry n + 1), which alone makes none due."""
        fresh = head - last_size
        return fresh >= self.every_entries or (fresh > 1 and now - last_time >= self.every_seconds)


class CheckpointTimer:
    """Evaluates the time trigger while the log is idle: a daemon thread that calls
    `store.checkpoint_if_due()` every `interval` seconds (default: a tenth of the policy's period,
    1 to 60 s) until `stop()`. Writes evaluate both triggers when they happen; a log that goes quiet
    right after a write would otherwise keep its last entries out of every checkpoint until the next
    write. For long-running processes (`genguard serve` runs one); a CLI-only deployment gets a
    checkpoint on each write that finds one due, or from `genguard audit checkpoint` run by cron."""

    def __init__(self, store: AuditStore, interval: float | None = None) -> None:
        policy = store.auto_checkpoints
        period = policy.every_seconds if policy is not None else DEFAULT_EVERY_SECONDS
        self.interval = interval if interval is not None else min(max(period / 10, 1.0), 60.0)
        self._store = store
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="genguard-checkpoint-timer", daemon=True)

    def start(self) -> CheckpointTimer:
        if self._store.auto_checkpoints is not None and not self._store.read_only:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self._store.checkpoint_if_due()  # logs its own failures: the timer keeps running


def latest_checkpoint(folder: Path) -> tuple[Checkpoint, Path] | None:
    """The checkpoint with the largest tree size in `folder` (None when there is none)."""
    try:
        names = [entry.name for entry in os.scandir(folder) if _CHECKPOINT_FILE.fullmatch(entry.name)]
    except FileNotFoundError:
        return None
    if not names:
        return None
    path = folder / max(names)
    return read_checkpoint(path), path


def write_auto_checkpoint(store: AuditStore, policy: AutoCheckpoints) -> Checkpoint:
    """Sign the log as it is now (without re-verifying it: the writer's own log, and verification
    checks the chain and the batch signatures against it) and write it, and the log key pin, to the
    policy's folder. An existing file of the same size (another writer's) is kept."""

    folder = policy.folder_for(store.log_id())
    pin_log_signing(folder, store.log_public_key, store.log_signed_from())
    checkpoint = create_checkpoint(store, verify_first=False)
    try:
        with (folder / f"checkpoint-{checkpoint.tree_size:012d}.txt").open("x", encoding="utf-8") as handle:
            handle.write(checkpoint.to_text())
    except FileExistsError:
        pass
    return checkpoint


def pin_log_signing(folder: Path, public_key: bytes, signed_from: int) -> None:
    """Pin, beside the checkpoints, the log's public key and the first entry that must be signed.

    Written once (an existing pin is never replaced, whoever wrote it first), when signing starts: the
    store's first write, or the first automatic checkpoint of a log that predates the pins. Outside the
    database, so that moving `log_signed_from` there (to pass later entries off as old and unsigned)
    no longer matches the pin (`pinned_signed_from`, checked by `audit verify`)."""
    from genguard.audit import log_key
    from genguard.guard.config import private_dir

    private_dir(folder)
    for name, text in (
        (LOG_KEY_PIN, log_key.public_key_pem(public_key)),
        (SIGNED_FROM_PIN, f"{int(signed_from)}\n"),
    ):
        path = folder / name
        if path.exists():
            continue
        try:
            with path.open("x", encoding="ascii") as handle:
                handle.write(text)
        except FileExistsError:
            pass  # another writer pinned it first


def pinned_signed_from(folder: Path) -> int | None:
    """The first signed entry pinned beside the checkpoints in `folder`, or None when not pinned."""
    path = folder / SIGNED_FROM_PIN
    if not path.exists():
        return None
    data = _read(path, "log signing start pin")
    text = data.decode("ascii", "replace").strip()
    if not _DECIMAL.fullmatch(text) or int(text) < 1:
        raise BadInputError(
            f"log signing start pin {path}: expected a positive decimal entry number, found {text[:40]!r}"
        )
    return int(text)


def pinned_log_key(folder: Path) -> bytes | None:
    """The log public key pinned beside the checkpoints in `folder`, or None."""
    from genguard.audit import log_key

    path = folder / LOG_KEY_PIN
    return log_key.load_public_key(path) if path.exists() else None


# ------------------------------------------------------------------------------------- verifying


class LogKeyMismatchError(GenguardError):
    """The local log key is not the one pinned beside the checkpoints: which one to trust is the
    verifier's call (pass it explicitly), never guessed."""


def verify_log_against_pins(
    store: AuditStore, folder: Path, log_public_key: bytes | None = None
) -> ChainVerification:
    """`audit verify`'s log check, the same for the CLI and the service: the chain and its batch signatures
    under `log_public_key` when given, else the local log key, else the key pinned in `folder`; the first
    signed entry is checked against the pin in `folder`. Raises LogKeyMismatchError when no key is given
    and the local key differs from the pinned one."""
    from genguard.audit.log_key import key_id, local_public_key

    pinned = pinned_log_key(folder) if log_public_key is None else None
    trusted = log_public_key if log_public_key is not None else local_public_key() or pinned
    if pinned is not None and trusted is not None and pinned != trusted:
        raise LogKeyMismatchError(
            f"the local log key {key_id(trusted)[:16]} is not the key pinned in {folder} "
            f"({key_id(pinned)[:16]})"
        )
    return store.verify_log(trusted, pinned_signed_from=pinned_signed_from(folder))


def signature_problem(checkpoint: Checkpoint, public_key: Ed25519PublicKey | None = None) -> str | None:
    """None when `checkpoint` is signed by `public_key` (default: the local checkpoint key), else why not."""
    public_key = _trusted(public_key)
    trusted = _raw(public_key)
    if trusted != checkpoint.public_key:
        return (
            f"checkpoint: signed by key {checkpoint.key_id}, expected the trusted key "
            f"{hashlib.sha256(trusted).hexdigest()}"
        )
    try:
        public_key.verify(checkpoint.signature, checkpoint.body().encode("utf-8"))
    except InvalidSignature:
        return "checkpoint: the signature does not verify (the checkpoint was altered or forged)"
    return None


def _first_difference(tree: MerkleTree, checkpoint: Checkpoint) -> tuple[int, int, str] | None:
    """The first block of the checkpoint the log's leaves do not reproduce, as (first seq, last seq, reason)."""
    size, held, block = checkpoint.tree_size, tree.size, checkpoint.block_size
    if held >= size and tree.root(size) == checkpoint.root_hash:
        return None
    for index, expected in enumerate(checkpoint.block_roots):
        start, end = index * block, min((index + 1) * block, size)
        if end > held:  # the block is cut short: the log lost entries the checkpoint covers
            lost = f"the log holds {held} of the {size} entries the checkpoint covers"
            return start + 1, held + 1, f"entry {held + 1} is missing: {lost}" if start == held else lost
        if tree.range_root(start, end) != expected:
            what = f"entry {start + 1} differs" if end == start + 1 else f"entries {start + 1}..{end} differ"
            return start + 1, end, f"{what} from the checkpoint (changed, removed, reordered or inserted)"
    raise AssertionError("block roots fold to the root, so some block differs")  # checked with the signature


def verify_against_checkpoint(
    store: AuditStore, checkpoint: Checkpoint, public_key: Ed25519PublicKey | None = None
) -> CheckpointVerification:
    """Check the signature (with `public_key`, default: the local checkpoint key), that entries
    1..tree_size still give the signed root, a consistency proof from the checkpoint to the log now,
    and the chain itself (`verify_chain`). Names the first bad entry, as precisely as the checkpoint allows."""
    problem = signature_problem(checkpoint, public_key)
    if problem is not None:
        return CheckpointVerification(
            False, False, checkpoint.tree_size, None, None, None, problem, (), None, None
        )
    origin = log_origin(store)
    if fold_block_roots(checkpoint.block_roots) != checkpoint.root_hash:
        problem = "checkpoint: its block roots do not hash to its root (signed, but not by genguard's rules)"
    elif checkpoint.origin != origin:
        problem = f"checkpoint: made for log {checkpoint.origin!r}, this database is log {origin!r}"
    if problem is not None:
        return CheckpointVerification(
            False, True, checkpoint.tree_size, None, None, None, problem, (), None, None
        )
    chain_report = store.verify_chain()
    tree = MerkleTree(store.entry_hashes())
    difference = _first_difference(tree, checkpoint)
    chain_seq = None if chain_report.ok else chain_report.first_bad_seq
    if difference is None:
        proof = tuple(tree.consistency_proof(checkpoint.tree_size))
        if not verify_consistency(checkpoint.tree_size, tree.size, checkpoint.root_hash, tree.root(), proof):
            raise AssertionError("a consistency proof made from the same leaves must verify")
        if chain_report.ok:
            return CheckpointVerification(
                True,
                True,
                checkpoint.tree_size,
                tree.size,
                None,
                None,
                None,
                proof,
                tree.root(),
                chain_report,
            )
        first, upto, reason = chain_seq, chain_seq, chain_report.reason or "the chain does not verify"
    else:
        proof = ()
        low, high, reason = difference
        if chain_seq is not None and chain_seq < low:  # hashes before `low` match: the chain's fault is first
            first, upto, reason = chain_seq, chain_seq, chain_report.reason or reason
        elif chain_seq is not None and chain_seq <= high:  # the chain narrows the block down
            first, upto = low, chain_seq
            reason = (
                (chain_report.reason or reason)
                if low == chain_seq
                else f"{reason}; the chain breaks at entry {chain_seq}"
            )
        else:
            first, upto = low, high
            if chain_report.ok:
                reason += "; the chain itself verifies: it was rewritten consistently"
        if first != upto:
            reason += (
                f"; the checkpoint keeps one hash per {checkpoint.block_size} entries, "
                f"so the first bad entry is one of {first}..{upto}"
            )
    return CheckpointVerification(
        False, True, checkpoint.tree_size, tree.size, first, upto, reason, proof, tree.root(), chain_report
    )


def check_inclusion_proof(
    proof: InclusionProof,
    anchor: Checkpoint | bytes | None = None,
    public_key: Ed25519PublicKey | None = None,
) -> InclusionCheck:
    """Check a proof offline (no database): the entry's contents give its hash, the path leads from
    it to the root, and the root is the one of `anchor` — a checkpoint (its signature checked with
    `public_key`, default the local key) or a root hash the caller trusts. Without an anchor, the
    checkpoint the proof carries is used (its signature makes it trustworthy, not its presence)."""
    entry = proof.entry
    if anchor is None:
        if proof.checkpoint is None:
            raise BadInputError(
                "proof: carries no checkpoint; expected a checkpoint or a root hash to check it against"
            )
        anchor = proof.checkpoint
    if isinstance(anchor, Checkpoint):
        label = f"checkpoint {anchor.key_id}"
        problem = signature_problem(anchor, public_key)
        if problem is None:
            expected = (anchor.origin, anchor.tree_size, anchor.root_hash)
            if (proof.origin, proof.tree_size, proof.root_hash) != expected:
                problem = (
                    f"proof: made against the tree of {proof.tree_size} entries of {proof.origin!r}, the checkpoint "
                    f"signs {anchor.tree_size} entries of {anchor.origin!r} with another root (prove against it: --checkpoint)"
                    if (proof.origin, proof.tree_size) != expected[:2]
                    else "proof: its root is not the checkpoint's root"
                )
    else:
        label = "root"
        problem = None if anchor == proof.root_hash else "proof: its root is not the trusted root"
    if problem is None:
        document = chain.event_json(
            entry.seq,
            entry.event_type,
            chain.format_time(entry.recorded_at),
            entry.generation_id,
            chain.canonical_json(entry.payload),
        )
        computed = chain.entry_hash(_hex(entry.prev_hash, "entry.prev_hash"), document)
        if computed.hex() != entry.entry_hash:
            problem = f"entry {entry.seq}: its contents do not give its entry_hash (the entry was altered)"
        elif not verify_inclusion(computed, entry.seq - 1, proof.tree_size, proof.path, proof.root_hash):
            problem = f"entry {entry.seq}: the path does not lead to the root (the proof was altered)"
    return InclusionCheck(problem is None, entry.seq, proof.tree_size, label, problem)


# ------------------------------------------------------------------------------------- file forms


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, where: str, size: int | None = HASH_SIZE) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInputError(f"{where}: expected base64, found {text[:60]!r}") from None
    if size is not None and len(data) != size:
        raise BadInputError(f"{where}: expected {size} bytes in base64, found {len(data)}")
    return data


def _hex(text: Any, where: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[0-9a-f]{64}", text):
        raise BadInputError(f"{where}: expected 64 lower-case hex digits, found {text!r}")
    return bytes.fromhex(text)


def _read(path: Path, what: str) -> bytes:
    return read_bounded(path, what, _MAX_FILE)


def read_checkpoint(path: Path) -> Checkpoint:
    return parse_checkpoint(_read(path, "checkpoint"), str(path))


def parse_checkpoint(data: bytes, name: str = "checkpoint") -> Checkpoint:
    """Parse a checkpoint file strictly; BadInputError names the line and what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{name}: expected UTF-8 text, found other bytes") from None
    body, separator, signatures = text.partition("\n\n")
    if not separator or not signatures.endswith("\n"):
        raise BadInputError(
            f"{name}: expected a signed note (text, an empty line, signature lines), found none"
        )
    lines = body.split("\n")

    def line(number: int, prefix: str, what: str) -> str:
        found = lines[number - 1] if number <= len(lines) else None
        if found is None or not found.startswith(prefix):
            raise BadInputError(f"{name} line {number}: expected {what}, found {found!r}")
        return found[len(prefix) :]

    if len(lines) < 6:
        raise BadInputError(f"{name}: expected at least 6 lines before the empty line, found {len(lines)}")
    origin = line(1, "", "the log origin")
    if not _ORIGIN.fullmatch(origin):
        raise BadInputError(
            f"{name} line 1: expected the log origin (printable, no spaces), found {origin!r}"
        )
    size_text = line(2, "", "the tree size in decimal")
    if not _DECIMAL.fullmatch(size_text):
        raise BadInputError(f"{name} line 2: expected the tree size in decimal, found {size_text!r}")
    root = _unb64(line(3, "", "the base64 root hash"), f"{name} line 3 (root hash)")
    time_text = line(4, "time ", "'time <ISO 8601 UTC>'")
    try:
        timestamp = chain.parse_time(time_text)
    except ValueError:
        raise BadInputError(
            f"{name} line 4: expected a time like 2026-11-26T08:00:00.000000Z, found {time_text!r}"
        ) from None
    public_key = _unb64(
        line(5, "key ed25519 ", "'key ed25519 <base64 public key>'"), f"{name} line 5 (public key)"
    )
    block_text = line(6, "block-size ", "'block-size <power of two>'")
    tree_size = int(size_text)
    if not _DECIMAL.fullmatch(block_text) or int(block_text) != _block_size(tree_size):
        raise BadInputError(
            f"{name} line 6: expected block-size {_block_size(tree_size)} for {tree_size} entries, found {block_text!r}"
        )
    block_size = int(block_text)
    count = -(-tree_size // block_size)
    if len(lines) != 6 + count:
        raise BadInputError(
            f"{name}: expected {count} block lines for {tree_size} entries, found {len(lines) - 6}"
        )
    blocks = tuple(
        _unb64(line(7 + i, "block ", "'block <base64 hash>'"), f"{name} line {7 + i} (block root)")
        for i in range(count)
    )
    signature, signer, others = None, "", []
    for number, signature_line in enumerate(signatures[:-1].split("\n"), start=len(lines) + 2):
        if not signature_line.startswith(_SIGNATURE_PREFIX) or signature_line.count(" ") != 2:
            raise BadInputError(
                f"{name} line {number}: expected '— <key name> <base64 signature>', found {signature_line[:80]!r}"
            )
        _, key_name, stamp = signature_line.split(" ")
        decoded = _unb64(stamp, f"{name} line {number} (signature)", None)
        if (
            signature is None
            and key_name in (origin, KEY_NAME)
            and len(decoded) == 68
            and decoded[:4] == _note_key_hash(public_key, key_name)
        ):
            signature, signer = decoded[4:], ("" if key_name == origin else key_name)
        else:
            others.append(signature_line)  # cosignatures (checked against a witness policy) or unknown
    if signature is None:
        raise BadInputError(
            f"{name}: expected a signature line by the log ({origin} or {KEY_NAME}) with the key on line 5, "
            "found none"
        )
    return Checkpoint(
        origin, tree_size, root, timestamp, public_key, block_size, blocks, signature, signer, tuple(others)
    )


def read_inclusion_proof(path: Path) -> InclusionProof:
    return parse_inclusion_proof(_read(path, "proof"), str(path))


def parse_inclusion_proof(data: bytes, name: str = "proof") -> InclusionProof:
    """Parse a proof file strictly; BadInputError names the field and what is wrong."""
    from genguard.audit.store import StoredEvent

    try:
        document = json.loads(data)
    except ValueError as exc:
        raise BadInputError(f"{name}: expected a JSON proof, found invalid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != PROOF_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise BadInputError(f"{name}: expected format {PROOF_FORMAT!r}, found {found!r}")

    def field(mapping: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
        value = mapping.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise BadInputError(f"{name}: field {where}{key!r} expected {names}, found {value!r}"[:300])
        return value

    entry = field(document, "entry", dict, "")
    path = field(document, "path", list, "")
    tree_size = field(document, "tree_size", int, "")
    seq = field(entry, "seq", int, "entry.")
    if not 1 <= seq <= tree_size:
        raise BadInputError(f"{name}: field 'entry.seq' expected 1..{tree_size} (the tree size), found {seq}")
    if len(path) > 64:
        raise BadInputError(f"{name}: field 'path' expected at most 64 hashes, found {len(path)}")
    time_text = field(entry, "time", str, "entry.")
    try:
        recorded_at = chain.parse_time(time_text)
    except ValueError:
        raise BadInputError(
            f"{name}: field 'entry.time' expected ISO 8601 UTC, found {time_text!r}"
        ) from None
    generation_id = entry.get("generation_id")
    if generation_id is not None and not isinstance(generation_id, str):
        raise BadInputError(
            f"{name}: field 'entry.generation_id' expected str or null, found {generation_id!r}"
        )
    checkpoint_text = document.get("checkpoint")
    if checkpoint_text is not None and not isinstance(checkpoint_text, str):
        raise BadInputError(
            f"{name}: field 'checkpoint' expected the checkpoint text or null, found {checkpoint_text!r}"[
                :300
            ]
        )
    stored = StoredEvent(
        seq=seq,
        event_type=field(entry, "type", str, "entry."),
        recorded_at=recorded_at,
        generation_id=generation_id,
        payload=field(entry, "payload", dict, "entry."),
        prev_hash=_hex(entry.get("prev_hash"), f"{name}: field 'entry.prev_hash'").hex(),
        entry_hash=_hex(entry.get("entry_hash"), f"{name}: field 'entry.entry_hash'").hex(),
    )
    return InclusionProof(
        origin=field(document, "origin", str, ""),
        tree_size=tree_size,
        root_hash=_unb64(field(document, "root_hash", str, ""), f"{name}: field 'root_hash'"),
        path=tuple(
            _unb64(node if isinstance(node, str) else "?", f"{name}: field 'path[{i}]'")
            for i, node in enumerate(path)
        ),
        entry=stored,
        checkpoint=None
        if checkpoint_text is None
        else parse_checkpoint(checkpoint_text.encode("utf-8"), f"{name}: checkpoint"),
    )
