"""A real RFC 3161 time-stamp authority on loopback for tests: OpenSSL's `ts -reply` behind a small
HTTP handler, with a TSA certificate issued by a root generated here (never the internet)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_CONFIG = """
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/chain.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


@dataclass(frozen=True)
class LocalTsa:
    url: str
    root_pem: bytes  # the root that issued the TSA certificate (a trust anchor for timestamps)
    requests: list[int]  # sizes of the queries answered, one per request


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test TSA"),
        ]
    )


def _tsa_chain(directory: Path) -> bytes:
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(_name("Test TSA root"))
        .issuer_name(_name("Test TSA root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Test TSA"))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    root_pem = root.public_bytes(pem)
    (directory / "tsa.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (directory / "tsa.pem").write_bytes(cert.public_bytes(pem))
    (directory / "chain.pem").write_bytes(cert.public_bytes(pem) + root_pem)
    (directory / "serial").write_text("01\n")
    (directory / "tsa.cnf").write_text(_CONFIG.format(dir=directory))
    return root_pem


@contextmanager
def local_tsa() -> Iterator[LocalTsa]:
    """Serve RFC 3161 on http://127.0.0.1:PORT/ until the block ends."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl: expected the `openssl` command for the test TSA, found none on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        root_pem = _tsa_chain(directory)
        requests: list[int] = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                query = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    requests.append(len(query))
                    done = subprocess.run(
                        [
                            openssl,
                            "ts",
                            "-reply",
                            "-config",
                            str(directory / "tsa.cnf"),
                            "-queryfile",
                            "/dev/stdin",
                            "-out",
                            "/dev/stdout",
                        ],
                        input=query,
                        capture_output=True,
                        check=False,
                    )
                if done.returncode != 0 or not done.stdout:
                    self.send_response(500)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(done.stdout)))
                self.end_headers()
                self.wfile.write(done.stdout)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield LocalTsa(f"http://127.0.0.1:{server.server_address[1]}/", root_pem, requests)
        finally:
            server.shutdown()
            server.server_close()
