"""`verify` does bounded work on any accepted image: the detector and the perceptual hash read a view of at
most `WORKING_PIXELS`, while the sha256 stays of the file's bytes and sizes stay the file's.

Real photographs (scikit-image), real pixel watermarks, real c2pa signing, real SQLite. The recording
watermarker below is a plain `Watermarker` (the pipeline's seam) around the real detector.
"""

from __future__ import annotations

import hashlib
import io

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from genguard.audit.store import AuditStore
from genguard.audit.verify import WORKING_PIXELS, Verdict, verify_image
from genguard.guard.imageio import encode_image, load_image
from genguard.guard.phash import hamming, perceptual_hash
from genguard.guard.watermark.pixel import PixelDetection, PixelWatermarker
from tests._photos import photographs
from tests.test_verify import KEY, Org, make_org, release

Pixels = npt.NDArray[np.uint8]


class RecordingDetector(PixelWatermarker):
    """The real detector, noting the size of every image it is handed."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, image: Pixels | Image.Image, key: bytes | None = None) -> PixelDetection:
        assert isinstance(image, np.ndarray)
        self.shapes.append(image.shape)
        return super().detect(image, key)


@pytest.fixture(scope="module")
def ours() -> Org:
    return make_org("genguard test org")


@pytest.fixture
def store(sqlite_url: str) -> AuditStore:
    return AuditStore.open(sqlite_url)


def upscaled(name: str, side: int) -> Pixels:
    photo = photographs(512, (name,))[name]
    return np.asarray(cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC), dtype=np.uint8)


def test_a_released_2048_image_reads_at_the_working_resolution(store: AuditStore, ours: Org) -> None:
    """The largest size a family generates, marked there, then verified as released and re-encoded."""
    data = release(store, ours, upscaled("astronaut", 2048), "gen-big", mark_id=0xB16B16)
    for label, copy in (
        ("signed original", data),
        ("JPEG 90 without a manifest", encode_image(np.asarray(Image.open(io.BytesIO(data))), "jpeg", 90)),
    ):
        detector = RecordingDetector()
        report = verify_image(
            copy, store=store, trust_anchors_pem=ours.anchors, key=KEY, watermarker=detector
        )
        assert detector.shapes and all(h * w <= WORKING_PIXELS for h, w, _ in detector.shapes), label
        assert report.watermark is not None and report.watermark.mark_id == 0xB16B16, label
        assert (report.width, report.height) == (2048, 2048), label
        assert report.sha256 == hashlib.sha256(copy).hexdigest(), label
        assert report.record is not None and report.record.image.generation_id == "gen-big", label
        assert any("working resolution of 1024x1024" in note for note in report.notes), label
    assert verify_image(data, store=store, trust_anchors_pem=ours.anchors, key=KEY).verdict is (
        Verdict.VERIFIED_ORIGINAL
    )


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_a_very_large_upload_hands_the_detector_a_bounded_view(
    store: AuditStore, ours: Org, fmt: str
) -> None:
    """A 1024 x 768 release enlarged to 12 MP (4000 x 3000): read at 1182 x 886, its mark still found."""
    data = release(
        store, ours, np.ascontiguousarray(upscaled("coffee", 1024)[128:896]), "gen-up", mark_id=0x5EED
    )
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    enlarged = np.asarray(cv2.resize(pixels, (4000, 3000), interpolation=cv2.INTER_CUBIC), dtype=np.uint8)
    upload = encode_image(enlarged, fmt, 90)  # type: ignore[arg-type]
    detector = RecordingDetector()
    report = verify_image(upload, store=store, trust_anchors_pem=ours.anchors, key=KEY, watermarker=detector)

    assert [shape[0] * shape[1] for shape in detector.shapes] == [1182 * 886]
    assert 1182 * 886 <= WORKING_PIXELS
    assert (report.width, report.height) == (4000, 3000)
    assert report.watermark is not None and report.watermark.mark_id == 0x5EED
    assert report.verdict is Verdict.OURS_ALTERED, report.summary
    assert "size 4000x3000, recorded 1024x768" in report.summary


def test_the_perceptual_hash_is_unchanged_for_generated_sizes_and_close_above() -> None:
    for side in (256, 512, 768, 1024):
        for name, photo in photographs(side, ("astronaut", "chelsea", "rocket")).items():
            view = load_image(encode_image(photo), working_pixels=WORKING_PIXELS)
            assert not view.reduced
            assert perceptual_hash(view.rgb) == perceptual_hash(photo), (name, side)
    for name, photo in photographs(2048, ("astronaut", "chelsea", "rocket")).items():
        view = load_image(encode_image(photo), working_pixels=WORKING_PIXELS)
        assert view.size == (1024, 1024) and view.file_size == (2048, 2048)
        assert hamming(perceptual_hash(view.rgb), perceptual_hash(photo)) <= 2, name


def test_the_view_keeps_every_mode_and_its_values() -> None:
    rng = np.random.default_rng(7)
    # 16-bit greyscale: scaled to 8 bits as the full-size path does, without a float copy
    wide = rng.integers(0, 65536, size=(300, 200), dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="PNG")
    full = load_image(buffer.getvalue())
    assert np.array_equal(
        full.rgb[..., 0], np.clip(np.round(wide * 255.0 / 65535.0), 0, 255).astype(np.uint8)
    )
    view = load_image(buffer.getvalue(), working_pixels=15_000)
    assert view.size == (100, 150) and view.file_size == (200, 300) and view.mode == "I;16"
    assert abs(float(view.rgb.mean()) - float(full.rgb.mean())) < 1.0
    # palette with transparency: averaged as RGBA, the alpha plane kept
    palette = Image.fromarray(rng.integers(0, 255, size=(400, 400, 3), dtype=np.uint8)).quantize(16)
    palette.info["transparency"] = 0
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=0)
    view = load_image(buffer.getvalue(), working_pixels=10_000)
    assert view.size == (100, 100) and view.alpha is not None and view.alpha.shape == (100, 100)
    # JPEG: decoded at a reduced DCT scale, then to the budget
    photo = photographs(1024, ("rocket",))["rocket"]
    view = load_image(encode_image(photo, "jpeg", 90), working_pixels=256 * 256)
    assert view.size == (256, 256) and view.file_size == (1024, 1024) and view.format == "JPEG"
    reference = cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float64)
    assert float(np.abs(view.rgb.astype(np.float64) - reference).mean()) < 4.0
