"""Witnessed checkpoints: C2SP tlog-witness (add-checkpoint) and tlog-cosignature/v1.

A witness is a third party that keeps the latest checkpoint it saw for each log and cosigns a new one
only when a consistency proof shows it extends that one: a log that forks (shows one history to a
verifier and another to an auditor) or rolls back is caught as soon as one honest witness of the
quorum is asked. genguard sends each configured witness

    POST <submission prefix>/add-checkpoint
    old <size the witness last cosigned>
    <consistency proof hashes, base64, one a line>
    <empty line>
    <the checkpoint, signed by the log>

and keeps the cosignature lines it gets back (`— <witness name> base64(key id || u64 time || sig)`)
in the checkpoint file, after the log's own signature, and in the log as an "audit.witnessed" event.
A witness answering 409 with its size is asked again once with a proof from that size.

What leaves: only the checkpoint (origin, size, root hash, block roots, the log key) and tree hashes
of the consistency proof. A leaf is an entry hash, SHA-256 over the previous entry's hash and the
event's JSON, which holds random generation ids: a salted commitment, never a prompt.

Policy file (`--witnesses FILE`), one statement a line, `#` starts a comment::

    witness <vkey> [<submission prefix URL>]      vkey: <name>+<hex key id>+<base64(0x04 || key)>
    quorum <k>                                    cosignatures needed (default: all witnesses)

`verify_cosignatures` checks a checkpoint's cosignatures against a policy: k of these n witnesses.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from genguard.audit.checkpoint import Checkpoint
from genguard.audit.merkle import MerkleTree
from genguard.guard.config import genguard_home
from genguard.guard.errors import BadInputError

if TYPE_CHECKING:
    from genguard.audit.store import AuditStore

COSIGNATURE_TYPE = 0x04  # signed-note signature type of tlog-cosignature/v1 (Ed25519)
WITNESSED_EVENT = "audit.witnessed"
MAX_PROOF_LINES = 63
_SIGNATURE_PREFIX = "\u2014 "
_MAX_BODY = 64 << 10
_FUTURE_SKEW_S = 300  # a cosignature time further ahead than this is rejected


@dataclass(frozen=True)
class Witness:
    """A witness: its name, raw Ed25519 public key and (to ask it) its submission prefix URL."""

    name: str
    public_key: bytes
    url: str | None = None

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(
            self.name.encode() + b"\n" + bytes([COSIGNATURE_TYPE]) + self.public_key
        ).digest()[:4]

    @property
    def vkey(self) -> str:
        encoded = base64.b64encode(bytes([COSIGNATURE_TYPE]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def from_vkey(cls, vkey: str, url: str | None = None, where: str = "witness") -> Witness:
        parts = vkey.split("+", 2)  # base64 may hold "+" too
        if len(parts) != 3 or not parts[0] or " " in parts[0]:
            raise BadInputError(
                f"{where}: expected a vkey <name>+<key id>+<base64 key>, found {vkey[:100]!r}"
            )
        name, key_id, encoded = parts
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            raise BadInputError(
                f"{where}: expected base64 key material in the vkey, found {encoded[:60]!r}"
            ) from None
        if len(raw) != 33 or raw[0] != COSIGNATURE_TYPE:
            raise BadInputError(
                f"{where}: expected a cosignature/v1 key (type 0x04, 32 bytes), found type "
                f"{raw[0] if raw else None} with {max(len(raw) - 1, 0)} bytes"
            )
        witness = cls(name, raw[1:], url)
        if witness.key_id.hex() != key_id.lower():
            raise BadInputError(
                f"{where}: expected key id {witness.key_id.hex()} for {name}, found {key_id!r}"
            )
        if url is not None and not url.startswith(("http://", "https://")):
            raise BadInputError(
                f"{where}: expected an http:// or https:// submission prefix, found {url[:100]!r}"
            )
        return witness


@dataclass(frozen=True)
class WitnessPolicy:
    """`quorum` of `witnesses` must have cosigned a checkpoint."""

    witnesses: tuple[Witness, ...]
    quorum: int

    def __post_init__(self) -> None:
        if not self.witnesses:
            raise BadInputError("witness policy: expected at least one witness, found none")
        if not 1 <= self.quorum <= len(self.witnesses):
            raise BadInputError(
                f"witness policy: expected a quorum from 1 to {len(self.witnesses)}, found {self.quorum}"
            )
        names = [w.name for w in self.witnesses]
        if len(set(names)) != len(names):
            raise BadInputError(f"witness policy: expected distinct witness names, found {names}")

    @classmethod
    def parse(cls, text: str, source: str = "witness policy") -> WitnessPolicy:
        witnesses: list[Witness] = []
        quorum: int | None = None
        for number, raw in enumerate(text.splitlines(), start=1):
            words = raw.split("#", 1)[0].split()
            where = f"{source} line {number}"
            if not words:
                continue
            if words[0] == "witness" and len(words) in (2, 3):
                witnesses.append(Witness.from_vkey(words[1], words[2] if len(words) == 3 else None, where))
            elif words[0] == "quorum" and len(words) == 2 and words[1].isdigit():
                quorum = int(words[1])
            else:
                raise BadInputError(
                    f"{where}: expected 'witness <vkey> [<url>]' or 'quorum <k>', found {raw.strip()[:100]!r}"
                )
        return cls(tuple(witnesses), len(witnesses) if quorum is None else quorum)

    @classmethod
    def read(cls, path: Path) -> WitnessPolicy:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInputError(
                f"{path}: expected a readable witness policy (UTF-8 text), found {exc}"
            ) from None
        return cls.parse(text, str(path))


@dataclass(frozen=True)
class WitnessCheck:
    """What `verify_cosignatures` found: `cosigned_by` names the witnesses whose cosignature verified."""

    ok: bool
    quorum: int
    witnesses: int
    cosigned_by: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def summary(self) -> str:
        names = ", ".join(self.cosigned_by) or "none"
        return f"{len(self.cosigned_by)} of {self.witnesses} witnesses cosigned ({names}), {self.quorum} required"


@dataclass(frozen=True)
class WitnessOutcome:
    """One witness's answer to add-checkpoint. `problem` says why it did not cosign (None: it did)."""

    name: str
    cosigned: bool
    problem: str | None
    requests: int


def cosigned_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    """What a tlog-cosignature/v1 signs: header, time line, then the whole checkpoint body."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + checkpoint.body().encode("utf-8")


def _cosignature_of(witness: Witness, checkpoint: Checkpoint, line: str) -> tuple[int | None, str | None]:
    """(timestamp, None) when `line` is a valid cosignature by `witness`, (None, problem) when it is
    by that witness but does not verify, (None, None) when it is not that witness's line."""
    if not line.startswith(_SIGNATURE_PREFIX) or line.count(" ") != 2:
        return None, None
    _, name, stamp = line.split(" ")
    if name != witness.name:
        return None, None
    try:
        decoded = base64.b64decode(stamp, validate=True)
    except (ValueError, binascii.Error):
        return None, f"{name}: cosignature is not base64"
    if len(decoded) != 4 + 8 + 64 or decoded[:4] != witness.key_id:
        return None, None  # another key under the same name (a rotation): not this one
    timestamp = int.from_bytes(decoded[4:12], "big")
    if timestamp > time.time() + _FUTURE_SKEW_S:
        return None, f"{name}: cosignature time {timestamp} is in the future"
    try:
        Ed25519PublicKey.from_public_bytes(witness.public_key).verify(
            decoded[12:], cosigned_message(checkpoint, timestamp)
        )
    except InvalidSignature:
        return None, f"{name}: cosignature does not verify over this checkpoint"
    return timestamp, None


def verify_cosignatures(checkpoint: Checkpoint, policy: WitnessPolicy) -> WitnessCheck:
    """Count the policy's witnesses with a valid cosignature on `checkpoint` (unknown lines are ignored)."""
    cosigned: list[str] = []
    problems: list[str] = []
    for witness in policy.witnesses:
        found = False
        for line in checkpoint.cosignature_lines:
            timestamp, problem = _cosignature_of(witness, checkpoint, line)
            if problem is not None:
                problems.append(problem)
            if timestamp is not None:
                found = True
                break
        if found:
            cosigned.append(witness.name)
        elif not any(p.startswith(f"{witness.name}:") for p in problems):
            problems.append(f"{witness.name}: no cosignature")
    return WitnessCheck(
        len(cosigned) >= policy.quorum, policy.quorum, len(policy.witnesses), tuple(cosigned), tuple(problems)
    )


# --------------------------------------------------------------------------------- asking witnesses


def _state_path() -> Path:
    return genguard_home() / "witness-state.json"


def _load_state() -> dict[str, int]:
    try:
        data = json.loads(_state_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}


def _save_state(state: dict[str, int]) -> None:
    path = _state_path()
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
    staging.replace(path)


def _post(url: str, body: bytes, timeout: float) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read(_MAX_BODY)
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read(_MAX_BODY)


def _ask(
    witness: Witness, checkpoint: Checkpoint, tree: MerkleTree, old: int, timeout: float
) -> tuple[str | None, str | None, int, int]:
    """(cosignature line, problem, requests made, size the witness now holds)."""
    assert witness.url is not None
    note = dataclasses.replace(checkpoint, cosignature_lines=()).to_text()
    url = witness.url.rstrip("/") + "/add-checkpoint"
    size = checkpoint.tree_size
    for attempt in (1, 2):
        if old > size:
            return (
                None,
                f"{witness.name}: has cosigned size {old}, larger than {size} (a fork or rollback?)",
                attempt - 1,
                old,
            )
        proof = tree.consistency_proof(old, size) if 0 < old < size else []
        if len(proof) > MAX_PROOF_LINES:
            return (
                None,
                f"{witness.name}: consistency proof of {len(proof)} hashes is too long",
                attempt - 1,
                old,
            )
        body = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n" + note
        try:
            status, content_type, answer = _post(url, body.encode("utf-8"), timeout)
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            return None, f"{witness.name}: unreachable ({reason})", attempt, old
        text = answer.decode("utf-8", "replace")
        if status == 409 and content_type.startswith("text/x.tlog.size") and text.strip().isdigit():
            old = int(text.strip())
            continue
        if status != 200:
            return None, f"{witness.name}: HTTP {status} ({text.strip()[:200]})", attempt, old
        for line in text.splitlines():
            timestamp, problem = _cosignature_of(witness, checkpoint, line)
            if timestamp is not None:
                return line, None, attempt, size
            if problem is not None:
                return None, problem, attempt, old
        return None, f"{witness.name}: answered without a cosignature by its key", attempt, old
    return None, f"{witness.name}: still disagrees about the size it holds ({old})", 2, old


def request_cosignatures(
    store: AuditStore, checkpoint: Checkpoint, policy: WitnessPolicy, *, timeout: float = 10.0
) -> tuple[Checkpoint, tuple[WitnessOutcome, ...]]:
    """Ask every witness of `policy` that has a URL to cosign `checkpoint` (a checkpoint of `store`'s log).

    Returns the checkpoint with the cosignatures received added, and each witness's outcome. The
    cosignatures are also recorded in the log (an "audit.witnessed" event). Whether the quorum is met
    is `verify_cosignatures(returned checkpoint, policy).ok`."""
    from genguard.audit.checkpoint import log_origin

    if checkpoint.origin != log_origin(store):
        raise BadInputError(f"checkpoint: expected one of {log_origin(store)}, found {checkpoint.origin}")
    leaves = store.entry_hashes()[: checkpoint.tree_size]
    tree = MerkleTree(leaves)
    if tree.size != checkpoint.tree_size or tree.root() != checkpoint.root_hash:
        raise BadInputError("checkpoint: expected the root of this log's first entries, found another root")
    state = _load_state()
    lines = list(checkpoint.cosignature_lines)
    outcomes: list[WitnessOutcome] = []
    for witness in policy.witnesses:
        if witness.url is None:
            outcomes.append(WitnessOutcome(witness.name, False, f"{witness.name}: no URL in the policy", 0))
            continue
        key = f"{checkpoint.origin} {witness.vkey}"
        line, problem, requests, held = _ask(witness, checkpoint, tree, state.get(key, 0), timeout)
        state[key] = held
        if line is not None:
            lines.append(line)
        outcomes.append(WitnessOutcome(witness.name, line is not None, problem, requests))
    _save_state(state)
    cosigned = dataclasses.replace(checkpoint, cosignature_lines=tuple(lines))
    names = [o.name for o in outcomes if o.cosigned]
    store.append_event(
        WITNESSED_EVENT,
        {
            "origin": checkpoint.origin,
            "tree_size": checkpoint.tree_size,
            "root_hash": checkpoint.root_hash.hex(),
            "witnesses": names,
            "cosignatures": [line for line in lines if line.split(" ")[1] in names],
            "quorum": policy.quorum,
            "quorum_met": verify_cosignatures(cosigned, policy).ok,
        },
    )
    return cosigned, tuple(outcomes)
