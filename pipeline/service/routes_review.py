"""The review queue over HTTP, for reviewers (and admins): the same functions as `genguard review`.

`GET /v1/review` (the queue), `GET /v1/review/{generation}` (its quarantined images, the prompt rules
that fired, the scores), `GET /v1/review/{generation}/images/{index}` (the decrypted image, reviewers
only, recorded as a "review.image_exported" event), `POST .../images/{index}/approve` and `.../reject`.
The reviewer recorded is `apikey:<key id>`. Everything is read from and recorded in the key's tenant's
audit space; an approved image is marked and signed with the tenant's keys. Another tenant's generation
answers 404 exactly as one that does not exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from genguard.audit import review
from genguard.audit.reader import in_tenant
from genguard.guard.errors import NotFoundError
from genguard.pipeline.service.auth import Principal, requires
from genguard.pipeline.service.context import ServiceContext
from genguard.pipeline.service.errors import ApiError, not_found
from genguard.pipeline.service.schemas import ErrorResponse
from genguard.pipeline.service.schemas_audit import (
    ApproveRequest,
    HeldByView,
    PromptRuleView,
    RejectRequest,
    ReviewDecisionView,
    ReviewGeneration,
    ReviewItemView,
    ReviewOutcomeView,
    ReviewPage,
)

REVIEWERS = ("reviewer", "admin")
IMAGE_VIEWERS = ("reviewer",)
MAX_PAGE = 100
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 500, 503)
}


def router(ctx: ServiceContext) -> APIRouter:
    api = APIRouter(prefix="/v1/review", tags=["review"], responses=ERRORS)
    reviewer = Depends(requires(ctx.store, *REVIEWERS))
    image_viewer = Depends(requires(ctx.store, *IMAGE_VIEWERS))

    def item(principal: Principal, generation_id: str, index: int) -> review.ReviewItem:
        """The tenant's quarantined image; another tenant's, or none, is the same 404."""
        review_id = f"{generation_id}:{index}"
        review.parse_review_id(review_id)  # a malformed id is 400, whoever's it would be
        try:
            found = review.show(ctx.spaces.audit(principal.tenant_id), review_id)
        except NotFoundError:
            found = None
        if found is None or not in_tenant(found.actor, principal.tenant):
            raise not_found("quarantined image", review_id)
        return found

    @api.get("", response_model=ReviewPage)
    def queue(
        principal: Principal = reviewer,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> ReviewPage:
        """Your tenant's images waiting for review, oldest first."""
        waiting = review.review_queue(ctx.spaces.audit(principal.tenant_id), tenant=principal.tenant)
        page = waiting[offset : offset + limit]
        more = offset + limit < len(waiting)
        return ReviewPage(
            items=[ReviewItemView.of(i) for i in page],
            offset=offset,
            limit=limit,
            next_offset=offset + limit if more else None,
        )

    @api.get("/{generation_id}", response_model=ReviewGeneration)
    def show(generation_id: str, principal: Principal = reviewer) -> ReviewGeneration:
        """A generation's quarantined images (decided or not), the prompt rules that fired, the output
        checks' scores and flags, and the prompt categories that held them for review."""
        review.parse_review_id(f"{generation_id}:0")
        detail = ctx.spaces.audit(principal.tenant_id).reader().generation(generation_id, with_events=False)
        if detail is None or not in_tenant(detail.actor, principal.tenant):
            raise not_found("generation", generation_id)
        quarantined = [image.index for image in detail.images if image.status == "quarantined"]
        if not quarantined:
            raise not_found("generation", generation_id)  # nothing of it was ever in the queue
        held_by = (
            [c for c in detail.decision.categories if c.action.value == "review"]
            if detail.decision.action.value == "review"
            else []
        )
        return ReviewGeneration(
            generation_id=generation_id,
            prompt_rules=[
                PromptRuleView(category=r.category, layer=r.layer, rule=r.rule, score=r.score)
                for r in detail.decision.rules
            ],
            held_by=[HeldByView(category=c.category, score=c.score) for c in held_by],
            images=[ReviewItemView.of(item(principal, generation_id, index)) for index in quarantined],
        )

    @api.get(
        "/{generation_id}/images/{index}",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def image(
        generation_id: str, index: int, request: Request, principal: Principal = image_viewer
    ) -> Response:
        """The decrypted, unmarked pixels the checks saw (PNG), for reviewers only; recorded as a
        "review.image_exported" event (the key's id, the request id, the PNG's sha256) before it is sent."""
        found = item(principal, generation_id, index)
        if not found.kept:
            raise not_found("kept copy of quarantined image", found.review_id)
        request_id = getattr(request.state, "request_id", "")
        png = review.view_image(
            ctx.spaces.audit(principal.tenant_id),
            found.review_id,
            principal.reviewer,
            to=f"http response (request {request_id})",
        )
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @api.post("/{generation_id}/images/{index}/approve", response_model=ReviewOutcomeView)
    def approve(
        generation_id: str, index: int, body: ApproveRequest, principal: Principal = reviewer
    ) -> ReviewOutcomeView:
        """Release the image: watermarked, signed, recorded, then written to your tenant's files."""
        found = item(principal, generation_id, index)
        if not found.kept and found.decision is None:
            raise ApiError(
                409,
                "not_kept",
                f"review id {found.review_id}: expected a kept copy to release, found none (reject it instead)",
            )
        space = ctx.spaces.get(principal.tenant_id)
        outcome = review.approve(
            space.store,
            found.review_id,
            reviewer=principal.reviewer,
            reason=body.reason,
            out_dir=Path(ctx.config.files_dir) / principal.tenant_id,
            watermark_key=space.watermark_key(),
            content_credentials=space.content_credentials(),
        )
        return ReviewOutcomeView(review_id=found.review_id, decision=ReviewDecisionView.of(outcome.decision))

    @api.post("/{generation_id}/images/{index}/reject", response_model=ReviewOutcomeView)
    def reject(
        generation_id: str, index: int, body: RejectRequest, principal: Principal = reviewer
    ) -> ReviewOutcomeView:
        """Reject the image (a reason is required); its encrypted copy is deleted after the record."""
        found = item(principal, generation_id, index)
        outcome = review.reject(
            ctx.spaces.audit(principal.tenant_id),
            found.review_id,
            reviewer=principal.reviewer,
            reason=body.reason,
        )
        return ReviewOutcomeView(review_id=found.review_id, decision=ReviewDecisionView.of(outcome.decision))

    return api
