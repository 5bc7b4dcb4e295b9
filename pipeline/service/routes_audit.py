"""The audit log over HTTP: the chain's verification and the tenant's generations (`genguard audit`).

`GET /v1/audit/chain` (auditor, admin) checks what `genguard audit verify` checks, on the key's tenant's
own audit space: the hash chain against the stored rows, the batch signatures under the tenant's log
key, and the latest automatic checkpoint in the tenant's folder. The chain holds only the tenant's
entries, so its sizes and the entry at fault say nothing of other tenants: both roles get the report.

`GET /v1/audit/generations` (filters and pages of `genguard audit list`) and
`GET /v1/audit/generations/{id}` (the record as `genguard audit show` gives it) read only the key's
tenant's generations, from its own audit space; another tenant's id answers 404 as an unknown one does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from genguard.audit.reader import in_tenant
from genguard.guard.types import PromptAction
from genguard.pipeline.cli_audit import dataclass_json_for_people
from genguard.pipeline.service.auth import Principal, requires
from genguard.pipeline.service.context import ServiceContext
from genguard.pipeline.service.errors import not_found
from genguard.pipeline.service.schemas import ErrorResponse
from genguard.pipeline.service.schemas_audit import GenerationPage
from genguard.pipeline.service.spaces import TenantSpace

AUDITORS = ("auditor", "admin")
MAX_PAGE = 100


class CheckpointStatus(BaseModel):
    """The latest automatic checkpoint, checked against the log now."""

    file: str
    tree_size: int
    timestamp: datetime
    ok: bool
    signature_valid: bool
    first_bad_seq: int | None
    first_bad_upto: int | None
    reason: str | None


class ChainStatus(BaseModel):
    """The tenant's chain: `ok` covers the chain, the log signatures and the latest checkpoint."""

    ok: bool
    entries_checked: int | None
    head_seq: int | None
    first_bad_seq: int | None
    reason: str | None
    signed_from: int | None = None
    batches_verified: int | None = None
    log_key_id: str | None = None
    checkpoint: CheckpointStatus | None = None


def chain_status(space: TenantSpace) -> ChainStatus:
    """What `genguard audit verify` reports for the tenant's audit space: its database, its log key, its
    checkpoint folder."""
    from genguard.audit.checkpoint import (
        LogKeyMismatchError,
        latest_checkpoint,
        verify_against_checkpoint,
        verify_log_against_pins,
    )

    store = space.store
    folder = space.layout.checkpoints / store.log_id()
    try:
        report = verify_log_against_pins(store, folder, store.log_public_key)
    except LogKeyMismatchError as exc:
        return ChainStatus(ok=False, entries_checked=None, head_seq=None, first_bad_seq=None, reason=str(exc))
    status = ChainStatus(
        ok=report.ok,
        entries_checked=report.entries_checked,
        head_seq=report.head_seq,
        first_bad_seq=report.first_bad_seq,
        reason=report.reason,
        signed_from=report.signed_from,
        batches_verified=report.batches_verified,
        log_key_id=report.log_key_id,
    )
    latest = latest_checkpoint(folder) if report.ok else None
    if latest is not None:
        checkpoint, path = latest
        found = verify_against_checkpoint(store, checkpoint)
        status.checkpoint = CheckpointStatus(
            file=path.name,
            tree_size=checkpoint.tree_size,
            timestamp=checkpoint.timestamp,
            ok=found.ok,
            signature_valid=found.signature_valid,
            first_bad_seq=found.first_bad_seq,
            first_bad_upto=found.first_bad_upto,
            reason=found.reason,
        )
        status.ok = found.ok
    return status


def router(ctx: ServiceContext) -> APIRouter:
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 503)
    }
    api = APIRouter(prefix="/v1/audit", tags=["audit"], responses=errors)
    auditor = Depends(requires(ctx.store, *AUDITORS))

    @api.get("/chain", response_model=ChainStatus)
    def chain(principal: Principal = auditor) -> ChainStatus:
        """Verify the audit log as `genguard audit verify` does: the chain, its batch signatures and the
        latest automatic checkpoint; intact, or the first entry that does not match and why."""
        return chain_status(ctx.spaces.get(principal.tenant_id))

    @api.get("/generations", response_model=GenerationPage)
    def generations(
        principal: Principal = auditor,
        status: Annotated[Literal["completed", "blocked", "failed", "invalid"] | None, Query()] = None,
        decision: Annotated[PromptAction | None, Query(description="The prompt decision's action.")] = None,
        since: Annotated[datetime | None, Query(description="Created at or after (ISO 8601).")] = None,
        until: Annotated[datetime | None, Query(description="Created before (ISO 8601).")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> GenerationPage:
        """Your tenant's generations, newest first, as `genguard audit list --json` prints them."""
        rows = (
            ctx.spaces.audit(principal.tenant_id)
            .reader()
            .generations(
                limit=limit + 1,
                status=status,
                since=_aware(since),
                until=_aware(until),
                decision=decision,
                tenant=principal.tenant,
                offset=offset,
            )
        )
        return GenerationPage(
            items=[dataclass_json_for_people(row) for row in rows[:limit]],
            offset=offset,
            limit=limit,
            next_offset=offset + limit if len(rows) > limit else None,
        )

    @api.get("/generations/{generation_id}", response_model=dict[str, Any])
    def generation(
        generation_id: str,
        principal: Principal = auditor,
        raw: Annotated[
            bool, Query(description="Stored bytes (C2PA manifests) in hex instead of digest and length.")
        ] = False,
    ) -> Any:
        """Everything recorded for one of your tenant's generations, as `genguard audit show` prints it."""
        detail = ctx.spaces.audit(principal.tenant_id).reader().generation(generation_id)
        if detail is None or not in_tenant(detail.actor, principal.tenant):
            raise not_found("generation", generation_id)
        return dataclass_json_for_people(detail, raw)

    return api


def _aware(moment: datetime | None) -> datetime | None:
    from datetime import UTC

    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
