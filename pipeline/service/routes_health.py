"""`/healthz` (the process answers) and `/readyz` (the database answers and the workers run)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from genguard.guard.errors import GenguardError
from genguard.pipeline.service.context import ServiceContext
from genguard.pipeline.service.schemas import Health, Readiness


def router(ctx: ServiceContext) -> APIRouter:
    api = APIRouter(tags=["health"])

    @api.get("/healthz", response_model=Health)
    def healthz() -> Health:
        return Health(status="ok")

    @api.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    def readyz() -> JSONResponse:
        try:
            ctx.store.ping()
            queued: int | None = ctx.store.count_jobs("queued")
            database = True
        except GenguardError:
            queued, database = None, False
        alive = ctx.runner.alive()
        ready = database and alive == ctx.runner.workers
        body = Readiness(
            status="ready" if ready else "not ready",
            database=database,
            workers_alive=alive,
            workers=ctx.runner.workers,
            model_loaded=ctx.runner.models_loaded > 0,
            queued_jobs=queued,
        )
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    return api
