"""`GET /v1/audit/chain`: the audit log's integrity, for auditors and admins.

It recomputes every entry of the (today shared) chain, so it reports counts and the first bad entry,
never a record. Review and reports over HTTP come with the store's read API.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from genguard.pipeline.service.auth import Principal, requires
from genguard.pipeline.service.context import ServiceContext
from genguard.pipeline.service.schemas import ErrorResponse

AUDITORS = ("auditor", "admin")


class ChainStatus(BaseModel):
    ok: bool
    entries_checked: int
    head_seq: int
    first_bad_seq: int | None
    reason: str | None


def router(ctx: ServiceContext) -> APIRouter:
    errors: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403, 503)}
    api = APIRouter(prefix="/v1/audit", tags=["audit"], responses=errors)
    auditor = Depends(requires(ctx.store, *AUDITORS))

    @api.get("/chain", response_model=ChainStatus)
    def chain(principal: Principal = auditor) -> ChainStatus:
        """Recompute the hash chain: intact, or the first entry that does not match and why."""
        found = ctx.audit.verify_chain()
        return ChainStatus(
            ok=found.ok,
            entries_checked=found.entries_checked,
            head_seq=found.head_seq,
            first_bad_seq=found.first_bad_seq,
            reason=found.reason,
        )

    return api
