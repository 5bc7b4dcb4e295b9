"""`POST /v1/generations`, `GET /v1/generations/{id}`, `GET /v1/files/{generation id}/{file}`, `GET /v1/me`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse

from genguard.audit.service_store import JobRecord
from genguard.pipeline.service.auth import Principal, requires
from genguard.pipeline.service.context import ServiceContext
from genguard.pipeline.service.errors import ApiError, not_found
from genguard.pipeline.service.schemas import (
    DecisionSummary,
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

GENERATOR = ("generator",)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429, 500, 503)
}


def job_request(body: GenerationCreate) -> dict[str, Any]:
    """The job row's request: what the worker turns into a GenerationRequest."""
    width = height = 0
    if body.size is not None:
        left, _, right = body.size.partition("x")
        width, height = int(left), int(right)
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
    }


def file_url(request: Request, generation_id: str, file: str) -> str:
    return str(request.url_for("get_file", generation_id=generation_id, file=file))


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
    )


def router(ctx: ServiceContext) -> APIRouter:
    api = APIRouter(prefix="/v1", responses=ERRORS)
    generator = Depends(requires(ctx.store, *GENERATOR))
    anyone = Depends(requires(ctx.store))

    @api.get("/me", response_model=Me, tags=["keys"])
    def me(principal: Principal = anyone) -> Me:
        """The calling key's id, tenant and role."""
        return Me(key_id=principal.key_id, tenant=principal.tenant_name, role=principal.role)

    @api.post("/generations", status_code=202, response_model=JobAccepted, tags=["generations"])
    def create_generation(
        body: GenerationCreate, request: Request, principal: Principal = generator
    ) -> JobAccepted:
        """Queue a governed generation; the answer names the job to poll."""
        job = ctx.store.create_job(principal.tenant_id, principal.key_id, job_request(body))
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
