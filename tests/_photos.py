"""Real photographs shipped offline by scikit-image and scikit-learn, squared and resized."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt


def _square(image: npt.NDArray[np.uint8], side: int) -> npt.NDArray[np.uint8]:
    if image.ndim == 2:
        image = np.dstack([image] * 3)
    image = image[..., :3]
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = np.ascontiguousarray(image[top : top + s, left : left + s])
    interpolation = cv2.INTER_AREA if s > side else cv2.INTER_CUBIC
    return cv2.resize(crop, (side, side), interpolation=interpolation)  # type: ignore[return-value]


def photographs(side: int = 512, names: tuple[str, ...] | None = None) -> dict[str, npt.NDArray[np.uint8]]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    sample = load_sample_images().images
    loaders = {
        "astronaut": data.astronaut,
        "camera": data.camera,
        "coffee": data.coffee,
        "chelsea": data.chelsea,
        "rocket": data.rocket,
        "china": lambda: sample[0],
        "flower": lambda: sample[1],
        "immunohistochemistry": data.immunohistochemistry,
        "hubble_deep_field": data.hubble_deep_field,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
        "retina": data.retina,
    }
    chosen = names or tuple(loaders)
    return {name: _square(np.asarray(loaders[name]()), side) for name in chosen}
