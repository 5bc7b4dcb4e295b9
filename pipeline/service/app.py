"""The FastAPI app factory: the stores, the workers, request ids, JSON logs and the error shape.

Every request carries a request id: the caller's `X-Request-ID` when it is a sane token (at most 128
letters, digits, `.`, `_`, `-`), else a new one; it comes back in the response's `X-Request-ID`, in
every error body, and in every log line written while the request runs. Logs are one JSON object per
line on the `genguard.service` loggers; they carry the key's id, never the key or any header.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from genguard.audit.checkpoint import CheckpointTimer
from genguard.audit.service_store import ServiceStore
from genguard.audit.store import AuditStore
from genguard.guard.errors import AuditUnavailableError, GenguardError, NotFoundError
from genguard.pipeline.service import (
    routes_audit,
    routes_generations,
    routes_health,
    routes_matches,
    routes_openai,
    routes_proofs,
    routes_reports,
    routes_review,
    routes_verify,
)
from genguard.pipeline.service.context import ServiceConfig, ServiceContext, TokenBuckets
from genguard.pipeline.service.errors import ApiError
from genguard.pipeline.service.jobs import JobRunner
from genguard.pipeline.service.spaces import TenantSpaces
from genguard.pipeline.service.telemetry import Telemetry

REQUEST_ID = contextvars.ContextVar[str | None]("genguard_request_id", default=None)
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
log = logging.getLogger("genguard.service")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: int = logging.INFO) -> None:
    """The service's loggers, and uvicorn's, write JSON lines to stderr (once, however often called)."""
    for name in ("genguard.service", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(JsonFormatter())
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def error_response(error: ApiError, request_id: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "message": error.message,
        "type": error.kind,
        "code": error.code,
        "param": error.param,
        "request_id": request_id or REQUEST_ID.get(),
    }
    if error.categories is not None:
        body["categories"] = error.categories
    if error.generation_id is not None:
        body["generation_id"] = error.generation_id
    return JSONResponse({"error": body}, status_code=error.status, headers=error.headers)


def open_context(config: ServiceConfig, telemetry: Telemetry | None = None) -> ServiceContext:
    """Open the service database (its tables and its own audit store, migrated to head), the tenant
    spaces (each opened on first use) and build the workers.
    `telemetry` None: exported as the environment says (`Telemetry.from_env`)."""
    telemetry = telemetry if telemetry is not None else Telemetry.from_env()
    audit = AuditStore.open(config.db_url)
    try:
        store = ServiceStore.open(config.db_url)
    except BaseException:
        audit.close()
        raise
    spaces = TenantSpaces(config.db_url, store, audit, config.worker.policy)
    runner = JobRunner(
        store,
        spaces,
        config.files_dir,
        config.worker,
        workers=config.workers,
        grace_s=config.shutdown_grace_s,
        telemetry=telemetry,
    )
    return ServiceContext(
        config=config,
        store=store,
        audit=audit,
        spaces=spaces,
        runner=runner,
        verify_limits=TokenBuckets(config.verify_burst, config.verify_per_second),
        verify_slots=threading.BoundedSemaphore(config.verify_concurrency),
        telemetry=telemetry,
    )


def create_app(config: ServiceConfig, context: ServiceContext | None = None) -> FastAPI:
    """The service. `context`: already opened stores and workers (None: opened here from `config`).
    The workers start with the app and stop with it; the stores close with it."""
    configure_logging()
    ctx = context if context is not None else open_context(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.runner.start()
        checkpoints = CheckpointTimer(ctx.audit).start()  # the time trigger, also while the log is idle
        ctx.spaces.start()  # and one for each tenant's log
        log.info(
            "service started",
            extra={"model": config.worker.model, "workers": config.workers, "database": ctx.audit.url},
        )
        try:
            yield
        finally:
            ctx.runner.stop()
            checkpoints.stop()
            ctx.spaces.close()
            ctx.store.close()
            ctx.audit.close()
            ctx.telemetry.shutdown()
            log.info("service stopped")

    app = FastAPI(
        title="genguard",
        version="1",
        summary="Governed image generation, provenance and public verification.",
        lifespan=lifespan,
    )
    app.state.context = ctx

    @app.middleware("http")
    async def request_ids(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        asked = request.headers.get("x-request-id", "")
        request_id = asked if _SANE_ID.match(asked) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        request.state.request_id = request_id  # for the handler of unhandled errors, which runs outside
        started = time.monotonic()
        status = 500
        span_cm = ctx.telemetry.span(
            f"HTTP {request.method}",
            **{"http.request.method": request.method, "genguard.request_id": request_id},
        )
        span = span_cm.__enter__()
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = request_id
            return response
        finally:
            if span is not None:
                route = request.scope.get("route")
                template = getattr(route, "path", None) or request.url.path
                span.update_name(f"HTTP {request.method} {template}")
                span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status)
            span_cm.__exit__(None, None, None)
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.url.path,
                    "status": status,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                    "client": request.client.host if request.client else None,
                    "key_id": getattr(request.state, "key_id", None),
                    **getattr(request.state, "timings", {}),
                },
            )
            REQUEST_ID.reset(token)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        param = None
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            param = param or where
            found = error.get("input")
            shown = "" if isinstance(found, dict) else f", found {found!r}"[:120]
            problems.append(f"{where}: {error.get('msg', 'invalid')}{shown}")
        return error_response(ApiError(400, "invalid_request", "; ".join(problems), param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # the framework's own refusals (no such route, wrong method, a malformed multipart form) in the
        # service's error shape
        return error_response(
            ApiError(
                exc.status_code, f"http_{exc.status_code}", str(exc.detail), headers=dict(exc.headers or {})
            )
        )

    @app.exception_handler(AuditUnavailableError)
    async def unavailable(request: Request, exc: AuditUnavailableError) -> JSONResponse:
        log.error("audit database unavailable", extra={"error": str(exc)})
        return error_response(
            ApiError(
                503, "unavailable", "the audit database is unavailable; nothing was done", kind="server_error"
            )
        )

    @app.exception_handler(GenguardError)
    async def refused(request: Request, exc: GenguardError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFoundError) else 400 if exc.exit_code == 2 else 500
        return error_response(ApiError(status, "refused", str(exc)))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None)
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path, "request_id": request_id})
        return error_response(
            ApiError(500, "internal_error", "internal error; quote the request id", kind="server_error"),
            request_id,
        )

    for module in (routes_health, routes_generations, routes_openai, routes_verify, routes_audit):
        app.include_router(module.router(ctx))
    for module in (routes_review, routes_reports, routes_proofs, routes_matches):
        app.include_router(module.router(ctx))
    return app
