"""The soft-binding resolution API: real released images from the embedded model in a real SQLite audit
store, the app in-process (starlette's TestClient), the manifest read back by c2pa."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data as skdata

from genguard.audit.store import AuditStore
from genguard.guard.markid import format_mark_id
from genguard.guard.provenance.content_credentials import ManifestState, read_manifest
from genguard.guard.types import GenerationParams, GenerationRequest
from genguard.pipeline.service.app import create_app
from genguard.pipeline.service.context import ServiceConfig
from genguard.pipeline.service.routes_matches import PHASH_ALG, WATERMARK_ALGS
from tests._home import module_home

torch.set_num_threads(1)
PIXEL = "org.genguard.watermark.pixel.v3"
PROMPT = "a small red boat in a harbour"


@dataclass
class Released:
    client: TestClient
    data: bytes
    mark_id: int
    phash: int
    manifest: bytes
    generation_id: str


home, genguard_home = module_home("matches-home")


@pytest.fixture(scope="module")
def released(home: Path, embedded_cache: Path) -> Iterator[Released]:
    from genguard.pipeline.governed import GovernedPipeline

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENGUARD_HOME", str(home))
        patch.delenv("GENGUARD_DB", raising=False)
        patch.delenv("GENGUARD_WATERMARK_KEY", raising=False)
        url = f"sqlite:///{home / 'audit.sqlite3'}"
        pipe = GovernedPipeline.from_pretrained("embedded:tiny-sd", audit=AuditStore.open(url))
        # 256 px: at 128 the pixel mark does not read back (the perceptual hash alone would match)
        params = GenerationParams(width=256, height=256, steps=2, num_images=1, seed=5)
        result = pipe(GenerationRequest(PROMPT, params=params), out_dir=home / "out")
        (image,) = result.released
        assert image.mark_id is not None and image.manifest is not None
        data = image.path.read_bytes()
        stored = pipe.audit.reader().image_by_mark_id(image.mark_id)
        assert stored is not None
        config = ServiceConfig(db_url=url, files_dir=home / "files", workers=0, verify_burst=1000)
        with TestClient(create_app(config)) as client:
            yield Released(client, data, image.mark_id, stored.phash, image.manifest, result.generation_id)


def b64(number: int) -> str:
    return base64.b64encode(number.to_bytes(8, "big")).decode()


def stripped(data: bytes) -> bytes:
    """The same pixels re-encoded: the manifest is gone, the watermark stays."""
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(out, format="PNG")
    return out.getvalue()


def test_by_binding_watermark_in_every_accepted_form_then_the_manifest(released: Released) -> None:
    client, mark = released.client, released.mark_id
    expected = [{"manifestId": f"urn:genguard:mark:{format_mark_id(mark)}", "similarityScore": 100}]
    text = format_mark_id(mark)
    url_safe = base64.urlsafe_b64encode(mark.to_bytes(8, "big")).decode().rstrip("=")
    for value in (b64(mark), text, url_safe):
        answer = client.get("/v1/matches/byBinding", params={"alg": PIXEL, "value": value})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"matches": expected}

    manifest = client.get(f"/v1/manifests/{expected[0]['manifestId']}")
    assert manifest.status_code == 200 and manifest.headers["content-type"] == "application/c2pa"
    assert manifest.content == released.manifest
    # The served manifest store, as a sidecar of the stripped image, reads and validates: it names the mark.
    reading = read_manifest(stripped(released.data), "image/png", sidecar=manifest.content)
    assert reading.state in (ManifestState.TRUSTED, ManifestState.VALID) or reading.codes
    assert reading.mark_id == mark and reading.generation_id == released.generation_id


def test_by_binding_perceptual_hash_scores_by_distance(released: Released) -> None:
    client, phash = released.client, released.phash
    exact = client.get("/v1/matches/byBinding", params={"alg": PHASH_ALG, "value": b64(phash)}).json()
    assert exact["matches"][0] == {
        "manifestId": f"urn:genguard:mark:{format_mark_id(released.mark_id)}",
        "similarityScore": 100,
    }
    near = client.get("/v1/matches/byBinding", params={"alg": PHASH_ALG, "value": b64(phash ^ 0b10101)})
    assert near.json()["matches"][0]["similarityScore"] == round(100 * 61 / 64)
    far = client.get("/v1/matches/byBinding", params={"alg": PHASH_ALG, "value": b64(phash ^ (2**40 - 1))})
    assert far.json() == {"matches": []}


def test_unknown_malformed_and_unsupported(released: Released) -> None:
    client = released.client
    unknown = client.get("/v1/matches/byBinding", params={"alg": PIXEL, "value": b64(released.mark_id ^ 1)})
    assert unknown.status_code == 200 and unknown.json() == {"matches": []}
    missing = client.get(f"/v1/manifests/urn:genguard:mark:{format_mark_id(released.mark_id ^ 1)}")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "manifestId"
    malformed = client.get("/v1/manifests/urn:c2pa:1234")
    assert malformed.status_code == 400 and "urn:genguard:mark:" in malformed.json()["error"]["message"]
    alg = client.get("/v1/matches/byBinding", params={"alg": "com.example.wm.1", "value": b64(1)})
    assert alg.status_code == 400 and alg.json()["error"]["param"] == "alg"
    assert "com.example.wm.1" in alg.json()["error"]["message"]
    value = client.get("/v1/matches/byBinding", params={"alg": PIXEL, "value": "not*base64"})
    assert value.status_code == 400 and value.json()["error"]["param"] == "query.value"
    short = client.get("/v1/matches/byBinding", params={"alg": PHASH_ALG, "value": "AAAA"})
    assert short.status_code == 400 and short.json()["error"]["param"] == "query.value"
    assert client.get("/v1/matches/byBinding", params={"alg": PIXEL}).status_code == 400


def test_by_content_resolves_a_stripped_copy_and_not_a_photo(released: Released) -> None:
    client = released.client
    copy = stripped(released.data)
    found = client.post("/v1/matches/byContent", files={"image": ("x.png", copy, "image/png")})
    assert found.status_code == 200, found.text
    ident = f"urn:genguard:mark:{format_mark_id(released.mark_id)}"
    assert found.json()["matches"][0] == {"manifestId": ident, "similarityScore": 100}
    assert PROMPT not in found.text and released.generation_id not in found.text
    raw = client.post(
        "/v1/matches/byContent",
        params={"alg": PIXEL, "maxResults": 1},
        content=copy,
        headers={"content-type": "image/png"},
    )
    assert [m["manifestId"] for m in raw.json()["matches"]] == [ident]

    photo = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(photo, format="PNG")  # type: ignore[no-untyped-call]
    none = client.post("/v1/matches/byContent", files={"image": ("p.png", photo.getvalue(), "image/png")})
    assert none.status_code == 200 and none.json() == {"matches": []}
    text = client.post("/v1/matches/byContent", files={"image": ("x.txt", b"hello there", "text/plain")})
    assert text.status_code == 415 and text.json()["error"]["param"] == "image"
    bad_alg = client.post(
        "/v1/matches/byContent", params={"alg": "x"}, content=copy, headers={"content-type": "image/png"}
    )
    assert bad_alg.status_code == 400 and bad_alg.json()["error"]["param"] == "alg"


def test_supported_algorithms_and_openapi(released: Released) -> None:
    algs = released.client.get("/v1/services/supportedAlgorithms").json()
    assert {a["alg"] for a in algs["watermarks"]} == set(WATERMARK_ALGS) and PIXEL in WATERMARK_ALGS
    assert algs["fingerprints"] == [{"alg": PHASH_ALG}]
    paths = released.client.get("/openapi.json").json()["paths"]
    assert {"/v1/matches/byBinding", "/v1/matches/byContent", "/v1/manifests/{manifestId}"} <= set(paths)


def test_lookups_share_the_public_rate_limit(tmp_path: Path) -> None:
    config = ServiceConfig(
        db_url=f"sqlite:///{tmp_path / 'a.sqlite3'}",
        files_dir=tmp_path,
        workers=0,
        verify_burst=2,
        verify_per_second=0.01,
    )
    with TestClient(create_app(config)) as client:
        asked = {"alg": PIXEL, "value": b64(7)}
        assert [client.get("/v1/matches/byBinding", params=asked).status_code for _ in range(2)] == [200, 200]
        limited = client.get(f"/v1/manifests/urn:genguard:mark:{format_mark_id(7)}")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert (
            client.post("/v1/verify", content=b"x", headers={"content-type": "image/png"}).status_code == 429
        )
