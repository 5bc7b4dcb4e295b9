"""What the model-backed checks share (image classifiers and prompt models): input checks, device choice,
batching and model versions.

torch is imported inside the functions that need it, never at module load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from genguard.guard.errors import ImageInputError, ModelLoadError, PolicyError

T = TypeVar("T")

# Files whose bytes decide what a local model computes (weights, configs, vocabularies).
_VERSIONED_SUFFIXES = (".json", ".safetensors", ".bin", ".onnx", ".txt", ".model")


def check_images(images: Sequence[np.ndarray], who: str) -> None:
    """Images are RGB uint8 arrays (H, W, 3); anything else is named in the error."""
    for index, image in enumerate(images):
        if (
            not isinstance(image, np.ndarray)
            or image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != 3
        ):
            found = (
                f"{image.dtype} array of shape {image.shape}"
                if isinstance(image, np.ndarray)
                else type(image).__name__
            )
            raise ImageInputError(
                f"{who}: images[{index}]: expected an RGB uint8 array (H, W, 3), found {found}"
            )
        if image.shape[0] < 8 or image.shape[1] < 8:
            raise ImageInputError(
                f"{who}: images[{index}]: expected at least 8x8 pixels, found {image.shape[1]}x{image.shape[0]}"
            )


def check_source(source: str, who: str) -> None:
    """A model given as a path must exist; a hub id ("owner/name") is left to the loader."""
    looks_like_path = source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1
    if looks_like_path and not Path(source).expanduser().exists():
        raise ModelLoadError(
            f"{who}: model: expected an existing folder or file, found nothing at {source!r}"
        )


def resolve_device(device: str) -> str:
    """ "auto" means the GPU when there is one, else the CPU; anything else is passed to torch."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def model_version(source: str | Path, config: Any = None) -> str:
    """A version for the model a classifier loaded, recorded with every score.

    A local folder or file: "sha256:" and the first 16 hex digits of a digest over its weight,
    config and vocabulary files (names and bytes), so that a changed model gets a new version.
    A hub id: the commit transformers resolved it to, when it says; else "unversioned".
    """
    path = Path(source)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _VERSIONED_SUFFIXES)
    else:
        commit = getattr(config, "_commit_hash", None)
        return f"commit:{commit}" if commit else "unversioned"
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode("utf-8") + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


def versioned_id(source: str | Path, version: str) -> str:
    """The model id recorded with each score: where it came from and which version it was."""
    return f"{source}@{version}"


def load_task_config(source: str, who: str, *, task: str, suffix: str) -> Any:
    """The model's transformers config, refused unless an architecture ends in `suffix`.

    So that a model of the wrong task (a CLIP model given as an image classifier, a masked-LM given
    as a text classifier) fails with a message naming the task instead of a shape error later.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{who}: could not load a model config from {source!r}: {exc}") from exc
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(arch.endswith(suffix) for arch in architectures):
        raise ModelLoadError(
            f"{who}: model {source!r}: expected {task} model (an architecture ending in {suffix}), "
            f"found {architectures or 'none'}"
        )
    return config


def check_labels(labels: Iterable[str], id2label: Mapping[Any, Any], who: str) -> dict[int, str]:
    """The model's labels by output index; every label the pack maps must be one of them."""
    by_index = {int(i): str(label) for i, label in id2label.items()}
    unknown = sorted(set(labels) - set(by_index.values()))
    if unknown:
        raise PolicyError(
            f"{who}: labels: expected labels the model has "
            f"({', '.join(sorted(by_index.values()))}); found {', '.join(unknown)}"
        )
    return by_index


def checked_options(options: Mapping[str, object], types: Mapping[str, type], where: str) -> dict[str, Any]:
    """`options` from a pack entry, each name known and each value of its exact type.

    `where` names the field for messages, e.g. "pack 'default': field semantic.options".
    """
    checked: dict[str, Any] = {}
    for name, value in options.items():
        expected = types.get(name)
        if expected is None:
            raise PolicyError(f"{where}: expected options among {', '.join(sorted(types))}; found {name!r}")
        if type(value) is not expected:
            raise PolicyError(
                f"{where}.{name}: expected {expected.__name__}, found {type(value).__name__} {value!r}"
            )
        checked[name] = value
    return checked
