"""RFC 3161 timestamps on Content Credentials, from a real TSA (OpenSSL) on loopback."""

from __future__ import annotations

import datetime as dt
import socket
import time

import numpy as np
import pytest

from genguard.guard.errors import BadInputError, InfrastructureError
from genguard.guard.imageio import encode_image
from genguard.guard.provenance import ContentCredentials, LocalKeySigner, ManifestState, read_manifest
from genguard.guard.provenance.keys import DevelopmentChain, create_development_chain
from genguard.guard.provenance.tsa import TimestampState, TsaConfig, redact_url
from tests._photos import photographs
from tests._tsa import LocalTsa, local_tsa
from tests.test_content_credentials import FACTS


@pytest.fixture(scope="module")
def tsa() -> LocalTsa:
    with local_tsa() as running:
        yield running  # type: ignore[misc]


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode_image(photographs(256, ("astronaut",))["astronaut"], "png")


def _closed_port_url() -> str:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://user:secret@127.0.0.1:{port}/tsa?token=abc"


def test_timestamped_manifest_outlives_its_short_lived_certificate(tsa: LocalTsa, png: bytes) -> None:
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
    short = create_development_chain(not_after=expires)
    signer = LocalKeySigner(short.signer_key_pem, short.chain_pem)
    stamped = ContentCredentials(signer, tsa=TsaConfig(tsa.url)).sign(png, "image/png", FACTS)
    plain = ContentCredentials(signer).sign(png, "image/png", FACTS)
    assert stamped.timestamp == TimestampState.TIMESTAMPED and plain.timestamp == TimestampState.OFF
    assert tsa.requests  # c2pa asked our TSA
    anchors = short.root_pem + tsa.root_pem
    before = read_manifest(stamped.data, "image/png", trust_anchors_pem=anchors)
    assert before.state is ManifestState.TRUSTED and before.timestamped

    time.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 1.1)
    after = read_manifest(stamped.data, "image/png", trust_anchors_pem=anchors)
    assert after.state is ManifestState.TRUSTED and after.timestamped and after.codes == ()
    untimed = read_manifest(plain.data, "image/png", trust_anchors_pem=anchors)
    assert untimed.state is ManifestState.INVALID and "signingCredential.expired" in untimed.codes
    assert not untimed.timestamped


def test_unreachable_tsa_refuses_the_release_unless_optional(ours: DevelopmentChain, png: bytes) -> None:
    signer = LocalKeySigner(ours.signer_key_pem, ours.chain_pem)
    url = _closed_port_url()
    with pytest.raises(InfrastructureError, match=r"tsa: .*127\.0\.0\.1.*GENGUARD_TSA_OPTIONAL") as refused:
        ContentCredentials(signer, tsa=TsaConfig(url)).sign(png, "image/png", FACTS)
    assert "secret" not in str(refused.value) and "token" not in str(refused.value)

    optional = ContentCredentials(signer, tsa=TsaConfig(url, required=False)).sign(png, "image/png", FACTS)
    assert optional.timestamp == TimestampState.SKIPPED
    reading = read_manifest(optional.data, "image/png", trust_anchors_pem=ours.root_pem)
    assert reading.state is ManifestState.TRUSTED and not reading.timestamped


def test_tsa_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENGUARD_TSA_URL", raising=False)
    assert TsaConfig.from_env() is None
    monkeypatch.setenv("GENGUARD_TSA_URL", "http://tsa.example/")
    assert TsaConfig.from_env() == TsaConfig("http://tsa.example/", required=True)
    monkeypatch.setenv("GENGUARD_TSA_OPTIONAL", "yes")
    assert TsaConfig.from_env() == TsaConfig("http://tsa.example/", required=False)
    monkeypatch.setenv("GENGUARD_TSA_OPTIONAL", "perhaps")
    with pytest.raises(BadInputError, match="GENGUARD_TSA_OPTIONAL: expected .* found 'perhaps'"):
        TsaConfig.from_env()
    with pytest.raises(
        BadInputError, match=r"GENGUARD_TSA_URL: expected an http.*found 'ftp://tsa.example/x'"
    ):
        TsaConfig("ftp://u:pw@tsa.example/x?k=1")
    assert redact_url("https://u:pw@tsa.example:8443/ts?key=1") == "https://tsa.example:8443/ts"


@pytest.fixture(scope="module")
def ours() -> DevelopmentChain:
    return create_development_chain(organisation="Example Studio")


def test_png_fixture_is_a_photo(png: bytes) -> None:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000 and np.frombuffer(png, np.uint8).std() > 10


def test_release_records_its_timestamp_and_fails_closed_without_the_tsa(
    tsa: LocalTsa,
    embedded_cache: object,
    sqlite_url: str,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pathlib import Path

    from genguard.audit.store import AuditStore
    from genguard.guard.policy import load_pack
    from genguard.guard.types import GenerationParams, GenerationRequest
    from genguard.pipeline.governed import GovernedPipeline, load_diffusers_pipeline

    out = Path(str(tmp_path))
    tiny = load_diffusers_pipeline("embedded:tiny-sd")
    audit = AuditStore.open(sqlite_url)
    params = GenerationParams(width=256, height=256, steps=1, seed=5)

    def generate(env: dict[str, str]) -> object:
        for name in ("GENGUARD_TSA_URL", "GENGUARD_TSA_OPTIONAL"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        gp = GovernedPipeline(tiny, model_id="embedded:tiny-sd", policy=load_pack("default"), audit=audit)
        return gp(GenerationRequest("a quiet harbour", params=params), out_dir=out)

    stamped = generate({"GENGUARD_TSA_URL": tsa.url})
    detail = audit.get_generation(stamped.generation_id)  # type: ignore[attr-defined]
    assert detail is not None and detail.extra["content_credentials"]["timestamps"] == {"0": "timestamped"}

    skipped = generate({"GENGUARD_TSA_URL": _closed_port_url(), "GENGUARD_TSA_OPTIONAL": "1"})
    detail = audit.get_generation(skipped.generation_id)  # type: ignore[attr-defined]
    assert detail is not None and detail.extra["content_credentials"]["timestamps"] == {"0": "skipped"}

    written = sorted(out.iterdir())
    with pytest.raises(InfrastructureError, match="GENGUARD_TSA_OPTIONAL is not set"):
        generate({"GENGUARD_TSA_URL": _closed_port_url()})
    assert sorted(out.iterdir()) == written  # no image left
    (failed,) = [g for g in audit.list_generations() if g.status == "failed"]
    detail = audit.get_generation(failed.generation_id)
    assert detail is not None and "tsa:" in (detail.error or "")
