"""`POST /v1/verify`: anyone may ask whether an image is ours; no key, rate-limited per client address.

The body is refused before it is read in full when it is over `max_upload_bytes` (by its
Content-Length, else while it streams); the image is refused from its header, before decoding, when it
has more than `max_upload_pixels`. The answer holds what a member of the public may see: the verdict,
whether it was changed, when it was made and under which policy version; never the prompt, the tenant,
a tenant's records or any other image. Every tenant's audit space is searched.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from genguard.audit.verify import Verdict, VerificationReport, verify_image_in_spaces
from genguard.guard.errors import ImageInputError
from genguard.pipeline.service.context import ServiceContext
from genguard.pipeline.service.errors import ApiError
from genguard.pipeline.service.schemas import (
    ErrorResponse,
    PolicySummary,
    PublicCredentials,
    PublicVerification,
    PublicWatermark,
)

_T = TypeVar("_T")
_OURS = {
    Verdict.VERIFIED_ORIGINAL,
    Verdict.OURS_ORIGINAL,
    Verdict.OURS_METADATA_STRIPPED,
    Verdict.OURS_ALTERED,
    Verdict.OURS_NEAR_COPY,
    Verdict.OURS_NO_RECORD,
}
# The request body of every public upload (verify, matches/byContent): multipart or a bare image.
UPLOAD_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/webp": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def public_view(report: VerificationReport) -> PublicVerification:
    record = report.record
    manifest = report.manifest
    return PublicVerification(
        verdict=report.verdict.value,
        ours=report.verdict in _OURS,
        changed=None if record is None else report.sha256 != record.sha256,
        released=None if record is None else record.released,
        created_at=None if record is None else record.created_at,
        policy=None
        if record is None
        else PolicySummary(name=record.policy.name, version=record.policy.version),
        content_credentials=PublicCredentials(
            state=manifest.state.value, signer=manifest.signer, signed_at=manifest.signed_at
        ),
        watermark=None
        if report.watermark is None
        else PublicWatermark(
            detected=report.watermark.marked, confidence=round(report.watermark.confidence, 2)
        ),
        layers_agreeing=[layer.value for layer in report.agreeing],
        conflict=report.verdict is Verdict.CONFLICT,
    )


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(f"expected a body of at most {limit} bytes, found Content-Length {declared}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"expected a body of at most {limit} bytes, found more")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(message: str) -> ApiError:
    return ApiError(413, "payload_too_large", f"upload: {message}", param="image")


async def upload_bytes(request: Request, limit: int) -> bytes:
    """The uploaded image: the `image` part of a multipart form, or the body of an image/* request."""
    body = await read_capped(request, limit)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("image/"):
        return body
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type: expected multipart/form-data or image/*, found {content_type or 'none'!r}",
        )

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=4)
    try:
        part = form.get("image")
        if part is None or isinstance(part, str):
            raise ApiError(
                400, "missing_image", "image: expected a file part named 'image', found none", param="image"
            )
        return await part.read()
    finally:
        await form.close()


def check_header(data: bytes, max_pixels: int) -> None:
    """Refuse what is not an image, or has too many pixels, from its header alone (no decoding)."""
    if not data:
        raise ApiError(
            400, "invalid_image", "image: expected an image file, found an empty upload", param="image"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except UnidentifiedImageError:
            raise ApiError(
                415,
                "invalid_image",
                "image: expected PNG, JPEG or WebP, found an unrecognised format",
                param="image",
            ) from None
        except Image.DecompressionBombError:
            raise ApiError(
                413,
                "image_too_large",
                f"image: expected at most {max_pixels} pixels, found far more",
                param="image",
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ApiError(400, "invalid_image", f"image: unreadable header ({exc})", param="image") from None
    if width * height > max_pixels:
        raise ApiError(
            413,
            "image_too_large",
            f"image: expected at most {max_pixels} pixels, found {width}x{height} (refused before decoding)",
            param="image",
        )


def in_slot(ctx: ServiceContext, request: Request, what: str, work: Callable[..., _T], *args: Any) -> _T:
    """`work(*args)` once one of the `verify_concurrency` slots is free: a request waits (in a worker
    thread, never the event loop) up to `verify_queue_s`, then is answered 503 `busy`. The wait and the
    work's time go in the request's log line (`slot_wait_ms`, `work_ms`)."""
    began = time.perf_counter()
    got = ctx.verify_slots.acquire(timeout=ctx.config.verify_queue_s)
    waited = time.perf_counter() - began
    request.state.timings = {"slot_wait_ms": round(waited * 1000, 1)}
    if not got:
        raise ApiError(
            503,
            "busy",
            f"{what}: expected a free slot within {ctx.config.verify_queue_s} s, found all "
            f"{ctx.config.verify_concurrency} busy; retry shortly",
            kind="server_error",
            headers={"Retry-After": "1"},
        )
    try:
        return work(*args)
    finally:
        ctx.verify_slots.release()
        request.state.timings["work_ms"] = round((time.perf_counter() - began - waited) * 1000, 1)


def verify_upload(ctx: ServiceContext, data: bytes) -> VerificationReport:
    """The recorded verification of an upload (its verdict counted), or 400 naming the image. Every audit
    space is searched (the shared one and each tenant's: `TenantSpaces.verify_spaces`), the image read
    once and its watermark once per distinct key; the verification is recorded in the space that holds
    the image, else in the shared one."""
    try:
        report = verify_image_in_spaces(
            data,
            ctx.spaces.verify_spaces(),
            name="upload",
            trust_anchors_pem=ctx.spaces.trust_anchors_pem(),
        )
    except ImageInputError as exc:
        raise ApiError(400, "invalid_image", str(exc), param="image") from None
    ctx.telemetry.verdict(report.verdict.value)
    return report


def router(ctx: ServiceContext) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["public"])

    @api.post(
        "/verify",
        response_model=PublicVerification,
        openapi_extra=UPLOAD_SCHEMA,
        responses={code: {"model": ErrorResponse} for code in (400, 413, 415, 429, 503)},
    )
    async def verify(request: Request) -> PublicVerification:
        """Is this image ours, was it changed, when was it made, under which policy version? No key needed."""
        client = request.client.host if request.client else "unknown"
        retry = ctx.verify_limits.take(client)
        if retry:
            raise ApiError(
                429,
                "rate_limited",
                f"verify: expected at most {ctx.verify_limits.burst} requests at once from one address, "
                f"then {ctx.verify_limits.per_second}/s; retry in {retry:.1f} s",
                kind="rate_limit_error",
                headers={"Retry-After": str(max(1, round(retry)))},
            )
        data = await upload_bytes(request, ctx.config.max_upload_bytes)
        check_header(data, ctx.config.max_upload_pixels)
        report = await run_in_threadpool(in_slot, ctx, request, "verify", verify_upload, ctx, data)
        return public_view(report)

    return api
