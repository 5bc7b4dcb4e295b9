"""`POST /v1/images/generations` and `POST /v1/images/edits`, following the OpenAI Images API.

The request is queued as a job like any other and answered when its images are out (at most
`max_wait_s`). A prompt the policy blocks, and a generation whose every image was withheld, are answered
as OpenAI answers a refusal: 400 with `code: content_policy_violation` (and the policy's categories).
`model`, when given, must name the model this service runs. `url` answers point at `/v1/files/...`
(the caller's key is needed to fetch them); `b64_json` carries the signed file itself. `revised_prompt` is
never sent: prompts are kept only in the audit record, as the policy pack says.

`/v1/images/edits` takes OpenAI's multipart form (`image`, optional `mask`, `prompt`, `n`, `size`,
`response_format`), read and checked as the edit variant of `/v1/generations` reads its files. OpenAI's
mask marks the area to edit with fully transparent pixels; genguard's marks it white, so the mask's
alpha plane is turned into genguard's mask (transparent -> repainted). Without a mask, an image with
fully transparent pixels has those edited (OpenAI's rule), any other image is edited as a whole
(img2img). `strength` and `consent` are genguard's own form fields (the consent attestation the pack
may ask for when the picture shows a real person).
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from genguard.audit.service_store import JobRecord
from genguard.pipeline.service.auth import Principal, requires
from genguard.pipeline.service.context import ServiceContext
from genguard.pipeline.service.edit_upload import (
    EditUpload,
    check_edit,
    openai_mask,
    transparent_area,
    within_pack_limits,
)
from genguard.pipeline.service.errors import ApiError
from genguard.pipeline.service.routes_generations import (
    ERRORS,
    GENERATOR,
    MAX_REQUEST_BYTES,
    file_url,
    job_request,
)
from genguard.pipeline.service.routes_verify import in_slot
from genguard.pipeline.service.schemas import (
    ErrorResponse,
    GenerationCreate,
    OpenAIImage,
    OpenAIImagesEditRequest,
    OpenAIImagesRequest,
    OpenAIImagesResponse,
    OutputFormat,
)
from genguard.pipeline.service.uploads import file_part, form_body, read_form

EDIT_BODY: dict[str, Any] = form_body(
    ["image", "prompt"],
    {
        "image": file_part("PNG, JPEG or WebP."),
        "mask": file_part("PNG, the image's size: fully transparent pixels are edited."),
        **OpenAIImagesEditRequest.model_json_schema()["properties"],
    },
)


def check_model(ctx: ServiceContext, model: str | None) -> None:
    served = ctx.config.worker.model
    if model is not None and model != served:
        raise ApiError(
            400,
            "model_not_found",
            f"model: expected {served!r} (the model served here), found {model!r}",
            param="model",
        )


def asked(
    prompt: str,
    n: int,
    size: str | None,
    output_format: OutputFormat | None,
    edit: EditUpload | None = None,
) -> dict[str, Any]:
    """The job row's request for an OpenAI call: genguard's own request with its defaults for what
    OpenAI does not ask (steps, guidance, seed)."""
    body = GenerationCreate(prompt=prompt, n=n, size=size, output_format=output_format or "png")
    return job_request(body, edit)


def answer(
    ctx: ServiceContext,
    request: Request,
    principal: Principal,
    job: JobRecord,
    response_format: str,
    refused_param: str,
) -> OpenAIImagesResponse:
    """Wait for the job and answer its images as OpenAI does, or its refusal as OpenAI's error."""
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
            f"{refused_param}: refused by the content policy: {done.error}",
            param=refused_param,
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
        if response_format == "b64_json":
            path = Path(ctx.config.files_dir) / principal.tenant_id / image["file"]
            encoded = base64.b64encode(path.read_bytes()).decode("ascii")
            data.append(OpenAIImage(b64_json=encoded))
        else:
            url = file_url(request, done.generation_id or "", image["file"])
            data.append(OpenAIImage(url=url))
    return OpenAIImagesResponse(created=int(time.time()), data=data)


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
        check_model(ctx, body.model)
        job = ctx.store.create_job(
            principal.tenant_id,
            principal.key_id,
            asked(body.prompt, body.n, body.size, body.output_format),
        )
        ctx.runner.notify()
        return answer(ctx, request, principal, job, body.response_format, "prompt")

    @api.post(
        "/images/edits",
        response_model=OpenAIImagesResponse,
        response_model_exclude_none=True,
        openapi_extra=EDIT_BODY,
        responses={code: {"model": ErrorResponse} for code in (413, 415, 504)},
    )
    async def images_edits(request: Request, principal: Principal = generator) -> OpenAIImagesResponse:
        """Edit an image (OpenAI Images API): waits for the governed edit and answers its images."""
        limit = ctx.config.max_upload_bytes
        form = await read_form(
            request,
            2 * limit + MAX_REQUEST_BYTES,
            files=("image", "image[]", "mask"),
            fields=None,  # every field: one OpenAI has that this service does not read is refused
            file_limit=limit,
            what="edit",
        )
        try:
            body = OpenAIImagesEditRequest.model_validate(form.fields)
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
        check_model(ctx, body.model)
        if "image" in form.files and "image[]" in form.files:
            raise ApiError(400, "invalid_image", "image: expected one image, found several", param="image")
        image = form.files.get("image", form.files.get("image[]"))
        if image is None:
            raise ApiError(
                400, "missing_image", "image: expected a file part named 'image', found none", param="image"
            )
        pixels = ctx.config.max_upload_pixels

        def checked() -> EditUpload:
            mask = openai_mask(form.files["mask"], pixels) if "mask" in form.files else None
            if mask is None:
                mask = transparent_area(image, pixels)
            upload = check_edit(image, mask, strength=body.strength, consent=body.consent, max_pixels=pixels)
            return within_pack_limits(ctx, principal.tenant_id, upload)

        edit = await run_in_threadpool(in_slot, ctx, request, "edit", checked)
        job = await run_in_threadpool(
            ctx.store.create_job,
            principal.tenant_id,
            principal.key_id,
            asked(body.prompt, body.n, body.size, body.output_format, edit),
            edit.inputs,
        )
        ctx.runner.notify()
        return await run_in_threadpool(answer, ctx, request, principal, job, body.response_format, "image")

    return api
