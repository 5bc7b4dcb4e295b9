"""The watermark seam: a second watermarker plugged in end to end, and the registry keyed by algorithm id.

A keyed LSB watermark defined here (not the pixel watermark) marks the tiny pipeline's images; verify
reads it and links the generation, and review approval marks a quarantined image with it, because both
pick the watermarker by the algorithm recorded for the image.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from genguard.audit.review import approve, review_queue
from genguard.audit.store import AuditStore
from genguard.audit.verify import Layer, Verdict, verify_image
from genguard.guard.config import watermark_key
from genguard.guard.errors import BadInputError, ImageInputError
from genguard.guard.imageio import encode_image, load_image
from genguard.guard.policy import load_pack
from genguard.guard.policy.pack import PolicyPack
from genguard.guard.provenance import ManifestState, read_manifest
from genguard.guard.types import ClassifierScore, GenerationParams, GenerationRequest
from genguard.guard.watermark import (
    ALGORITHM,
    PixelWatermarker,
    UnknownWatermarkError,
    WatermarkDetection,
    Watermarker,
    recorded_watermarker,
    register_watermarker,
    registered_watermarkers,
    unregister_watermarker,
    watermarker_for,
)
from genguard.pipeline.cli import cli
from genguard.pipeline.cli_watermark import watermark_detect
from genguard.pipeline.governed import GenerationResult, GovernedPipeline, load_diffusers_pipeline
from tests._photos import photographs

torch.set_num_threads(1)

UInt8 = npt.NDArray[np.uint8]
ImageT = TypeVar("ImageT", UInt8, Image.Image)


class KeyedLsb:
    """A toy watermarker: 64 id bits and a 32-bit HMAC tag in the blue channel's least significant bits
    at keyed positions, each bit written `REPEAT` times (read by majority). Survives PNG only."""

    algorithm = "test.keyed-lsb.v1"
    REPEAT = 5
    BITS = 96

    def embed(self, image: ImageT, mark_id: int, key: bytes | None = None) -> ImageT:
        if isinstance(image, Image.Image):
            return Image.fromarray(self.embed(np.asarray(image.convert("RGB")), mark_id, key))
        array = np.array(image, dtype=np.uint8, copy=True)
        key = key if key is not None else watermark_key()
        bits = np.repeat(self._bits(mark_id, key), self.REPEAT)
        blue = array[..., 2].reshape(-1)
        positions = self._positions(key, blue.size)
        blue[positions] = (blue[positions] & 0xFE) | bits
        array[..., 2] = blue.reshape(array.shape[:2])
        return array

    def detect(self, image: UInt8 | Image.Image, key: bytes | None = None) -> WatermarkDetection:
        array = np.asarray(image, dtype=np.uint8)
        if array.ndim != 3 or array.shape[0] * array.shape[1] < self.BITS * self.REPEAT:
            raise ImageInputError(f"image: expected RGB with >= {self.BITS * self.REPEAT} pixels")
        key = key if key is not None else watermark_key()
        blue = np.ascontiguousarray(array[..., 2]).reshape(-1)
        read = (blue[self._positions(key, blue.size)] & 1).reshape(self.BITS, self.REPEAT)
        bits = (read.sum(axis=1) * 2 > self.REPEAT).astype(np.uint8)
        mark_id = int("".join(map(str, bits[:64])), 2)
        if not np.array_equal(bits, self._bits(mark_id, key)):
            return WatermarkDetection(False, None, 0.0, self.algorithm)
        return WatermarkDetection(True, mark_id, 32 * math.log10(2), self.algorithm)

    def _bits(self, mark_id: int, key: bytes) -> UInt8:
        tag = int.from_bytes(hmac.digest(key, mark_id.to_bytes(8, "big"), "sha256")[:4], "big")
        return np.array([int(b) for b in f"{mark_id:064b}{tag:032b}"], dtype=np.uint8)

    def _positions(self, key: bytes, size: int) -> npt.NDArray[np.intp]:
        seed = int.from_bytes(hmac.digest(key, b"test.keyed-lsb/positions", "sha256"), "big")
        return np.random.default_rng(seed).choice(size, self.BITS * self.REPEAT, replace=False)


class FixedScores:
    """An ImageClassifier test double: every image scores `score` for `category`."""

    name = "fixed"

    def __init__(self, category: str, score: float) -> None:
        self.category, self.score = category, score

    def classify(self, images: Sequence[np.ndarray]) -> list[tuple[ClassifierScore, ...]]:
        return [(ClassifierScore(self.name, "test:fixed@v1", self.category, self.score),) for _ in images]


@pytest.fixture(scope="module")
def tiny_sd(embedded_cache: Path) -> object:
    return load_diffusers_pipeline("embedded:tiny-sd")


@pytest.fixture
def lsb() -> Iterator[KeyedLsb]:
    marker = KeyedLsb()
    register_watermarker(marker)
    yield marker
    unregister_watermarker(marker)


def encrypted_pack(tmp_path: Path) -> PolicyPack:
    data = load_pack("default").canonical_dict()
    data["image_checks"]["quarantine"] = {"keep": "encrypted"}
    path = tmp_path / "pack.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_pack(path)


def generate(
    tiny_sd: object, url: str, policy: PolicyPack, watermarker: Watermarker, violence: float
) -> GenerationResult:
    # violence >= 0.7 is quarantined by the default pack
    gp = GovernedPipeline(
        tiny_sd, model_id="embedded:tiny-sd", policy=policy, audit=AuditStore.open(url),
        classifiers=[FixedScores("violence", violence)], watermarker=watermarker,
    )  # fmt: skip
    params = GenerationParams(width=64, height=64, steps=2, num_images=1, seed=5)
    return gp(GenerationRequest("a quiet harbour", params=params, actor="alice"))


def test_second_watermarker_generates_and_verify_reads_it(
    tiny_sd: object, sqlite_url: str, tmp_path: Path, lsb: KeyedLsb
) -> None:
    result = generate(tiny_sd, sqlite_url, load_pack("default"), lsb, violence=0.1)
    [image] = result.released
    store = AuditStore.open(sqlite_url)
    detail = store.get_generation(result.generation_id)
    assert detail is not None and detail.extra["watermarks"][0] == lsb.algorithm
    assert read_manifest(image.data, image.mime_type).watermark_algorithm == lsb.algorithm
    pixels = load_image(image.data).rgb
    assert lsb.detect(pixels).mark_id == image.mark_id
    assert not watermarker_for(ALGORITHM).detect(pixels).marked  # not the pixel watermark's mark

    report = verify_image(image.data, store=store, record=False)
    assert report.verdict is Verdict.VERIFIED_ORIGINAL, report.summary
    assert report.watermark is not None and report.watermark.algorithm == lsb.algorithm
    assert report.watermark.mark_id == image.mark_id and report.watermark.marked
    assert report.record is not None and Layer.WATERMARK in report.record.found_by

    # a copy without the manifest: the watermark alone names the algorithm's reader (tried in turn)
    stripped = tmp_path / "stripped.png"
    stripped.write_bytes(encode_image(pixels, "png"))
    copy = verify_image(stripped.read_bytes(), store=store, record=False)
    assert copy.manifest.state is ManifestState.ABSENT
    assert copy.verdict is Verdict.OURS_METADATA_STRIPPED, copy.summary  # phash alone: ours-near-copy
    assert copy.watermark is not None and copy.watermark.algorithm == lsb.algorithm
    assert copy.record is not None and copy.record.image.generation_id == result.generation_id
    pixel_only = verify_image(
        stripped.read_bytes(), store=store, record=False, watermarker=watermarker_for(ALGORITHM)
    )
    assert pixel_only.verdict is Verdict.OURS_NEAR_COPY  # what verify saw before the seam: phash alone

    shown = CliRunner().invoke(cli, ["verify", str(stripped), "--db", sqlite_url, "--no-record", "--json"])
    assert shown.exit_code == 1, shown.output  # 1: read, but not a verified original
    line = json.loads(shown.output.splitlines()[-1])
    assert line["watermark"]["algorithm"] == lsb.algorithm and line["verdict"] == "ours-metadata-stripped"
    assert line["record"]["generation_id"] == result.generation_id


def test_review_approval_marks_with_the_recorded_algorithm(
    tiny_sd: object, sqlite_url: str, tmp_path: Path, lsb: KeyedLsb
) -> None:
    result = generate(tiny_sd, sqlite_url, encrypted_pack(tmp_path), lsb, violence=0.9)
    [withheld] = result.withheld
    assert withheld.status == "quarantined"
    store = AuditStore.open(sqlite_url)
    outcome = approve(
        store, f"{result.generation_id}:0", reviewer="rita", reason="fine", out_dir=tmp_path / "out"
    )
    written = Path(str(outcome.decision.path))
    data = written.read_bytes()
    assert hashlib.sha256(data).hexdigest() == outcome.decision.released_sha256
    pixels = load_image(data).rgb
    assert lsb.detect(pixels).mark_id == withheld.mark_id
    assert not watermarker_for(ALGORITHM).detect(pixels).marked
    manifest = read_manifest(data, "image/png")
    assert manifest.state is ManifestState.TRUSTED and manifest.watermark_algorithm == lsb.algorithm
    report = verify_image(data, store=store, record=False)
    assert report.verdict is Verdict.VERIFIED_ORIGINAL, report.summary
    assert report.watermark is not None and report.watermark.algorithm == lsb.algorithm
    assert Layer.WATERMARK in report.agreeing and report.record is not None
    assert report.record.image_status == "approved"


def test_an_unregistered_recorded_algorithm_fails_closed(
    tiny_sd: object, sqlite_url: str, tmp_path: Path
) -> None:
    marker = KeyedLsb()
    register_watermarker(marker)
    try:
        held = generate(tiny_sd, sqlite_url, encrypted_pack(tmp_path), marker, violence=0.9)
        released = generate(tiny_sd, sqlite_url, load_pack("default"), marker, violence=0.1)
    finally:
        unregister_watermarker(marker)
    store = AuditStore.open(sqlite_url)
    review_id = f"{held.generation_id}:0"
    with pytest.raises(UnknownWatermarkError, match=r"found \['test.keyed-lsb.v1'"):
        approve(store, review_id, reviewer="rita", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() and review_queue(store)[0].review_id == review_id
    [image] = released.released
    report = verify_image(image.data, store=store, record=False)
    assert report.watermark is not None and not report.watermark.marked  # no registered reader marks it
    assert report.record is not None and report.record.image.generation_id == released.generation_id
    assert any("test.keyed-lsb.v1" in note and "cannot be read here" in note for note in report.notes)


def test_registry_is_keyed_by_algorithm_id() -> None:
    pixel = watermarker_for(ALGORITHM)
    assert isinstance(pixel, PixelWatermarker) and isinstance(pixel, Watermarker)
    assert registered_watermarkers()[0] is pixel
    marker = KeyedLsb()
    register_watermarker(marker, reads=("test.keyed-lsb.v0",))
    try:
        register_watermarker(marker)  # the same object again: nothing changes
        assert watermarker_for("test.keyed-lsb.v0") is marker is watermarker_for(marker.algorithm)
        assert registered_watermarkers() == (pixel, marker)
        with pytest.raises(BadInputError, match=r"'test.keyed-lsb.v1': expected an id no other .* KeyedLsb"):
            register_watermarker(KeyedLsb())
        assert recorded_watermarker(["test.keyed-lsb.v0", "genguard.latent.gaussian-shading.v1"]) is marker
    finally:
        unregister_watermarker(marker)
    with pytest.raises(
        UnknownWatermarkError, match=r"expected one of \[.*'genguard.pixel.v3'.*found 'test.k"
    ):
        watermarker_for("test.keyed-lsb.v0")
    with pytest.raises(BadInputError, match="expected an object with `algorithm`, `embed` and `detect`"):
        register_watermarker(object())  # type: ignore[arg-type]
    assert (
        recorded_watermarker(None) is pixel and recorded_watermarker([]) is pixel
    )  # records before the seam
    assert recorded_watermarker([ALGORITHM, "genguard.latent.gaussian-shading.v1"]) is pixel
    with pytest.raises(BadInputError, match="recorded watermarks: expected a list"):
        recorded_watermarker("genguard.pixel.v3")


def test_pixel_watermarker_answers_in_the_generic_form() -> None:
    photo = photographs(256, ("coffee",))["coffee"]
    key = bytes(range(32))
    pixel = watermarker_for(ALGORITHM)
    found = pixel.detect(pixel.embed(photo, 1234, key), key)
    assert found == WatermarkDetection(
        True, 1234, found.confidence, ALGORITHM, found.sync_score, found.flipped, found.scale, found.angle
    )
    assert found.confidence > 6 and found.sync_score is not None and not found.flipped
    assert not pixel.detect(photo, key).marked


def test_watermark_cli_names_the_algorithm(tmp_path: Path) -> None:
    assert next(p.default for p in watermark_detect.params if p.name == "watermarker") == ALGORITHM
    source = tmp_path / "coffee.png"
    Image.fromarray(photographs(256, ("coffee",))["coffee"]).save(source)
    runner = CliRunner()
    unknown = runner.invoke(cli, ["watermark", "detect", str(source), "--algorithm", "nope.v1"])
    assert unknown.exit_code == 2 and "watermark algorithm: expected one of" in unknown.output, unknown.output
    marked = runner.invoke(cli, ["watermark", "embed", str(source), str(tmp_path / "m.png"), "--id", "0x2a"])
    assert marked.exit_code == 0, marked.output
    read = runner.invoke(cli, ["watermark", "detect", str(tmp_path / "m.png"), "--json"])
    line = json.loads(read.output)
    assert line["algorithm"] == ALGORITHM and line["mark_id"] == "0x000000000000002a" and line["marked"]
