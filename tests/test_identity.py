"""CAWG identity assertion (X.509) naming the organisation, with a chain generated here."""

from __future__ import annotations

import io
from pathlib import Path

import c2pa
import pytest
from cryptography.x509.oid import ObjectIdentifier

from genguard.guard.errors import BadInputError
from genguard.guard.imageio import encode_image
from genguard.guard.provenance import (
    CallbackSigner,
    ContentCredentials,
    IdentityConfig,
    LocalKeySigner,
    ManifestState,
    TsaConfig,
    read_manifest,
)
from genguard.guard.provenance.keys import create_development_chain
from tests._photos import photographs
from tests._tsa import local_tsa
from tests.test_content_credentials import FACTS

DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode_image(photographs(256, ("coffee",))["coffee"], "png")


def test_identity_assertion_names_the_organisation(png: bytes) -> None:
    ours = create_development_chain(organisation="Example Studio")
    org = create_development_chain(
        organisation="Example Studio", signer_name="Example Studio GmbH", extended_key_usage=DOCUMENT_SIGNING
    )
    identity = IdentityConfig.from_pem(org.signer_key_pem, org.chain_pem)
    signer = LocalKeySigner(ours.signer_key_pem, ours.chain_pem)
    with local_tsa() as tsa:
        signed = ContentCredentials(signer, tsa=TsaConfig(tsa.url), identity=identity).sign(
            png, "image/png", FACTS
        )
        reading = read_manifest(signed.data, "image/png", trust_anchors_pem=ours.root_pem + tsa.root_pem)
    assert reading.state is ManifestState.TRUSTED and reading.timestamped and reading.watermark_bound
    assert (reading.identity, reading.identity_issuer, reading.identity_valid) == (
        "Example Studio GmbH",
        "Example Studio",
        True,
    )
    with c2pa.Reader("image/png", io.BytesIO(signed.data)) as reader:
        labels = [a["label"] for a in reader.get_active_manifest()["assertions"]]
    assert "cawg.identity" in labels and "c2pa.soft-binding" in labels
    # the same image without an identity carries none
    plain = read_manifest(ContentCredentials(signer).sign(png, "image/png", FACTS).data, "image/png",
                          trust_anchors_pem=ours.root_pem)  # fmt: skip
    assert plain.identity is None and not plain.identity_valid and plain.state is ManifestState.TRUSTED
    # pixels changed after signing: the claim is invalid, whatever the identity says
    tampered = bytearray(signed.data)
    tampered[len(tampered) // 2] ^= 0xFF
    assert read_manifest(bytes(tampered), "image/png").state is ManifestState.INVALID


def test_identity_configuration_is_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ours = create_development_chain()
    other = create_development_chain()
    with pytest.raises(BadInputError, match="identity key"):
        IdentityConfig.from_pem(other.signer_key_pem, ours.chain_pem)  # key of another certificate
    callback = CallbackSigner(lambda data: b"", ours.chain_pem)
    with pytest.raises(BadInputError, match="identity: expected a local signing key"):
        ContentCredentials(callback, identity=IdentityConfig.from_pem(ours.signer_key_pem, ours.chain_pem))
    monkeypatch.delenv("GENGUARD_IDENTITY_CHAIN", raising=False)
    monkeypatch.setenv("GENGUARD_IDENTITY_KEY", str(tmp_path / "id.key"))
    with pytest.raises(BadInputError, match="GENGUARD_IDENTITY_CHAIN: expected a path"):
        IdentityConfig.from_env()
    monkeypatch.delenv("GENGUARD_IDENTITY_KEY")
    assert IdentityConfig.from_env() is None
