"""The one release path: how an image becomes the file that leaves, for generation and review approval alike.

`release_image` marks the pixels with the given `Watermarker` and the image's mark id, encodes them
in the request's format (PNG, JPEG or WebP), signs them with Content Credentials (embedded, or for a
sidecar) and hashes the bytes that leave -> a `ReleasedImage`. Nothing is written there: the caller
records the digest in its audit commit, and only after that commit does `write_released` put the
files in place (temporary name, then rename; a sidecar manifest before its image).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from genguard.guard.errors import BadInputError
from genguard.guard.imageio import encode_image
from genguard.guard.phash import perceptual_hash

if TYPE_CHECKING:  # c2pa's native library loads only when an image is signed
    from genguard.guard.provenance import ContentCredentials, ManifestFacts
    from genguard.guard.watermark import Watermarker

SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


@dataclass(frozen=True)
class ReleasedImage:
    """An image ready to leave once its record is committed.

    `pixels`: the marked RGB uint8 pixels; `data`: the encoded file (`mime_type`) with its Content
    Credentials embedded unless they go to a sidecar; `sha256` is of `data`; `phash` of `pixels`.
    `manifest`: the C2PA manifest store (None when not signed); `timestamp`: the signature's
    TimestampState ("off" when not signed).
    """

    pixels: np.ndarray
    data: bytes
    sha256: str
    phash: int
    mime_type: str
    manifest: bytes | None
    timestamp: str

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.mime_type]


@dataclass(frozen=True)
class ReleaseFile:
    """One released image's file to write after the commit: `path`, its bytes and, for a sidecar, its manifest."""

    index: int
    path: Path
    data: bytes
    manifest: bytes | None = None


def release_image(
    pixels: np.ndarray,
    facts: ManifestFacts,
    *,
    watermarker: Watermarker,
    key: bytes | None,
    output_format: str = "png",
    credentials: ContentCredentials | None = None,
    embed_manifest: bool = True,
) -> ReleasedImage:
    """Mark `pixels` with `watermarker` and `facts.mark_id`, encode as `output_format`, sign with
    `credentials` (None: unsigned) and hash. The manifest names `watermarker.algorithm`.

    It writes nothing and records nothing: the caller commits the result's digest first.
    """
    from genguard.guard.provenance.content_credentials import MIME_TYPES

    if output_format not in MIME_TYPES:
        raise BadInputError(f"output_format: expected one of {sorted(MIME_TYPES)}, found {output_format!r}")
    if facts.mark_id is None:
        raise BadInputError(
            f"facts.mark_id: expected the image's mark id, found None (image {facts.image_index})"
        )
    marked = watermarker.embed(pixels, facts.mark_id, key)
    mime_type = MIME_TYPES[output_format]
    data = encode_image(marked, cast(Literal["png", "jpeg", "webp"], output_format))
    manifest: bytes | None = None
    timestamp = "off"
    if credentials is not None:
        facts = replace(facts, watermark_algorithm=watermarker.algorithm)
        signed = credentials.sign(data, mime_type, facts, embed=embed_manifest)
        data, manifest, timestamp = signed.data, signed.manifest, str(signed.timestamp)
    return ReleasedImage(
        pixels=marked,
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        phash=perceptual_hash(marked),
        mime_type=mime_type,
        manifest=manifest,
        timestamp=timestamp,
    )


def write_released(
    files: Sequence[ReleaseFile], *, sidecar: bool = False, folder: Path | None = None
) -> dict[int, OSError]:
    """After the commit: write each file atomically (temporary name, then rename); with `sidecar`, its
    manifest goes next to it as NAME.c2pa (written first, so an image never lacks its manifest).
    `folder`: the output folder, created first even when no file is to be written (None: each file's).

    Returns the images that could not be written (index -> error); their temporary files and any
    sidecar written for them are removed, and the other images are still tried.
    """
    failures: dict[int, OSError] = {}
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return {file.index: exc for file in files}
    for file in files:
        try:
            file.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            failures[file.index] = exc
            continue
        pieces = [(file.path.with_suffix(".c2pa"), file.manifest)] if sidecar and file.manifest else []
        done: list[Path] = []
        for path, data in [*pieces, (file.path, file.data)]:
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            except OSError as exc:
                failures[file.index] = exc
                for leftover in (tmp, *done):
                    _remove_quietly(leftover)
                break
            done.append(path)
    return failures


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # a folder that refuses writes refuses this too: nothing was left there


__all__ = ["SUFFIXES", "ReleaseFile", "ReleasedImage", "release_image", "write_released"]
