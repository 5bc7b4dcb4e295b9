"""Content Credentials with real c2pa-python: certificate chains generated here, real photographs."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import stat
import time
from pathlib import Path

import c2pa
import numpy as np
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from PIL import Image

from genguard.audit.store import AuditStore
from genguard.guard.errors import BadInputError
from genguard.guard.imageio import encode_image, load_image
from genguard.guard.provenance import (
    CallbackSigner,
    ContentCredentials,
    LocalKeySigner,
    ManifestFacts,
    ManifestState,
    read_manifest,
)
from genguard.guard.provenance.keys import DevelopmentChain, create_development_chain
from genguard.guard.types import (
    ClassifierScore,
    GenerationParams,
    GenerationRequest,
    ImageAction,
    ImageVerdict,
    PolicyRef,
)
from genguard.guard.watermark import ALGORITHM as PIXEL_ALGORITHM
from genguard.pipeline.cli import cli
from genguard.pipeline.governed import GovernedPipeline, load_diffusers_pipeline
from tests._photos import photographs

MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
MARK_ID = 0x1234_5678_9ABC_DEF0
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
FACTS = ManifestFacts(
    generation_id="4f1c0e0b9a8d4e7f8a6b5c4d3e2f1a0b",
    image_index=1,
    policy=PolicyRef("default", "1.2.0", hashlib.sha256(b"pack").hexdigest()),
    verdict=ImageVerdict(
        ImageAction.RELEASE, (ClassifierScore("nudenet", "nudenet-320n", "sexual", 0.03),), ()
    ),
    model_id="embedded:tiny-sd",
    pipeline_class="StableDiffusionPipeline",
    mark_id=MARK_ID,
    watermark_algorithm=PIXEL_ALGORITHM,
)


@pytest.fixture(scope="module")
def ours() -> DevelopmentChain:
    return create_development_chain(organisation="Example Studio")


@pytest.fixture(scope="module")
def credentials(ours: DevelopmentChain) -> ContentCredentials:
    return ContentCredentials(LocalKeySigner(ours.signer_key_pem, ours.chain_pem))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return photographs(512, ("astronaut",))["astronaut"]


def signed_png(credentials: ContentCredentials, photo: np.ndarray) -> bytes:
    return credentials.sign(encode_image(photo, "png"), "image/png", FACTS).data


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_signed_image_reads_trusted_with_its_facts(
    credentials: ContentCredentials, ours: DevelopmentChain, photo: np.ndarray, fmt: str
) -> None:
    original = encode_image(photo, fmt)  # type: ignore[arg-type]
    signed = credentials.sign(original, MIME[fmt], FACTS)
    reading = read_manifest(signed.data, MIME[fmt], trust_anchors_pem=ours.root_pem)

    assert reading.state is ManifestState.TRUSTED and reading.codes == () and reading.error is None
    assert (reading.generation_id, reading.image_index) == (FACTS.generation_id, FACTS.image_index)
    assert (reading.mark_id, reading.watermark_algorithm) == (MARK_ID, PIXEL_ALGORITHM)
    assert reading.watermark_bound and not reading.timestamped and signed.timestamp == "off"
    assert reading.policy_digest == FACTS.policy.digest
    assert (reading.signer, reading.issuer) == ("genguard signer", "Example Studio")
    # the manifest is added beside the pixels: they decode exactly as before
    assert np.array_equal(load_image(signed.data).rgb, load_image(original).rgb)


def test_altered_pixels_read_invalid_with_the_data_hash_code(
    credentials: ContentCredentials, ours: DevelopmentChain, photo: np.ndarray
) -> None:
    signed = bytearray(signed_png(credentials, photo))
    idat = signed.rfind(b"IDAT")
    signed[idat + 200] ^= 0xFF  # one byte of compressed pixel data
    reading = read_manifest(bytes(signed), "image/png", trust_anchors_pem=ours.root_pem)
    assert reading.state is ManifestState.INVALID
    assert "assertion.dataHash.mismatch" in reading.codes
    assert reading.mark_id == MARK_ID  # the manifest still says whose it was


def test_resaved_copy_has_no_manifest(
    credentials: ContentCredentials, ours: DevelopmentChain, photo: np.ndarray
) -> None:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(signed_png(credentials, photo))).save(buffer, format="PNG")
    reading = read_manifest(buffer.getvalue(), "image/png", trust_anchors_pem=ours.root_pem)
    assert reading.state is ManifestState.ABSENT and reading.generation_id is None


def test_foreign_signer_is_valid_but_not_trusted(ours: DevelopmentChain, photo: np.ndarray) -> None:
    foreign = create_development_chain(organisation="Someone Else")
    other = ContentCredentials(LocalKeySigner(foreign.signer_key_pem, foreign.chain_pem))
    data = other.sign(encode_image(photo, "png"), "image/png", FACTS).data
    reading = read_manifest(data, "image/png", trust_anchors_pem=ours.root_pem)
    assert reading.state is ManifestState.VALID
    assert reading.codes == ("signingCredential.untrusted",) and reading.issuer == "Someone Else"
    # and with no anchors at all, even our own signature is only valid
    assert read_manifest(data, "image/png", trust_anchors_pem=b"").state is ManifestState.VALID


def test_certificate_expired_without_timestamp_reads_invalid(
    ours: DevelopmentChain, photo: np.ndarray
) -> None:
    # valid when signing (c2pa refuses an expired signer), expired one second later
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
    short = create_development_chain(not_after=expires)
    data = (
        ContentCredentials(LocalKeySigner(short.signer_key_pem, short.chain_pem))
        .sign(encode_image(photo, "png"), "image/png", FACTS)
        .data
    )
    time.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 1.1)
    reading = read_manifest(data, "image/png", trust_anchors_pem=short.root_pem)
    assert reading.state is ManifestState.INVALID and "signingCredential.expired" in reading.codes
    # configured as the signer now, the same chain is refused before c2pa sees it
    with pytest.raises(BadInputError, match=r"chain: first certificate .* expired on"):
        LocalKeySigner(short.signer_key_pem, short.chain_pem, chain_source="chain")


def test_corrupt_or_truncated_manifest_reads_invalid_with_an_error(
    credentials: ContentCredentials, photo: np.ndarray
) -> None:
    signed = signed_png(credentials, photo)
    store = signed.find(b"caBX")  # the PNG chunk that holds the manifest store
    corrupt = bytearray(signed)
    for i in range(store + 60, store + 200):
        corrupt[i] ^= 0x55
    for damaged in (bytes(corrupt), signed[: store + 300]):
        reading = read_manifest(damaged, "image/png")
        assert reading.state is ManifestState.INVALID and reading.error
    garbage = read_manifest(encode_image(photo, "png"), "image/png", sidecar=b"not a manifest" * 8)
    assert garbage.state is ManifestState.INVALID and garbage.error


def test_sidecar_round_trip(
    credentials: ContentCredentials, ours: DevelopmentChain, photo: np.ndarray
) -> None:
    original = encode_image(photo, "png")
    detached = credentials.sign(original, "image/png", FACTS, embed=False)
    assert detached.data == original  # the image is left as it was
    assert read_manifest(detached.data, "image/png").state is ManifestState.ABSENT
    reading = read_manifest(
        detached.data, "image/png", trust_anchors_pem=ours.root_pem, sidecar=detached.manifest
    )
    assert reading.state is ManifestState.TRUSTED and reading.mark_id == MARK_ID
    other = encode_image(photographs(512, ("coffee",))["coffee"], "png")
    mismatch = read_manifest(other, "image/png", trust_anchors_pem=ours.root_pem, sidecar=detached.manifest)
    assert mismatch.state is ManifestState.INVALID and "assertion.dataHash.mismatch" in mismatch.codes


def test_manifest_holds_the_created_action_governance_and_soft_binding(
    credentials: ContentCredentials, photo: np.ndarray
) -> None:
    prompt = "a secret prompt that must never appear"
    signed = credentials.sign(encode_image(photo, "png"), "image/png", FACTS)
    with c2pa.Reader("image/png", io.BytesIO(signed.data)) as reader:
        manifest = reader.get_active_manifest()
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    created = assertions["c2pa.actions.v2"]["actions"][0]
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"].endswith("/digitalsourcetype/trainedAlgorithmicMedia")
    agent = created["softwareAgent"]
    assert agent["name"] == "genguard" and agent["version"]
    assert agent["org.genguard.pipeline_class"] == "StableDiffusionPipeline"
    assert agent["org.genguard.model_id"] == "embedded:tiny-sd"
    governance = assertions["org.genguard.governance"]
    assert governance["policy"] == {"name": "default", "version": "1.2.0", "digest": FACTS.policy.digest}
    assert (
        governance["verdict"]["action"] == "release" and governance["verdict"]["scores"][0]["score"] == 0.03
    )
    # C2PA 2.3: a watermark bound to this manifest is announced by c2pa.watermarked.bound beside the
    # soft-binding assertion, whose algorithm has an entity-specific (reverse-domain) name
    bound = assertions["c2pa.actions.v2"]["actions"][1]
    assert bound["action"] == "c2pa.watermarked.bound" and bound["softwareAgent"]["name"] == "genguard"
    assert assertions["c2pa.soft-binding"] == {
        "alg": "org.genguard.watermark.pixel.v3",
        "blocks": [
            {"scope": {}, "value": f"0x{MARK_ID:016x}"}
        ],  # the one mark-id form (genguard.guard.markid)
    }
    assert re.fullmatch(r"[a-z0-9]+(\.[a-zA-Z0-9]+)+", assertions["c2pa.soft-binding"]["alg"])
    assert "thumbnail" not in json.dumps(manifest)
    assert b"prompt" not in signed.manifest and prompt.encode() not in signed.manifest


def test_older_manifest_with_the_internal_algorithm_name_still_reads(
    ours: DevelopmentChain, photo: np.ndarray
) -> None:
    # what genguard wrote before the C2PA soft-binding names: internal alg, no watermarked action
    older = {
        "claim_generator_info": [{"name": "genguard", "version": "0.1.0"}],
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": TRAINED}]},
            },
            {"label": "org.genguard.governance", "data": {"generation_id": "g1", "image_index": 0}},
            {
                "label": "c2pa.soft-binding",
                "data": {"alg": PIXEL_ALGORITHM, "blocks": [{"scope": {}, "value": str(MARK_ID)}]},
            },
        ],
    }
    info = c2pa.C2paSignerInfo(b"es256", ours.chain_pem, ours.signer_key_pem, None)
    with c2pa.Signer.from_info(info) as signer, c2pa.Builder(json.dumps(older)) as builder:
        out = io.BytesIO()
        builder.sign(signer, "image/png", io.BytesIO(encode_image(photo, "png")), out)
    reading = read_manifest(out.getvalue(), "image/png", trust_anchors_pem=ours.root_pem)
    assert reading.state is ManifestState.TRUSTED and reading.generation_id == "g1"
    assert (reading.mark_id, reading.watermark_algorithm) == (MARK_ID, PIXEL_ALGORITHM)
    assert not reading.watermark_bound


def test_callback_signer_for_a_kms(ours: DevelopmentChain, photo: np.ndarray) -> None:
    key = serialization.load_pem_private_key(ours.signer_key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    calls: list[int] = []

    def kms_sign(data: bytes) -> bytes:  # stands in for a remote KMS: DER ECDSA over SHA-256
        calls.append(len(data))
        return key.sign(data, ec.ECDSA(hashes.SHA256()))

    signer = CallbackSigner(kms_sign, ours.chain_pem)
    data = ContentCredentials(signer).sign(encode_image(photo, "jpeg"), "image/jpeg", FACTS).data
    assert (
        calls
        and read_manifest(data, "image/jpeg", trust_anchors_pem=ours.root_pem).state is ManifestState.TRUSTED
    )


def test_bad_signing_configuration_is_named_without_key_material(
    ours: DevelopmentChain, tmp_path: Path
) -> None:
    foreign = create_development_chain()
    root = ours.chain_pem[ours.chain_pem.index(b"-----BEGIN CERTIFICATE-----", 1) :]
    cases = {
        "wrong.key": (foreign.signer_key_pem, ours.chain_pem, "found a different key"),
        "root.key": (ours.root_key_pem, root, "found a CA certificate"),
        "broken.key": (
            ours.signer_key_pem[:60] + b"\n-----END PRIVATE KEY-----\n",
            ours.chain_pem,
            "does not parse",
        ),
    }
    secret_lines = {
        line
        for pem in (foreign.signer_key_pem, ours.signer_key_pem, ours.root_key_pem)
        for line in pem.splitlines()[1:-1]
    }
    for name, (key_pem, chain_pem, expected) in cases.items():
        (tmp_path / name).write_bytes(key_pem)
        (tmp_path / f"{name}.chain").write_bytes(chain_pem)
        with pytest.raises(BadInputError, match=expected) as raised:
            LocalKeySigner.from_files(tmp_path / name, tmp_path / f"{name}.chain")
        message = str(raised.value)
        assert str(tmp_path) in message
        assert not any(line.decode() in message for line in secret_lines)
    with pytest.raises(BadInputError, match="no such file"):
        LocalKeySigner.from_files(tmp_path / "missing.key", tmp_path / "missing.pem")


def test_keys_init_writes_private_keys_0600_and_refuses_to_overwrite() -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["keys", "init"])
    assert first.exit_code == 0, first.output
    key_dir = Path(os.environ["GENGUARD_HOME"]) / "keys" / "c2pa"
    for name in ("signer.key", "root-ca.key"):
        assert stat.S_IMODE((key_dir / name).stat().st_mode) == 0o600
    key_body = (key_dir / "signer.key").read_text().splitlines()[1]
    assert key_body not in first.output and "PRIVATE KEY" not in first.output and "sha256 " in first.output
    before = (key_dir / "signer.key").read_bytes()
    again = runner.invoke(cli, ["keys", "init"])
    assert again.exit_code != 0 and "already exists" in str(again.exception)
    assert (key_dir / "signer.key").read_bytes() == before
    forced = runner.invoke(cli, ["keys", "init", "--force"])
    assert forced.exit_code == 0 and (key_dir / "signer.key").read_bytes() != before
    shown = runner.invoke(cli, ["keys", "show", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["chain_has_trust_anchor"] is True


def test_first_use_creates_development_keys_once(capsys: pytest.CaptureFixture[str]) -> None:
    ContentCredentials.from_config()
    assert "trusted by nobody else" in capsys.readouterr().err
    ContentCredentials.from_config()
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def tiny_sd(embedded_cache: Path) -> object:
    return load_diffusers_pipeline("embedded:tiny-sd")


@pytest.mark.parametrize(("fmt", "sidecar"), [("png", False), ("webp", True)])
def test_generated_images_are_signed_and_recorded(
    tiny_sd: object, sqlite_url: str, tmp_path: Path, fmt: str, sidecar: bool
) -> None:
    from genguard.guard.policy import load_pack

    gp = GovernedPipeline(
        tiny_sd,
        model_id="embedded:tiny-sd",
        policy=load_pack("default"),
        audit=AuditStore.open(sqlite_url),
        output_format=fmt,
        sidecar=sidecar,
    )
    params = GenerationParams(width=512, height=512, steps=2, seed=3)
    result = gp(GenerationRequest("a quiet harbour", params=params), out_dir=tmp_path)
    (image,) = result.released
    assert image.path is not None and image.path.suffix == f".{fmt}"
    data = image.path.read_bytes()
    recorded = gp.audit.get_generation(result.generation_id).images[0]  # type: ignore[union-attr]
    assert hashlib.sha256(data).hexdigest() == image.sha256 == recorded.sha256
    assert recorded.manifest == image.manifest
    sidecar_bytes = image.path.with_suffix(".c2pa").read_bytes() if sidecar else None
    reading = read_manifest(data, MIME[fmt], sidecar=sidecar_bytes)  # anchors: the development root
    assert reading.state is ManifestState.TRUSTED
    assert (reading.generation_id, reading.mark_id) == (result.generation_id, image.mark_id)
    assert reading.policy_digest == result.decision.policy.digest
