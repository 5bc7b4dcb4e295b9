"""`POST /v1/verify`: anyone may ask whether an image is ours; no key, rate-limited per client address.

The body is refused before it is read in full when it is over `max_upload_bytes` (by its
Content-Length, else while it streams); the image is refused from its header, before decoding, when it
has more than `max_upload_pixels`. The answer holds what a member of the public may see: the verdict,
whether it was changed, when it was made and under which policy version; never the prompt, the tenant,
a tenant's records or any other image. Every tenant's audit space is searched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
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
from genguard.pipeline.service.uploads import UPLOAD_SCHEMA, check_header, upload_bytes

_T = TypeVar("_T")
_OURS = {
    Verdict.VERIFIED_ORIGINAL,
    Verdict.OURS_ORIGINAL,
    Verdict.OURS_METADATA_STRIPPED,
    Verdict.OURS_ALTERED,
    Verdict.OURS_NEAR_COPY,
    Verdict.OURS_NO_RECORD,
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
