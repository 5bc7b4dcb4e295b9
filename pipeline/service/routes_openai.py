"""`POST /v1/images/generations`, following the OpenAI Images API.

The request is queued as a job like any other and answered when its images are out (at most
`max_wait_s`). A prompt the policy blocks, and a generation whose every image was withheld, are answered
as OpenAI answers a refusal: 400 with `code: content_policy_violation` (and the policy's categories).
`model`, when given, must name the model this service runs. `url` answers point at `/v1/files/...`
(the caller's key is needed to fetch them); `b64_json` carries the signed file itself. `revised_prompt` is
never sent: prompts are kept only in the audit record, as the policy pack says.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

from fastapi import APIRouter, Depends, Request

from genguard.pipeline.service.auth import Principal, requires
from genguard.pipeline.service.context import ServiceContext
from genguard.pipeline.service.errors import ApiError
from genguard.pipeline.service.routes_generations import ERRORS, GENERATOR, file_url
from genguard.pipeline.service.schemas import (
    ErrorResponse,
    OpenAIImage,
    OpenAIImagesRequest,
    OpenAIImagesResponse,
)


def router(ctx: ServiceContext) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["openai"], responses=ERRORS)
    generator = Depends(requires(ctx.store, *GENERATOR))

    @api.post(
        "/images/generations",
        response_model=OpenAIImagesResponse,
        response_model_exclude_none=True,
        responses={504: {"model": ErrorResponse}},
    )
    def images_generations(
        body: OpenAIImagesRequest, request: Request, principal: Principal = generator
    ) -> OpenAIImagesResponse:
        """Generate images (OpenAI Images API): waits for the governed generation and answers its images."""
        served = ctx.config.worker.model
        if body.model is not None and body.model != served:
            raise ApiError(
                400,
                "model_not_found",
                f"model: expected {served!r} (the model served here), found {body.model!r}",
                param="model",
            )
        width = height = 0
        if body.size is not None:
            left, _, right = body.size.partition("x")
            width, height = int(left), int(right)
        asked = {
            "prompt": body.prompt,
            "negative_prompt": "",
            "n": body.n,
            "width": width,
            "height": height,
            "steps": 10,
            "guidance": 7.0,
            "seed": None,
            "output_format": body.output_format or "png",
        }
        job = ctx.store.create_job(principal.tenant_id, principal.key_id, asked)
        ctx.runner.notify()
        done = ctx.runner.wait(job.id, principal.tenant_id, ctx.config.max_wait_s)
        if done is None or not done.finished:
            raise ApiError(
                504,
                "timeout",
                f"generation: still {done.status if done else 'queued'} after "
                f"{ctx.config.max_wait_s} s; follow it at /v1/generations/{job.id}",
                kind="server_error",
            )
        result = done.result or {}
        categories = (result.get("decision") or {}).get("categories") or None
        if done.status == "blocked":
            raise ApiError(
                400,
                "content_policy_violation",
                f"prompt: refused by the content policy: {done.error}",
                param="prompt",
                categories=categories,
                generation_id=done.generation_id,
            )
        if done.status == "invalid":
            raise ApiError(
                400, "invalid_request", done.error or "invalid request", generation_id=done.generation_id
            )
        if done.status != "done":
            raise ApiError(
                500,
                "generation_failed",
                f"generation failed: {done.error}",
                kind="server_error",
                generation_id=done.generation_id,
            )
        released = result.get("released", [])
        if not released:
            reasons = "; ".join(held["reason"] for held in result.get("withheld", []))
            raise ApiError(
                400,
                "content_policy_violation",
                f"images: every image was withheld by the output checks ({reasons})",
                categories=categories,
                generation_id=done.generation_id,
            )
        data = []
        for image in released:
            if body.response_format == "b64_json":
                path = Path(ctx.config.files_dir) / principal.tenant_id / image["file"]
                encoded = base64.b64encode(path.read_bytes()).decode("ascii")
                data.append(OpenAIImage(b64_json=encoded))
            else:
                url = file_url(request, done.generation_id or "", image["file"])
                data.append(OpenAIImage(url=url))
        return OpenAIImagesResponse(created=int(time.time()), data=data)

    return api
