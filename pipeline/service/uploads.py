"""Uploads: the one bounded reader of request bodies and image files every upload goes through.

`/v1/verify`, `/v1/matches/byContent`, the edit variant of `/v1/generations` and `/v1/images/edits`
read their bodies here: a body over its limit is refused (413) by its Content-Length before it is read,
else as soon as the stream passes the limit; a form is parsed only from a body that fits. An image is
then refused from its header, before any pixel is decoded, when it is not PNG, JPEG or WebP or has more
than the service's `max_upload_pixels`.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from PIL import Image, UnidentifiedImageError

from genguard.pipeline.service.errors import ApiError


def file_part(description: str | None = None) -> dict[str, Any]:
    """The OpenAPI schema of a multipart part that is a file."""
    part: dict[str, Any] = {"type": "string", "format": "binary"}
    if description is not None:
        part["description"] = description
    return part


def form_body(
    required: Sequence[str], properties: dict[str, Any], other: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An operation's `openapi_extra` for a multipart/form-data body with these parts (`other`: the
    body's other media types, by content type)."""
    form = {"schema": {"type": "object", "required": list(required), "properties": properties}}
    return {"requestBody": {"required": True, "content": {**(other or {}), "multipart/form-data": form}}}


# The request body of every public upload (verify, matches/byContent): multipart or a bare image.
UPLOAD_SCHEMA: dict[str, Any] = form_body(
    ["image"],
    {"image": file_part()},
    {media: {"schema": file_part()} for media in ("image/png", "image/jpeg", "image/webp")},
)
# The image formats an upload may be (those Pillow decodes and c2pa reads), by Pillow's format name.
IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True)
class UploadedForm:
    """A parsed multipart form: its file parts' bytes and its text fields, by name."""

    files: dict[str, bytes]
    fields: dict[str, str]


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says (nothing decoded): its size and Pillow's name of its format."""

    width: int
    height: int
    format: str

    @property
    def mime_type(self) -> str | None:
        """image/png, image/jpeg or image/webp; None for any other format."""
        return IMAGE_FORMATS.get(self.format)


async def read_capped(
    request: Request, limit: int, what: str = "upload", param: str | None = "image"
) -> bytes:
    """The body, refused (413) as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(
            f"{what}: expected a body of at most {limit} bytes, found Content-Length {declared}", param
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"{what}: expected a body of at most {limit} bytes, found more", param)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(message: str, param: str | None = "image") -> ApiError:
    return ApiError(413, "payload_too_large", message, param=param)


async def read_form(
    request: Request,
    limit: int,
    *,
    files: tuple[str, ...],
    fields: tuple[str, ...] | None = (),
    file_limit: int | None = None,
    what: str = "upload",
) -> UploadedForm:
    """A multipart form of at most `limit` bytes: the named file parts (each at most `file_limit`
    bytes) and text fields (`fields` None: every text field, for the caller to refuse the unknown
    ones). A file part sent as text, or a named text field sent as a file, is a 400 naming it; other
    parts are ignored."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type: expected multipart/form-data, found {content_type or 'none'!r}",
        )
    body = await read_capped(request, limit, what, files[0] if files else None)

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(
        max_files=len(files) + 2, max_fields=len(fields or ()) + 16
    )
    try:
        got_files: dict[str, bytes] = {}
        got_fields: dict[str, str] = {}
        for name, value in form.multi_items():
            if name in files:
                if isinstance(value, str):
                    raise ApiError(
                        400,
                        f"invalid_{name}",
                        f"{name}: expected a file part, found a text field",
                        param=name,
                    )
                if name in got_files:
                    raise ApiError(
                        400, f"invalid_{name}", f"{name}: expected one file part, found several", param=name
                    )
                data = await value.read()
                if file_limit is not None and len(data) > file_limit:
                    raise too_large(f"{name}: expected at most {file_limit} bytes, found {len(data)}", name)
                got_files[name] = data
            elif fields is None and isinstance(value, str):
                got_fields[name] = value
            elif fields is not None and name in fields:
                if not isinstance(value, str):
                    raise ApiError(
                        400,
                        f"invalid_{name}",
                        f"{name}: expected a text field, found a file part",
                        param=name,
                    )
                got_fields[name] = value
        return UploadedForm(got_files, got_fields)
    finally:
        await form.close()


async def upload_bytes(request: Request, limit: int) -> bytes:
    """The uploaded image: the `image` part of a multipart form, or the body of an image/* request."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("image/"):
        return await read_capped(request, limit)
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type: expected multipart/form-data or image/*, found {content_type or 'none'!r}",
        )
    form = await read_form(request, limit, files=("image",))
    if "image" not in form.files:
        raise ApiError(
            400, "missing_image", "image: expected a file part named 'image', found none", param="image"
        )
    return form.files["image"]


def check_header(data: bytes, max_pixels: int, field: str = "image") -> ImageHeader:
    """Refuse what is not an image, or has too many pixels, from its header alone (no decoding); the
    errors name `field`."""
    if not data:
        raise ApiError(
            400, "invalid_image", f"{field}: expected an image file, found an empty upload", param=field
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                file_format = image.format or ""
        except UnidentifiedImageError:
            raise ApiError(
                415,
                "invalid_image",
                f"{field}: expected PNG, JPEG or WebP, found an unrecognised format",
                param=field,
            ) from None
        except Image.DecompressionBombError:
            raise ApiError(
                413,
                "image_too_large",
                f"{field}: expected at most {max_pixels} pixels, found far more",
                param=field,
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ApiError(400, "invalid_image", f"{field}: unreadable header ({exc})", param=field) from None
    if width * height > max_pixels:
        raise ApiError(
            413,
            "image_too_large",
            f"{field}: expected at most {max_pixels} pixels, found {width}x{height} "
            "(refused before decoding)",
            param=field,
        )
    return ImageHeader(width, height, file_format)


__all__ = [
    "IMAGE_FORMATS",
    "UPLOAD_SCHEMA",
    "ImageHeader",
    "UploadedForm",
    "check_header",
    "read_capped",
    "read_form",
    "too_large",
    "upload_bytes",
]
