"""Signing keys and certificates for Content Credentials. Pure `cryptography` code, no c2pa.

`genguard keys init` writes, under GENGUARD_HOME/keys/c2pa/:
  root-ca.key, root-ca.pem      a development root CA (self-signed, CA:TRUE, keyCertSign)
  signer.key, signer-chain.pem  an ES256 (P-256) end-entity certificate, chain end-entity first
Private keys are written with mode 0600. c2pa-rs accepts an end-entity certificate with CA:FALSE,
digitalSignature key usage, subject and authority key identifiers and the emailProtection EKU
(other EKUs need `trust.trust_config` on both the signing and the reading side).

Configuration (paths): GENGUARD_SIGNING_KEY (PEM private key), GENGUARD_SIGNING_CHAIN (PEM chain,
end-entity first), GENGUARD_TRUST_ANCHORS (PEM roots that mean "ours"); each defaults to the files
above. A KMS or HSM plugs in through the `Signer` protocol (`CallbackSigner`).

Error messages name the file and the problem, never key material.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from genguard.guard import config
from genguard.guard.errors import BadInputError

KEY_DIR_NAME = "c2pa"
ROOT_KEY, ROOT_CERT, SIGNER_KEY, SIGNER_CHAIN = "root-ca.key", "root-ca.pem", "signer.key", "signer-chain.pem"
DEVELOPMENT_NOTICE = (
    "genguard: created development signing keys in {directory} (trusted by nobody else; "
    "run `genguard keys init` or set GENGUARD_SIGNING_KEY and GENGUARD_SIGNING_CHAIN for your own)"
)

# EKUs that c2pa-rs accepts without a custom trust configuration: emailProtection, documentSigning,
# timeStamping, OCSPSigning, Microsoft's and C2PA's own claim-signing purposes.
_ACCEPTED_EKUS = frozenset(
    {
        ExtendedKeyUsageOID.EMAIL_PROTECTION,
        ObjectIdentifier("1.3.6.1.5.5.7.3.36"),
        ExtendedKeyUsageOID.TIME_STAMPING,
        ExtendedKeyUsageOID.OCSP_SIGNING,
        ObjectIdentifier("1.3.6.1.4.1.311.76.59.1.9"),
        ObjectIdentifier("1.3.6.1.4.1.62558.2.1"),
    }
)


@runtime_checkable
class Signer(Protocol):
    """The signing seam (a KMS, an HSM, a local key).

    `algorithm`: the C2PA name, "es256", "es384" or "ed25519". `certificate_chain_pem`: the chain,
    end-entity first. `sign(data)`: the signature over `data` (ECDSA: DER or raw r||s, both accepted).
    """

    @property
    def algorithm(self) -> str: ...

    @property
    def certificate_chain_pem(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


class _ChainedSigner:
    """What both signers expose besides `sign`: the algorithm and the certificate chain (PEM)."""

    _algorithm: str
    _chain_pem: bytes

    @property
    def algorithm(self) -> str:
        return self._algorithm

    @property
    def certificate_chain_pem(self) -> bytes:
        return self._chain_pem


class LocalKeySigner(_ChainedSigner):
    """A private key held in this process (from PEM files). c2pa signs with it natively."""

    def __init__(
        self, key_pem: bytes, chain_pem: bytes, *, key_source: str = "key", chain_source: str = "chain"
    ) -> None:
        self._key = _load_private_key(key_pem, key_source)
        self._key_pem = key_pem
        self._chain_pem = chain_pem
        self._algorithm = _algorithm_of(self._key, key_source)
        self._source = key_source
        check_signing_chain(chain_pem, chain_source, key=self._key, key_source=key_source)

    @classmethod
    def from_files(cls, key_path: Path, chain_path: Path) -> LocalKeySigner:
        return cls(
            _read(key_path, "private key"),
            _read(chain_path, "certificate chain"),
            key_source=str(key_path),
            chain_source=str(chain_path),
        )

    @property
    def private_key_pem(self) -> bytes:
        """The key itself, for handing to c2pa's native signer; never log or store it."""
        return self._key_pem

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        digest = hashes.SHA384() if self._algorithm == "es384" else hashes.SHA256()
        return self._key.sign(data, ec.ECDSA(digest))

    def __repr__(self) -> str:  # never the key
        return f"LocalKeySigner({self._source!r}, {self._algorithm})"


class CallbackSigner(_ChainedSigner):
    """A signer whose private key lives elsewhere: `callback(data) -> signature` (a KMS or HSM call)."""

    def __init__(
        self,
        callback: Callable[[bytes], bytes],
        certificate_chain_pem: bytes,
        algorithm: str = "es256",
        *,
        chain_source: str = "certificate chain",
    ) -> None:
        if algorithm not in ("es256", "es384", "ed25519"):
            raise BadInputError(f"algorithm: expected 'es256', 'es384' or 'ed25519', found {algorithm!r}")
        check_signing_chain(certificate_chain_pem, chain_source)
        self._callback = callback
        self._chain_pem = certificate_chain_pem
        self._algorithm = algorithm

    def sign(self, data: bytes) -> bytes:
        return self._callback(data)


@dataclass(frozen=True)
class KeyFiles:
    """Where the signing key, its chain and the trust anchors are read from."""

    key: Path
    chain: Path
    trust_anchors: Path


@dataclass(frozen=True)
class CreatedKeys:
    """What `init_keys` wrote. `fingerprint`: SHA-256 of the signing certificate (DER), hex."""

    directory: Path
    files: KeyFiles
    root_key: Path
    fingerprint: str


@dataclass(frozen=True)
class DevelopmentChain:
    """A root CA and an end-entity signing certificate, all PEM. Private keys: keep them secret."""

    root_key_pem: bytes
    root_pem: bytes
    signer_key_pem: bytes
    chain_pem: bytes  # end-entity, then root


def default_key_dir() -> Path:
    return config.genguard_home() / "keys" / KEY_DIR_NAME


def configured_key_files() -> KeyFiles:
    """The paths the environment names, else the files `genguard keys init` writes."""
    directory = default_key_dir()
    key, chain = os.environ.get("GENGUARD_SIGNING_KEY"), os.environ.get("GENGUARD_SIGNING_CHAIN")
    if bool(key) != bool(chain):
        given, missing = ("GENGUARD_SIGNING_KEY", "GENGUARD_SIGNING_CHAIN")[:: 1 if key else -1]
        raise BadInputError(f"{missing}: expected a path when {given} is set, found nothing")
    anchors = os.environ.get("GENGUARD_TRUST_ANCHORS")
    return KeyFiles(
        key=Path(key).expanduser() if key else directory / SIGNER_KEY,
        chain=Path(chain).expanduser() if chain else directory / SIGNER_CHAIN,
        trust_anchors=Path(anchors).expanduser() if anchors else directory / ROOT_CERT,
    )


def configured_signer() -> LocalKeySigner:
    """The configured local signer. With nothing configured and no keys yet, development keys are
    created first (like the watermark key) and that is said once on stderr."""
    files = configured_key_files()
    if not os.environ.get("GENGUARD_SIGNING_KEY") and not files.key.exists():
        try:
            created = init_keys()
        except BadInputError:
            pass  # another process created them meanwhile
        else:
            print(DEVELOPMENT_NOTICE.format(directory=created.directory), file=sys.stderr)
    return LocalKeySigner.from_files(files.key, files.chain)


def trust_anchors_from_config() -> bytes | None:
    """The PEM roots that mean "ours": GENGUARD_TRUST_ANCHORS, else the development root if it exists."""
    explicit = os.environ.get("GENGUARD_TRUST_ANCHORS")
    path = Path(explicit).expanduser() if explicit else default_key_dir() / ROOT_CERT
    if not explicit and not path.exists():
        return None
    data = _read(path, "trust anchors")
    load_certificates(data, str(path))
    return data


def create_development_chain(
    *,
    organisation: str = "genguard development",
    signer_name: str = "genguard signer",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    extended_key_usage: ObjectIdentifier = ExtendedKeyUsageOID.EMAIL_PROTECTION,
) -> DevelopmentChain:
    """A fresh root CA (10 years) and an ES256 end-entity certificate (default: 2 years) it issued.
    `extended_key_usage`: emailProtection for claim signing; documentSigning suits a CAWG identity."""
    now = dt.datetime.now(dt.UTC)
    start = not_before if not_before is not None else now - dt.timedelta(minutes=5)
    end = not_after if not_after is not None else now + dt.timedelta(days=730)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(f"{organisation} root CA", organisation)
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(start, now - dt.timedelta(minutes=5)))
        .not_valid_after(max(end, now + dt.timedelta(days=3650)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = (
        x509.CertificateBuilder()
        .subject_name(_name(signer_name, organisation))
        .issuer_name(root_name)
        .public_key(signer_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([extended_key_usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    root_pem = root.public_bytes(serialization.Encoding.PEM)
    return DevelopmentChain(
        root_key_pem=_private_pem(root_key),
        root_pem=root_pem,
        signer_key_pem=_private_pem(signer_key),
        chain_pem=signer.public_bytes(serialization.Encoding.PEM) + root_pem,
    )


def init_keys(
    directory: Path | None = None, *, force: bool = False, organisation: str | None = None
) -> CreatedKeys:
    """Create a development root CA and signing certificate in `directory` (default: the key folder),
    for `organisation` (default: "genguard development"; a service tenant's keys carry its name).

    Refuses to replace existing keys unless `force`. The files are written in a private temporary
    folder first and moved into place, so a crash never leaves half a key set.
    """
    target = directory if directory is not None else default_key_dir()
    names = (ROOT_KEY, ROOT_CERT, SIGNER_KEY, SIGNER_CHAIN)
    existing = [name for name in names if (target / name).exists()]
    if existing and not force:
        raise BadInputError(
            f"{target / existing[0]}: already exists; expected no keys there (pass --force to replace them)"
        )
    chain = (
        create_development_chain(organisation=organisation)
        if organisation is not None
        else create_development_chain()
    )
    config.private_dir(target.parent)  # keys/: 0700
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        config.write_secret_file(staging / ROOT_KEY, chain.root_key_pem)
        config.write_secret_file(staging / SIGNER_KEY, chain.signer_key_pem)
        (staging / ROOT_CERT).write_bytes(chain.root_pem)
        (staging / SIGNER_CHAIN).write_bytes(chain.chain_pem)
        if not target.exists():
            try:
                os.rename(staging, target)  # atomic: all four files or none
            except OSError:  # created meanwhile by another process
                raise BadInputError(f"{target}: already exists; expected no keys there") from None
        else:
            for name in names:
                os.replace(staging / name, target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    leaf = load_certificates(chain.chain_pem, "chain")[0]
    return CreatedKeys(
        directory=target,
        files=KeyFiles(
            key=target / SIGNER_KEY, chain=target / SIGNER_CHAIN, trust_anchors=target / ROOT_CERT
        ),
        root_key=target / ROOT_KEY,
        fingerprint=certificate_fingerprint(leaf),
    )


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def check_signing_chain(
    chain_pem: bytes,
    source: str,
    *,
    key: object | None = None,
    key_source: str = "key",
    at: dt.datetime | None = None,
) -> x509.Certificate:
    """The end-entity certificate of a chain, after the checks c2pa-rs would fail on later, less clearly."""
    leaf = load_certificates(chain_pem, source)[0]
    if key is not None:
        ours = key.public_key().public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        theirs = leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if ours != theirs:
            raise BadInputError(
                f"{key_source}: expected the private key of the first certificate in {source} "
                f"({leaf.subject.rfc4514_string()}), found a different key"
            )
    where = f"{source}: first certificate ({leaf.subject.rfc4514_string()})"
    constraints = _extension(leaf, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise BadInputError(f"{where}: expected an end-entity certificate (CA:FALSE), found a CA certificate")
    usage = _extension(leaf, x509.KeyUsage)
    if usage is None or not usage.digital_signature:
        raise BadInputError(
            f"{where}: expected key usage digitalSignature, found {'none' if usage is None else 'it absent'}"
        )
    ekus = _extension(leaf, x509.ExtendedKeyUsage)
    if ekus is None or not _ACCEPTED_EKUS.intersection(ekus):
        found = "no extended key usage" if ekus is None else ", ".join(oid.dotted_string for oid in ekus)
        raise BadInputError(
            f"{where}: expected extended key usage emailProtection or documentSigning, found {found}"
        )
    now = at if at is not None else dt.datetime.now(dt.UTC)
    if now > leaf.not_valid_after_utc:
        raise BadInputError(
            f"{where}: expected a valid certificate, found it expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    if now < leaf.not_valid_before_utc:
        raise BadInputError(
            f"{where}: expected a valid certificate, found it not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    return leaf


# -- internals -------------------------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadInputError(f"{path}: expected a PEM {what}, found no such file") from None
    except OSError as error:
        raise BadInputError(
            f"{path}: expected a readable PEM {what}, found it unreadable ({error.strerror})"
        ) from None


def load_certificates(data: bytes, source: str) -> list[x509.Certificate]:
    """All certificates of a PEM file (at least one), or a clear error naming `source`."""
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise BadInputError(f"{source}: expected PEM certificates, found none that parse") from None
    return certificates


def _load_private_key(data: bytes, source: str) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise BadInputError(
            f"{source}: expected an unencrypted PEM private key, found an encrypted one"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        # The library's message is not repeated: it could quote the input.
        raise BadInputError(
            f"{source}: expected a PEM private key, found data that does not parse as one"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise BadInputError(
            f"{source}: expected an EC (P-256, P-384) or Ed25519 private key, found {type(key).__name__}"
        )
    return key


def _algorithm_of(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, source: str) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    by_curve = {"secp256r1": "es256", "secp384r1": "es384"}
    if key.curve.name not in by_curve:
        raise BadInputError(f"{source}: expected an EC key on P-256 or P-384, found curve {key.curve.name}")
    return by_curve[key.curve.name]


_Extension = TypeVar("_Extension", bound=x509.ExtensionType)


def _extension(certificate: x509.Certificate, kind: type[_Extension]) -> _Extension | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
        ]
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
