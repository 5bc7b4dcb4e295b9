"""`POST /v1/generations`, `GET /v1/generations/{id}`, `GET /v1/files/{generation id}/{file}`, `GET /v1/me`.

`POST /v1/generations` takes a JSON body, or, for an edit, `multipart/form-data`: the same JSON as the
`request` part with the input image as the `image` file part and an optional `mask` file part. Files
travel as binary parts (not base64 in JSON, a third larger and decoded once more) and through the same
bounded reader as `/v1/verify` (genguard.pipeline.service.uploads): the body is refused by its size
before it is read in full, each image from its header before it is decoded. The edit's files are then
checked (genguard.pipeline.service.edit_upload) and kept sealed with the queued job until a worker runs
it (genguard.audit.job_inputs); the job's row holds their SHA-256 and sizes, never their bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from genguard.audit.service_store import JobRecord
from genguard.pipeline.service.auth import Principal, requires
from genguard.pipeline.service.context import ServiceContext
from genguard.pipeline.service.edit_upload import EditUpload, check_edit, within_pack_limits
from genguard.pipeline.service.errors import ApiError, not_found
from genguard.pipeline.service.routes_verify import in_slot
from genguard.pipeline.service.schemas import (
    DecisionSummary,
    EditSummary,
    ErrorResponse,
    GenerationCreate,
    GenerationJob,
    JobAccepted,
    ManifestSummary,
    Me,
    PolicySummary,
    ReleasedImage,
    WithheldImage,
)
from genguard.pipeline.service.uploads import file_part, form_body, read_capped, read_form

GENERATOR = ("generator",)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429, 500, 503)
}
# A JSON request: two prompts of 4000 characters each, even all escaped (\uXXXX), and the rest.
MAX_REQUEST_BYTES = 64 * 1024
_JSON_TYPES = ("application/json", "")
_CREATE_SCHEMA = GenerationCreate.model_json_schema(ref_template="#/components/schemas/{model}")
CREATE_BODY: dict[str, Any] = form_body(
    ["request", "image"],
    {
        "request": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "The generation, as the JSON body (a GenerationCreate).",
        },
        "image": file_part("The image to edit: PNG, JPEG or WebP."),
        "mask": file_part("Inpainting mask, the image's size: white (>= 128) is repainted."),
    },
    {"application/json": {"schema": _CREATE_SCHEMA}},
)


def parse_create(raw: bytes | str | None, part: str = "body") -> GenerationCreate:
    """The request's JSON as a GenerationCreate; a problem is answered as FastAPI answers a bad body
    (400 naming the field), JSON that does not parse as a 400 naming `part` (the body or the form's
    `request` field)."""
    if raw is None:
        raise ApiError(
            400,
            "missing_request",
            "request: expected a form field with the generation's JSON, found none",
            param="request",
        )
    try:
        return GenerationCreate.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if any(not error.get("loc") for error in errors):  # the text is not a JSON object
            raise ApiError(
                400,
                "invalid_request",
                f"{part}: expected the generation as a JSON object, found {errors[0]['msg']}",
                param=part,
            ) from None
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def refuse_edit_fields_without_image(body: GenerationCreate, has_mask: bool) -> None:
    """`strength`, `consent` and a mask belong to edits: without an image they are a 400 naming them."""
    if has_mask:
        raise ApiError(
            400,
            "missing_image",
            "image: expected the image to edit (a mask needs one), found none",
            param="image",
        )
    for name in ("strength", "consent"):
        if getattr(body, name) is not None:
            raise ApiError(
                400,
                f"invalid_{name}",
                f"{name}: expected only with an image to edit (multipart part 'image'), found "
                f"{getattr(body, name)!r} on a generation from a prompt alone",
                param=name,
            )


def job_request(body: GenerationCreate, edit: EditUpload | None = None) -> dict[str, Any]:
    """The job row's request: what the worker turns into a GenerationRequest. An edit keeps its input's
    size unless `size` says otherwise (to a multiple of 8, as the CLI's `--image`)."""
    width = height = 0
    if body.size is not None:
        left, _, right = body.size.partition("x")
        width, height = int(left), int(right)
    elif edit is not None:
        width, height = max(8, edit.width - edit.width % 8), max(8, edit.height - edit.height % 8)
    return {
        "prompt": body.prompt,
        "negative_prompt": body.negative_prompt,
        "n": body.n,
        "width": width,
        "height": height,
        "steps": body.steps,
        "guidance": body.guidance,
        "seed": body.seed,
        "output_format": body.output_format,
        "scheduler": body.scheduler,
        "edit": None if edit is None else edit.facts,
    }


def file_url(request: Request, generation_id: str, file: str) -> str:
    return str(request.url_for("get_file", generation_id=generation_id, file=file))


def edit_summary(asked: dict[str, Any]) -> EditSummary | None:
    """What the job shows of its edit: the facts its row keeps (hashes, shares), never the files."""
    edit = asked.get("edit")
    if not edit:
        return None
    return EditSummary(
        mode=edit["mode"],
        strength=edit["strength"],
        mask_area_share=edit["mask_area_share"],
        input_sha256=edit["image"]["sha256"],
        mask_sha256=None if edit["mask"] is None else edit["mask"]["sha256"],
        consent=edit["consent"],
    )


def job_view(request: Request, job: JobRecord) -> GenerationJob:
    result = job.result or {}
    decision = result.get("decision")
    return GenerationJob(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        generation_id=job.generation_id,
        generation_status=result.get("generation_status"),
        decision=None
        if decision is None
        else DecisionSummary(
            action=decision["action"],
            policy=PolicySummary(**decision["policy"]),
            categories=decision["categories"],
            prompt_rewritten=decision["prompt_rewritten"],
        ),
        released=[
            ReleasedImage(
                index=image["index"],
                url=file_url(request, job.generation_id or "", image["file"]),
                file=image["file"],
                mime_type=image["mime_type"],
                sha256=image["sha256"],
                mark_id=image["mark_id"],
                manifest=ManifestSummary(**image["manifest"]),
            )
            for image in result.get("released", [])
        ],
        withheld=[WithheldImage(**held) for held in result.get("withheld", [])],
        error=job.error,
        scheduler=job.request.get("scheduler"),
        edit=edit_summary(job.request),
    )


def router(ctx: ServiceContext) -> APIRouter:
    api = APIRouter(prefix="/v1", responses=ERRORS)
    generator = Depends(requires(ctx.store, *GENERATOR))
    anyone = Depends(requires(ctx.store))

    @api.get("/me", response_model=Me, tags=["keys"])
    def me(principal: Principal = anyone) -> Me:
        """The calling key's id, tenant and role."""
        return Me(key_id=principal.key_id, tenant=principal.tenant_name, role=principal.role)

    @api.post(
        "/generations",
        status_code=202,
        response_model=JobAccepted,
        tags=["generations"],
        openapi_extra=CREATE_BODY,
        responses={code: {"model": ErrorResponse} for code in (413, 415)},
    )
    async def create_generation(request: Request, principal: Principal = generator) -> JobAccepted:
        """Queue a governed generation; the answer names the job to poll. JSON for a generation from a
        prompt; multipart/form-data (`request` JSON, `image`, optional `mask`) for an edit."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        edit: EditUpload | None = None
        if content_type == "multipart/form-data":
            limit = ctx.config.max_upload_bytes
            form = await read_form(
                request,
                2 * limit + MAX_REQUEST_BYTES,
                files=("image", "mask"),
                fields=("request",),
                file_limit=limit,
                what="generation",
            )
            body = parse_create(form.fields.get("request"), "request")
            image, mask = form.files.get("image"), form.files.get("mask")
            if image is None:
                refuse_edit_fields_without_image(body, mask is not None)
            else:
                edit = await run_in_threadpool(
                    in_slot,
                    ctx,
                    request,
                    "generation",
                    lambda: within_pack_limits(
                        ctx,
                        principal.tenant_id,
                        check_edit(
                            image,
                            mask,
                            strength=body.strength,
                            consent=body.consent,
                            max_pixels=ctx.config.max_upload_pixels,
                        ),
                    ),
                )
        elif content_type in _JSON_TYPES or content_type.endswith("+json"):
            body = parse_create(await read_capped(request, MAX_REQUEST_BYTES, "generation", None))
            refuse_edit_fields_without_image(body, False)
        else:
            raise ApiError(
                415,
                "unsupported_media_type",
                f"Content-Type: expected application/json, or multipart/form-data for an edit, "
                f"found {content_type or 'none'!r}",
            )
        job = await run_in_threadpool(
            ctx.store.create_job,
            principal.tenant_id,
            principal.key_id,
            job_request(body, edit),
            None if edit is None else edit.inputs,
        )
        ctx.runner.notify()
        return JobAccepted(
            id=job.id, status=job.status, url=str(request.url_for("get_generation", job_id=job.id))
        )

    @api.get("/generations/{job_id}", response_model=GenerationJob, tags=["generations"])
    def get_generation(
        job_id: str,
        request: Request,
        principal: Principal = generator,
        wait: float = Query(  # the bound is this service's, so the schema states it
            0, ge=0, le=ctx.config.max_wait_s, description="Wait up to this many seconds for the end."
        ),
    ) -> GenerationJob:
        """The job: its status, the policy's decision, released images (with file URLs) and withheld ones."""
        if wait > ctx.config.max_wait_s:
            raise ApiError(
                400,
                "invalid_wait",
                f"wait: expected at most {ctx.config.max_wait_s} s, found {wait}",
                param="wait",
            )
        job = (
            ctx.runner.wait(job_id, principal.tenant_id, wait)
            if wait
            else ctx.store.get_job(job_id, principal.tenant_id)
        )
        if job is None:
            raise not_found("generation job", job_id)
        return job_view(request, job)

    @api.get(
        "/files/{generation_id}/{file}",
        name="get_file",
        tags=["generations"],
        response_class=FileResponse,
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}},
    )
    def get_file(generation_id: str, file: str, principal: Principal = generator) -> FileResponse:
        """A released image file of one of your generations."""
        job = ctx.store.job_for_generation(generation_id, principal.tenant_id)
        released = (job.result or {}).get("released", []) if job is not None else []
        match = next((image for image in released if image["file"] == file), None)
        if match is None:
            raise not_found("file", f"{generation_id}/{file}")
        path = Path(ctx.config.files_dir) / principal.tenant_id / match["file"]
        if not path.is_file():
            raise ApiError(410, "file_gone", f"file: {file} was released but is no longer on this server")
        return FileResponse(path, media_type=match["mime_type"])

    return api
