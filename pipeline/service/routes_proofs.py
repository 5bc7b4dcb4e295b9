"""Checkpoints and proofs over HTTP: `GET /v1/checkpoint`, `/v1/proofs/inclusion`, `/v1/proofs/consistency`.

The same functions as `genguard audit checkpoint` / `audit prove` (`genguard.audit.checkpoint`).

For the key's tenant's own chain (its audit space: genguard.audit.tenant_spaces), to its auditor and
admin keys: a tenant's checkpoints and proofs describe only its own entries. The checkpoint is the
latest automatic one in the tenant's folder, signed with the service's checkpoint key.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from genguard.audit.reader import in_tenant
from genguard.guard.errors import NotFoundError
from genguard.pipeline.service.auth import Principal, requires
from genguard.pipeline.service.context import ServiceContext
from genguard.pipeline.service.errors import ApiError, not_found
from genguard.pipeline.service.schemas import ErrorResponse
from genguard.pipeline.service.schemas_audit import ConsistencyProofView, InclusionProofView

LOG_READERS = ("auditor", "admin")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 500, 503)
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def router(ctx: ServiceContext) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["checkpoints"], responses=ERRORS)
    operator = Depends(requires(ctx.store, *LOG_READERS))

    def folder(principal: Principal) -> Any:
        space = ctx.spaces.get(principal.tenant_id)
        return space.layout.checkpoints / space.store.log_id()

    @api.get(
        "/checkpoint",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def checkpoint(principal: Principal = operator) -> Response:
        """The latest automatic checkpoint: a C2SP signed note (tlog-checkpoint body, then signature
        lines), byte for byte as written to the checkpoints folder."""
        from genguard.audit.checkpoint import latest_checkpoint

        latest = latest_checkpoint(folder(principal))
        if latest is None:
            raise ApiError(
                404, "no_checkpoint", "checkpoint: expected a signed checkpoint of this log, found none yet"
            )
        _, path = latest
        return Response(path.read_bytes(), media_type="text/plain; charset=utf-8")

    @api.get("/proofs/inclusion", response_model=InclusionProofView)
    def inclusion(
        seq: Annotated[int, Query(ge=1, description="The log entry to prove.")],
        principal: Principal = operator,
        tree_size: Annotated[
            int | None,
            Query(ge=1, description="Prove in the tree of the first tree_size entries (default: all now)."),
        ] = None,
    ) -> Any:
        """`genguard audit prove`: an inclusion proof of entry `seq`, checked offline with
        `genguard audit check-proof`. When a checkpoint of `tree_size` was written, the proof carries it."""
        import json

        from genguard.audit.checkpoint import prove_inclusion, read_checkpoint

        store = ctx.spaces.audit(principal.tenant_id)
        reader = store.reader()
        entry = reader.entry(seq)
        head = reader.head().seq
        if entry is None or seq > head:
            raise not_found("log entry", str(seq))
        if entry.generation_id is not None:
            detail = reader.generation(entry.generation_id, with_events=False)
            if detail is None or not in_tenant(detail.actor, principal.tenant):
                raise not_found("log entry", str(seq))
        signed = None
        if tree_size is not None:
            candidate = folder(principal) / f"checkpoint-{tree_size:012d}.txt"
            signed = read_checkpoint(candidate) if candidate.exists() else None
        try:
            proof = (
                prove_inclusion(store, seq, signed)
                if signed is not None
                else prove_inclusion(store, seq, tree_size=tree_size)
            )
        except NotFoundError as exc:
            raise ApiError(404, "not_found", str(exc), param="tree_size") from None
        return json.loads(proof.to_json())

    @api.get("/proofs/consistency", response_model=ConsistencyProofView)
    def consistency(
        first: Annotated[int, Query(ge=1, description="The older tree's size.")],
        principal: Principal = operator,
        second: Annotated[
            int | None, Query(ge=1, description="The newer tree's size (default: all now).")
        ] = None,
    ) -> ConsistencyProofView:
        """An RFC 9162 consistency proof: the log's first `first` entries are a prefix of its first
        `second`; checked with `genguard.audit.merkle.verify_consistency`."""
        from genguard.audit.checkpoint import prove_consistency

        proof = prove_consistency(ctx.spaces.audit(principal.tenant_id), first, second)
        return ConsistencyProofView(
            origin=proof.origin,
            first=proof.first,
            second=proof.second,
            first_root=_b64(proof.first_root),
            second_root=_b64(proof.second_root),
            path=[_b64(node) for node in proof.path],
        )

    return api
