"""`GET /v1/reports/bias` and `GET /v1/reports/safety`: `genguard report bias|safety` over HTTP.

The same functions (`genguard.audit.reports`, `genguard.audit.report_html`) and parameters as the
CLI, over the key's tenant's audit space (its generations only). JSON by default; HTML (the CLI's self-contained page)
with `?format=html` or an `Accept` header that prefers `text/html`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from genguard.pipeline.service.auth import Principal, requires
from genguard.pipeline.service.context import ServiceContext
from genguard.pipeline.service.schemas import ErrorResponse

AUDITORS = ("auditor", "admin")
Format = Literal["json", "html"]
Bucket = Literal["day", "week", "month"]
Since = Annotated[datetime | None, Query(description="Only generations at or after (ISO 8601).")]
PromptLike = Annotated[
    str | None,
    Query(max_length=500, description="Only prompts containing this text (SQL LIKE with %)."),
]
_CONTENT: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/html": {"schema": {"type": "string"}},
        }
    },
    **{code: {"model": ErrorResponse} for code in (400, 401, 403, 503)},
}


def wants_html(request: Request, format: Format | None) -> bool:
    """`format` when given, else whether the Accept header ranks text/html above application/json."""
    if format is not None:
        return format == "html"
    best: dict[str, float] = {}
    for part in request.headers.get("accept", "").split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best[media.lower()] = max(quality, best.get(media.lower(), 0.0))
    return best.get("text/html", 0.0) > best.get("application/json", 0.0)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def router(ctx: ServiceContext) -> APIRouter:
    api = APIRouter(prefix="/v1/reports", tags=["reports"], responses=_CONTENT)
    auditor = Depends(requires(ctx.store, *AUDITORS))

    @api.get("/bias", response_class=Response)
    def bias(
        request: Request,
        principal: Principal = auditor,
        since: Since = None,
        prompt_like: PromptLike = None,
        bucket: Bucket = "day",
        group_by: Literal["prompt", "occupation"] = "prompt",
        format: Format | None = None,
    ) -> Response:
        """Perceived skin tone and gender presentation per prompt or occupation, entropy and trend."""
        from genguard.audit.report_html import render_bias_html
        from genguard.audit.reports import bias_report

        result = bias_report(
            ctx.spaces.audit(principal.tenant_id),
            since=_aware(since),
            prompt_like=prompt_like,
            group_by=group_by,
            bucket=bucket,
            tenant=principal.tenant,
        )
        if wants_html(request, format):
            return HTMLResponse(render_bias_html(result))
        return JSONResponse(result.to_json())

    @api.get("/safety", response_class=Response)
    def safety(
        request: Request,
        principal: Principal = auditor,
        since: Since = None,
        prompt_like: PromptLike = None,
        bucket: Bucket = "day",
        format: Format | None = None,
    ) -> Response:
        """Released, quarantined and blocked by category, by policy version and over time."""
        from genguard.audit.report_html import render_safety_html
        from genguard.audit.reports import safety_report

        result = safety_report(
            ctx.spaces.audit(principal.tenant_id),
            since=_aware(since),
            prompt_like=prompt_like,
            bucket=bucket,
            tenant=principal.tenant,
        )
        if wants_html(request, format):
            return HTMLResponse(render_safety_html(result))
        return JSONResponse(result.to_json())

    return api
