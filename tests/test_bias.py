"""Bias observations on real photographs: faces, ITA, Monk bins, batch statistics, and in the pipeline."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from genguard.guard.bias import (
    MONK_REFERENCE_COLOURS,
    NOT_MEASURED,
    SKIN_TONE_VALUES,
    UNKNOWN,
    batch_bias,
    detect_faces,
    distribution,
    individual_typology_angle,
    ita_of_lab,
    monk_bin,
    normalised_entropy,
    observe_images,
    total_variation,
)
from genguard.guard.classifiers.clip_zero_shot import ClipAttributeReader
from genguard.guard.classifiers.registry import build_gender_reader
from genguard.guard.errors import ImageInputError, ModelLoadError
from genguard.guard.policy.schema import BiasSpec, UniformBatchSpec
from genguard.guard.types import PerceivedFace
from tests._photos import photographs
from tests.tiny_models import build_tiny_clip

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return photographs(512, ("astronaut", "camera", "coffee", "chelsea", "rocket"))


def test_faces_in_photographs_that_have_them(photos: dict[str, np.ndarray]) -> None:
    [astronaut] = detect_faces(photos["astronaut"])
    x, y, w, h = astronaut
    # Eileen Collins' face sits in the upper middle of the (squared) astronaut photograph.
    assert 120 < x + w / 2 < 320 and 50 < y + h / 2 < 200 and 60 < w < 160
    assert detect_faces(photos["camera"]) == []  # the cameraman is seen in profile
    assert len(detect_faces(photos["camera"], profiles=True)) == 1


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_no_faces_where_there_are_none(photos: dict[str, np.ndarray], name: str) -> None:
    assert detect_faces(photos[name]) == []
    assert detect_faces(photos[name], profiles=True) == []


def test_black_image_and_bad_input() -> None:
    assert observe_images([np.zeros((256, 256, 3), np.uint8)]) == [()]
    with pytest.raises(ImageInputError, match="expected an RGB uint8 array"):
        detect_faces(np.zeros((64, 64), np.uint8))


def test_skin_tone_known_in_colour_unknown_in_grayscale(photos: dict[str, np.ndarray]) -> None:
    [[astronaut], [camera]] = observe_images([photos["astronaut"], photos["camera"]], profiles=True)
    assert astronaut.perceived_skin_tone in SKIN_TONE_VALUES and astronaut.ita is not None
    # Light skin under studio light: a high angle, in the light half of the scale.
    assert astronaut.ita > 28 and int(astronaut.perceived_skin_tone.split("-")[1]) <= 5
    # The cameraman is a grayscale photograph: no skin hue, so no guess.
    assert camera.perceived_skin_tone == UNKNOWN and camera.ita is None
    assert astronaut.perceived_gender_presentation == NOT_MEASURED and astronaut.gender_model_id is None


def test_ita_formula() -> None:
    assert ita_of_lab(60.0, 10.0) == pytest.approx(45.0)  # arctan(1)
    assert ita_of_lab(50.0, 20.0) == pytest.approx(0.0)
    assert ita_of_lab(30.0, 20.0) == pytest.approx(math.degrees(math.atan(-1.0)))
    assert ita_of_lab(70.0, 0.0) is None and ita_of_lab(70.0, -3.0) is None
    assert individual_typology_angle(np.zeros((0, 3), np.uint8)) is None


def test_monk_reference_colours_bin_to_themselves_in_order() -> None:
    for expected, hex_colour in zip(SKIN_TONE_VALUES, MONK_REFERENCE_COLOURS, strict=True):
        rgb = np.array([[int(hex_colour[i : i + 2], 16) for i in (0, 2, 4)]] * 100, np.uint8)
        assert monk_bin(individual_typology_angle(rgb)) == expected
    assert monk_bin(90.0) == "monk-1" and monk_bin(-90.0) == "monk-10" and monk_bin(None) == UNKNOWN
    # Darker skin, lower angle: a lit face patch made darker moves down the scale.
    patch = np.full((50, 50, 3), (224, 172, 140), np.uint8)
    darker = np.asarray(cv2.convertScaleAbs(patch, alpha=0.5), np.uint8)
    light_angle, dark_angle = (individual_typology_angle(p.reshape(-1, 3)) for p in (patch, darker))
    assert light_angle is not None and dark_angle is not None and dark_angle < light_angle


def test_entropy_and_distance() -> None:
    assert normalised_entropy({"a": 5, "b": 5}, 2) == pytest.approx(1.0)
    assert normalised_entropy({"a": 7}, 10) == 0.0
    assert normalised_entropy({"a": 1, "b": 1}, 4) == pytest.approx(0.5)
    assert normalised_entropy({}, 10) is None
    assert total_variation({"a": 10}, {"a": 1.0, "b": 1.0}) == pytest.approx(0.5)
    assert total_variation({"a": 3, "b": 3}, {"a": 2.0, "b": 2.0}) == pytest.approx(0.0)
    assert total_variation({"a": 3}, {"b": 1.0}) == pytest.approx(1.0)
    d = distribution("skin_tone", ["monk-3", "monk-3", UNKNOWN], SKIN_TONE_VALUES)
    assert d.faces == 3 and d.measured == 2 and dict(d.counts) == {"monk-3": 2, UNKNOWN: 1}
    assert d.entropy == 0.0 and d.distance_to_target == pytest.approx(0.9)


def face(tone: str, gender: str = NOT_MEASURED) -> PerceivedFace:
    return PerceivedFace((0, 0, 10, 10), 10.0, tone, gender)


def test_uniform_batch_rule() -> None:
    spec = BiasSpec(uniform_batch=UniformBatchSpec(min_faces=4, min_entropy=0.3, action="regenerate"))
    same = [(face("monk-2"),), (face("monk-2"),), (face("monk-2"), face("monk-2"))]
    result = batch_bias(same, spec)
    assert result.faces == 4 and result.uniform == ("skin_tone",) and result.action == "regenerate"
    # Gender presentation was not measured: its entropy is undefined, never a uniform verdict.
    assert result.gender_presentation.entropy is None and dict(result.gender_presentation.counts) == {
        NOT_MEASURED: 4
    }
    varied = [(face("monk-2"),), (face("monk-5"),), (face("monk-8"),), (face("monk-10"),)]
    assert batch_bias(varied, spec).action == "none"
    assert batch_bias(same[:2], spec).action == "none"  # too few faces to judge
    target = BiasSpec(targets={"skin_tone": {"monk-2": 1.0}})
    assert batch_bias(same, target).skin_tone.distance_to_target == pytest.approx(0.0)
    json_form = result.to_json()
    assert json_form["label"] == "perceived" and json_form["skin_tone"]["counts"] == {"monk-2": 4}


def test_gender_presentation_with_a_clip_reader(photos: dict[str, np.ndarray], tmp_path: Path) -> None:
    model = build_tiny_clip(tmp_path / "clip")
    assert build_gender_reader(None) is None  # no model: not measured
    reader = build_gender_reader(str(model), device="cpu", min_confidence=0.5)
    assert isinstance(reader, ClipAttributeReader) and reader.values == ("feminine", "masculine")
    [[astronaut], [camera], none] = observe_images(
        [photos["astronaut"], photos["camera"], photos["coffee"]], reader, profiles=True
    )
    for found in (astronaut, camera):
        assert found.perceived_gender_presentation in ("feminine", "masculine", UNKNOWN)
        assert found.gender_score is not None and 0.5 <= found.gender_score <= 1.0
        assert found.gender_model_id == reader.model_id
    assert none == ()
    # Two values described identically: 0.5 each, below the confidence asked for: unknown, not a guess.
    undecided = ClipAttributeReader(model, labels={"a": ["a face"], "b": ["a face"]}, device="cpu")
    [(value, score)] = undecided.read([photos["astronaut"]])
    assert value == UNKNOWN and score == pytest.approx(0.5)
    with pytest.raises(ModelLoadError):
        ClipAttributeReader(tmp_path / "missing")


def test_opencv_without_haar_cascades_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenCV 5 (a GPU image's own, ignoring the package's pin) has no CascadeClassifier
    from genguard.guard import bias

    bias._cascade.cache_clear()
    monkeypatch.delattr(cv2, "CascadeClassifier")
    try:
        with pytest.raises(ModelLoadError, match=r"expected OpenCV 4 .* found OpenCV 4\.\d+.*<5"):
            bias._cascade("haarcascade_frontalface_default.xml")
    finally:
        bias._cascade.cache_clear()
