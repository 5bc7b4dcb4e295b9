"""A small C2SP tlog-witness for tests, on loopback: add-checkpoint, tlog-cosignature/v1 (Ed25519).

Written from the specs (c2sp.org/tlog-witness, tlog-cosignature, signed-note) independently of
genguard.audit.witness: its own note parsing, key ids and RFC 6962 consistency check."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def _hash_children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def consistent(old_size: int, size: int, old_root: bytes, root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2, written out here on its own."""
    if old_size == size:
        return not proof and old_root == root
    if old_size == 0:
        return not proof
    if old_size & (old_size - 1) == 0:  # a power of two: the old root starts the path
        proof = [old_root, *proof]
    if not proof:
        return False
    fn, sn = old_size - 1, size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _hash_children(c, fr)
            sr = _hash_children(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = _hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == root


@dataclass
class TestWitness:
    __test__ = False  # not a pytest test class
    name: str
    logs: dict[str, bytes]  # origin -> the log's raw Ed25519 key
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    latest: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # origin -> (size, root)
    bodies: list[bytes] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def public_key(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def vkey(self) -> str:
        key_id = hashlib.sha256(self.name.encode() + b"\n\x04" + self.public_key).digest()[:4]
        encoded = base64.b64encode(b"\x04" + self.public_key).decode()
        return f"{self.name}+{key_id.hex()}+{encoded}"

    def add_checkpoint(self, body: bytes) -> tuple[int, str, bytes]:
        self.bodies.append(body)
        text = body.decode()
        head, _, note = text.partition("\n\n")
        head_lines = head.split("\n")
        if not head_lines[0].startswith("old "):
            return 400, "text/plain", b"no old line"
        old = int(head_lines[0][4:])
        proof = [base64.b64decode(line) for line in head_lines[1:]]
        note_body, _, signatures = note.partition("\n\n")
        note_body += "\n"
        lines = note_body.split("\n")
        origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2])
        if origin not in self.logs:
            return 404, "text/plain", b"unknown log"
        log_key = self.logs[origin]
        verified = False
        for line in signatures.strip("\n").split("\n"):
            _, key_name, stamp = line.split(" ")
            raw = base64.b64decode(stamp)
            if raw[:4] != hashlib.sha256(key_name.encode() + b"\n\x01" + log_key).digest()[:4]:
                continue
            try:
                Ed25519PublicKey.from_public_bytes(log_key).verify(raw[4:], note_body.encode())
                verified = True
            except InvalidSignature:
                pass
        if not verified:
            return 403, "text/plain", b"no valid log signature"
        if old > size:
            return 400, "text/plain", b"old size larger than checkpoint"
        with self.lock:
            held_size, held_root = self.latest.get(origin, (0, b""))
            if old != held_size:
                return 409, "text/x.tlog.size", f"{held_size}\n".encode()
            if old == 0 and proof:
                return 422, "text/plain", b"proof must be empty from size 0"
            if old and not consistent(old, size, held_root, root, proof):
                return (409 if old == size else 422), "text/plain", b"inconsistent"
            self.latest[origin] = (size, root)
            now = int(time.time())
            signature = self.key.sign(f"cosignature/v1\ntime {now}\n".encode() + note_body.encode())
            key_id = hashlib.sha256(self.name.encode() + b"\n\x04" + self.public_key).digest()[:4]
            stamp = base64.b64encode(key_id + now.to_bytes(8, "big") + signature).decode()
            return 200, "text/plain", f"\u2014 {self.name} {stamp}\n".encode()


@contextmanager
def running(witness: TestWitness) -> Iterator[TestWitness]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/add-checkpoint":
                self.send_response(404)
                self.end_headers()
                return
            status, content_type, answer = witness.add_checkpoint(
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    witness.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield witness
    finally:
        server.shutdown()
        server.server_close()
