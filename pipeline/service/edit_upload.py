"""An edit's uploaded input and mask, checked when the job is submitted, so that a bad one is a 4xx
naming its field rather than a queued job that fails later.

The header first (format, pixel bound: `uploads.check_header`), then a bounded decode (a truncated or
corrupt file, a mask of another size than the image, a mask with nothing to repaint). What needs the
policy pack or the model (faces, Content Credentials, the pack's own limits, the model's size bounds)
is the worker's, through the same governed path as the CLI's `--image/--mask`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genguard.guard.errors import BadInputError, ImageInputError
from genguard.pipeline.service.errors import ApiError
from genguard.pipeline.service.uploads import IMAGE_FORMATS, ImageHeader, check_header

log = logging.getLogger("genguard.service")

if TYPE_CHECKING:
    from genguard.guard.policy.schema import EditsSpec
    from genguard.pipeline.service.context import ServiceContext


@dataclass(frozen=True)
class EditUpload:
    """A checked edit upload. `inputs`: the files to keep sealed with the job ("image", "mask").
    `facts`: what the job's row says of them (hashes, sizes, mask share; never the bytes)."""

    inputs: dict[str, bytes]
    facts: dict[str, Any]
    width: int
    height: int


def check_edit(
    image: bytes, mask: bytes | None, *, strength: float | None, consent: str | None, max_pixels: int
) -> EditUpload:
    """Check an edit's files and parameters; ApiError (4xx) naming `image`, `mask` or `consent`."""
    from genguard.guard.input_image import DEFAULT_STRENGTH, MASK_LEVEL, check_consent

    mode = "img2img" if mask is None else "inpaint"
    try:
        consent = check_consent(consent)
    except BadInputError as exc:
        raise ApiError(400, "invalid_consent", str(exc), param="consent") from None
    header = _image_header(image, "image", max_pixels)
    _decoded(image, "image", max_pixels)
    facts: dict[str, Any] = {
        "mode": mode,
        "strength": DEFAULT_STRENGTH[mode] if strength is None else strength,
        "consent": consent,
        "image": _file_facts(image, header),
        "mask": None,
        "mask_area_share": 1.0,
    }
    inputs = {"image": image}
    if mask is not None:
        mask_header = _image_header(mask, "mask", max_pixels)
        if (mask_header.width, mask_header.height) != (header.width, header.height):
            raise ApiError(
                400,
                "invalid_mask",
                f"mask: expected the image's size {header.width}x{header.height}, "
                f"found {mask_header.width}x{mask_header.height}",
                param="mask",
            )
        repaint = _decoded(mask, "mask", max_pixels).mean(axis=2) >= MASK_LEVEL
        if not repaint.any():
            raise ApiError(
                400,
                "invalid_mask",
                f"mask: expected some pixels at grey level {MASK_LEVEL} or above (the region to repaint), "
                "found none",
                param="mask",
            )
        facts["mask"] = _file_facts(mask, mask_header)
        facts["mask_area_share"] = round(float(repaint.mean()), 6)
        inputs["mask"] = mask
    return EditUpload(inputs, facts, header.width, header.height)


def within_pack_limits(ctx: ServiceContext, tenant_id: str, upload: EditUpload) -> EditUpload:
    """`upload` (already through the service's checks, `check_edit`) when it is also within the tenant's
    pack's own bounds; else the ApiError. Loads the pack when its file changed: call it off the event loop."""
    from genguard.guard.errors import PolicyError

    try:
        pack_name, limits = ctx.spaces.get(tenant_id).edit_limits()
    except PolicyError as exc:
        # The tenant's configuration, not the request, is at fault; its file path stays in the log.
        log.error("tenant policy pack unreadable", extra={"tenant_id": tenant_id, "error": str(exc)})
        raise ApiError(
            500,
            "policy_unavailable",
            "edit: expected the tenant's policy pack to load, found it unreadable; an admin can set a "
            "valid one (genguard tenants set-policy)",
            kind="server_error",
        ) from None
    _check_pack_limits(upload, pack_name, limits)
    return upload


def _check_pack_limits(upload: EditUpload, pack_name: str, limits: EditsSpec) -> None:
    """The tenant's pack's own bounds on an edit's files (`edits.max_input_bytes`, `max_input_pixels`),
    which may be tighter than the service's upload limits: 413 naming the file and the pack's field."""
    for name in ("image", "mask"):
        facts = upload.facts[name]
        if facts is None:
            continue
        if facts["size_bytes"] > limits.max_input_bytes:
            raise ApiError(
                413,
                "image_too_large",
                f"{name}: expected at most {limits.max_input_bytes} bytes (policy pack {pack_name!r}: "
                f"edits.max_input_bytes), found {facts['size_bytes']}",
                param=name,
            )
        pixels = facts["width"] * facts["height"]
        if pixels > limits.max_input_pixels:
            raise ApiError(
                413,
                "image_too_large",
                f"{name}: expected at most {limits.max_input_pixels} pixels (policy pack {pack_name!r}: "
                f"edits.max_input_pixels), found {facts['width']}x{facts['height']} = {pixels}",
                param=name,
            )


def openai_mask(mask: bytes, max_pixels: int) -> bytes:
    """OpenAI's mask (a PNG whose fully transparent pixels are the area to edit) as genguard's
    (white, grey level >= 128, where the edit repaints), encoded as PNG."""
    import numpy as np

    from genguard.guard.imageio import encode_image, load_image

    _image_header(mask, "mask", max_pixels)
    try:
        loaded = load_image(mask, max_pixels=max_pixels)
    except ImageInputError as exc:
        raise ApiError(400, "invalid_mask", _named(exc, "mask"), param="mask") from None
    if loaded.alpha is None:
        raise ApiError(
            400,
            "invalid_mask",
            "mask: expected a PNG with an alpha channel (transparent pixels: the area to edit), found none",
            param="mask",
        )
    return encode_image(np.where(loaded.alpha == 0, 255, 0).astype(np.uint8), "png")


def transparent_area(image: bytes, max_pixels: int) -> bytes | None:
    """OpenAI's rule for an edit without a mask: the image's fully transparent pixels are the area to
    edit. That area as genguard's mask (PNG), or None when the image has none (then the edit is
    img2img)."""
    import numpy as np

    from genguard.guard.imageio import encode_image, load_image

    _image_header(image, "image", max_pixels)
    try:
        loaded = load_image(image, max_pixels=max_pixels)
    except ImageInputError as exc:
        raise ApiError(400, "invalid_image", _named(exc, "image"), param="image") from None
    if loaded.alpha is None or not (loaded.alpha == 0).any():
        return None
    return encode_image(np.where(loaded.alpha == 0, 255, 0).astype(np.uint8), "png")


def _image_header(data: bytes, field: str, max_pixels: int) -> ImageHeader:
    header = check_header(data, max_pixels, field)
    if header.mime_type is None:
        raise ApiError(
            415,
            f"invalid_{field}",
            f"{field}: expected {', '.join(IMAGE_FORMATS)}, found {header.format or 'an unknown format'}",
            param=field,
        )
    return header


def _decoded(data: bytes, field: str, max_pixels: int) -> Any:
    """The decoded RGB pixels; a corrupt or truncated file is a 400 naming `field`."""
    from genguard.guard.imageio import load_image

    try:
        return load_image(data, max_pixels=max_pixels).rgb
    except ImageInputError as exc:
        raise ApiError(400, f"invalid_{field}", _named(exc, field), param=field) from None


def _named(error: ImageInputError, field: str) -> str:
    """The decoder's message with the field's name in place of its "<bytes>" source."""
    return f"{field}: {str(error).removeprefix('<bytes>: ')}"


def _file_facts(data: bytes, header: ImageHeader) -> dict[str, Any]:
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "width": header.width,
        "height": header.height,
        "mime_type": header.mime_type,
    }


__all__ = ["EditUpload", "check_edit", "openai_mask", "transparent_area", "within_pack_limits"]
