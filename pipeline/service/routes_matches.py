"""The C2PA Soft Binding Resolution API for our marks: from a soft binding (or an image) to its manifest.

Shaped like the C2PA Soft Binding Resolution API (its OpenAPI document, version 1.0.0):
`GET /v1/matches/byBinding` (the spec's POST variant, for values too long for a URL, is not needed: ours
are 8 bytes), `POST /v1/matches/byContent`, `GET /v1/manifests/{manifestId}` and
`GET /v1/services/supportedAlgorithms`. Public like `/v1/verify`: no key, and the same token bucket per
client address (a lookup takes one token, as a verification does).

Algorithms, by the names our manifests write in their `c2pa.soft-binding` assertion
(`C2PA_SOFT_BINDING_NAMES`), plus the perceptual hash the audit store keeps for every image:

- a watermark (`org.genguard.watermark.pixel.v3`, `org.genguard.watermark.latent.gaussianshading.v1`):
  `value` is the mark id: base64 (standard or URL-safe, padding optional) of its 8 bytes big-endian, or the
  text the manifest's soft-binding block holds (`0x` + 16 hex digits). An exact match scores 100.
- the perceptual hash (`org.genguard.phash.dct64.v1`, a name of ours: the list has no entry for it): `value`
  is the 64-bit hash, base64 of its 8 bytes big-endian (or `0x` + 16 hex digits). Images within
  `RADIUS` bits match, scored by the share of the 64 bits that agree.

A manifest's id is `urn:genguard:mark:<mark id>`: the mark id is 63 random bits per image, so an id is known
only to whoever holds the image, its manifest or its mark. Only released images with a signed manifest are
ever answered, from whichever audit space holds them (the shared one and each tenant's); the manifest
bytes served are the manifest store the audit store kept when the image was
released (the same bytes whether it was embedded in the file or written next to it as a sidecar).
"""

from __future__ import annotations

import base64
import binascii
import re

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from genguard.audit.reader import StoredImage
from genguard.audit.verify import RADIUS
from genguard.guard.markid import format_mark_id
from genguard.guard.provenance.content_credentials import C2PA_SOFT_BINDING_NAMES
from genguard.pipeline.service.context import ServiceContext
from genguard.pipeline.service.errors import ApiError
from genguard.pipeline.service.routes_verify import in_slot, verify_upload
from genguard.pipeline.service.schemas import ErrorResponse
from genguard.pipeline.service.uploads import UPLOAD_SCHEMA, check_header, upload_bytes

WATERMARK_ALGS = tuple(sorted(C2PA_SOFT_BINDING_NAMES.values()))
PHASH_ALG = "org.genguard.phash.dct64.v1"
ALGS = (*WATERMARK_ALGS, PHASH_ALG)
MANIFEST_ID_PREFIX = "urn:genguard:mark:"
_MARK_TEXT = re.compile(r"0[xX][0-9a-fA-F]{16}")
# both forms of a 64-bit value, as the schema announces them (a value that fits is always understood)
VALUE_PATTERN = r"^(0[xX][0-9a-fA-F]{16}|[A-Za-z0-9+/]{11}=?|[A-Za-z0-9_-]{11}=?)$"
MANIFEST_ID_PATTERN = r"^urn:genguard:mark:0[xX][0-9a-fA-F]{16}$"
_MANIFEST_ID = re.compile(re.escape(MANIFEST_ID_PREFIX) + r"(0[xX][0-9a-fA-F]{16})")
_RELEASED = ("released", "approved")
_MAX_RESULTS = 100


class SoftBindingMatch(BaseModel):
    manifestId: str = Field(description="Identifier of a matched C2PA Manifest (GET /v1/manifests/{id}).")
    similarityScore: int = Field(ge=0, le=100, description="Strength of the match, 100 the strongest.")


class SoftBindingQueryResult(BaseModel):
    matches: list[SoftBindingMatch]


class SoftBindingAlg(BaseModel):
    alg: str


class SoftBindingAlgList(BaseModel):
    watermarks: list[SoftBindingAlg]
    fingerprints: list[SoftBindingAlg]


def manifest_id(mark_id: int) -> str:
    return MANIFEST_ID_PREFIX + format_mark_id(mark_id)


def parse_manifest_id(value: str) -> int:
    match = _MANIFEST_ID.fullmatch(value)
    if match is None:
        raise ApiError(
            400,
            "invalid_manifest_id",
            f"manifestId: expected {MANIFEST_ID_PREFIX}0x followed by 16 hex digits, found {value[:80]!r}",
            param="manifestId",
        )
    return int(match.group(1), 16)


def binding_value(alg: str, value: str) -> int:
    """The 64-bit value a query names: base64 of 8 bytes big-endian, or `0x` + 16 hex digits."""
    text = value.strip()
    if _MARK_TEXT.fullmatch(text):
        return int(text, 16)
    url_safe = "-" in text or "_" in text
    try:
        raw = base64.b64decode(
            text + "=" * (-len(text) % 4), altchars=b"-_" if url_safe else None, validate=True
        )
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == 8:
        return int.from_bytes(raw, "big")
    raise ApiError(
        400,
        "invalid_value",
        f"value: expected base64 of the 8-byte value (or 0x + 16 hex digits) for {alg}, found {value[:80]!r}",
        param="value",
    )


def check_alg(alg: str) -> None:
    if alg not in ALGS:
        raise ApiError(
            400,
            "unsupported_algorithm",
            f"alg: expected one of {', '.join(ALGS)}, found {alg[:80]!r}",
            param="alg",
        )


def _public(image: StoredImage | None) -> bool:
    """Only an image that left, with a signed manifest, is ever answered."""
    return (
        image is not None
        and image.status in _RELEASED
        and image.manifest is not None
        and image.mark_id is not None
    )


def _score(distance: int) -> int:
    return max(0, round(100 * (64 - distance) / 64))


def _take_token(ctx: ServiceContext, request: Request, what: str) -> None:
    client = request.client.host if request.client else "unknown"
    retry = ctx.verify_limits.take(client)
    if retry:
        raise ApiError(
            429,
            "rate_limited",
            f"{what}: expected at most {ctx.verify_limits.burst} requests at once from one address, "
            f"then {ctx.verify_limits.per_second}/s; retry in {retry:.1f} s",
            kind="rate_limit_error",
            headers={"Retry-After": str(max(1, round(retry)))},
        )


class Resolver:
    """Soft binding → the released images' manifest ids, best first, at most `limit`."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def _released(self, mark_id: int) -> StoredImage | None:
        """The released, signed image with this mark id, in whichever audit space holds it."""
        for store in self.ctx.spaces.stores():
            image = store.reader().image_by_mark_id(mark_id)
            if image is not None and _public(image):
                return image
        return None

    def by_mark(self, mark_id: int) -> list[SoftBindingMatch]:
        if self._released(mark_id) is None:
            return []
        return [SoftBindingMatch(manifestId=manifest_id(mark_id), similarityScore=100)]

    def by_phash(self, phash: int, limit: int) -> list[SoftBindingMatch]:
        found = [
            item
            for store in self.ctx.spaces.stores()
            for item in store.reader().similar_images(phash, max_distance=RADIUS, limit=_MAX_RESULTS)
        ]
        found.sort(key=lambda item: item.distance)  # stable: the shared space first on ties
        matches = [
            SoftBindingMatch(
                manifestId=manifest_id(item.image.mark_id), similarityScore=_score(item.distance)
            )
            for item in found
            if _public(item.image) and item.image.mark_id is not None
        ]
        return matches[:limit]

    def by_binding(self, alg: str, value: str, limit: int) -> SoftBindingQueryResult:
        check_alg(alg)
        number = binding_value(alg, value)
        matches = self.by_mark(number) if alg in WATERMARK_ALGS else self.by_phash(number, limit)
        return SoftBindingQueryResult(matches=matches[:limit])

    def by_content(self, data: bytes, alg: str | None, limit: int) -> SoftBindingQueryResult:
        """Read the upload as `/v1/verify` does (and record the verification as it does), then resolve
        the watermark's mark id and the perceptual hash it read (only `alg`'s, when given)."""
        report = verify_upload(self.ctx, data)
        matches: list[SoftBindingMatch] = []
        mark = report.watermark
        if alg in (None, *WATERMARK_ALGS) and mark is not None and mark.marked and mark.mark_id is not None:
            matches += self.by_mark(mark.mark_id)
        if alg in (None, PHASH_ALG):
            matches += self.by_phash(report.hashes.phash, _MAX_RESULTS)
        best: dict[str, SoftBindingMatch] = {}
        for match in matches:
            if match.manifestId not in best or best[match.manifestId].similarityScore < match.similarityScore:
                best[match.manifestId] = match
        ranked = sorted(best.values(), key=lambda m: -m.similarityScore)  # stable: watermark first on ties
        return SoftBindingQueryResult(matches=ranked[:limit])

    def manifest(self, mark_id: int) -> bytes:
        image = self._released(mark_id)
        if image is None or image.manifest is None:
            raise ApiError(
                404,
                "not_found",
                f"manifestId: expected the id of a released image's manifest, found {manifest_id(mark_id)!r}",
                param="manifestId",
            )
        return image.manifest


_ERRORS: dict[int | str, dict[str, object]] = {code: {"model": ErrorResponse} for code in (400, 429, 503)}
_MAX_RESULTS_QUERY = Query(10, alias="maxResults", ge=1, le=_MAX_RESULTS, description="At most this many.")


def router(ctx: ServiceContext) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["public", "soft binding resolution"])
    resolver = Resolver(ctx)

    @api.get("/matches/byBinding", response_model=SoftBindingQueryResult, responses=_ERRORS)
    def query_by_binding(
        request: Request,
        alg: str = Query(
            min_length=1,
            max_length=200,
            description="The soft binding algorithm's name.",
            json_schema_extra={"enum": list(ALGS)},
        ),
        value: str = Query(
            min_length=1, max_length=200, pattern=VALUE_PATTERN, description="The soft binding's value."
        ),
        max_results: int = _MAX_RESULTS_QUERY,
    ) -> SoftBindingQueryResult:
        """The manifest ids of released images that carry this soft binding. No key needed."""
        _take_token(ctx, request, "matches")
        return resolver.by_binding(alg, value, max_results)

    @api.post(
        "/matches/byContent",
        response_model=SoftBindingQueryResult,
        openapi_extra=UPLOAD_SCHEMA,
        responses={code: {"model": ErrorResponse} for code in (400, 413, 415, 429, 503)},
    )
    async def query_by_content(
        request: Request,
        alg: str | None = Query(
            None,
            max_length=200,
            description="Resolve by this algorithm only.",
            json_schema_extra={"enum": list(ALGS)},
        ),
        max_results: int = _MAX_RESULTS_QUERY,
    ) -> SoftBindingQueryResult:
        """The manifest ids of released images this upload carries the mark of, or looks like. The upload's
        limits are /v1/verify's. No key needed."""
        _take_token(ctx, request, "matches")
        if alg is not None:
            check_alg(alg)
        data = await upload_bytes(request, ctx.config.max_upload_bytes)
        check_header(data, ctx.config.max_upload_pixels)
        return await run_in_threadpool(
            in_slot, ctx, request, "matches", resolver.by_content, data, alg, max_results
        )

    @api.get(
        "/manifests/{manifestId}",
        response_class=Response,
        responses={
            200: {"content": {"application/c2pa": {"schema": {"type": "string", "format": "binary"}}}},
            400: {"model": ErrorResponse},
            404: {"model": ErrorResponse},
            429: {"model": ErrorResponse},
        },
    )
    def get_manifest_by_id(
        request: Request,
        manifestId: str = Path(
            max_length=200, pattern=MANIFEST_ID_PATTERN, description="A match's manifestId."
        ),
    ) -> Response:
        """The C2PA manifest store kept when the image was released. No key needed."""
        _take_token(ctx, request, "manifests")
        return Response(resolver.manifest(parse_manifest_id(manifestId)), media_type="application/c2pa")

    @api.get("/services/supportedAlgorithms", response_model=SoftBindingAlgList)
    def supported_algorithms() -> SoftBindingAlgList:
        """The soft binding algorithms this service resolves."""
        return SoftBindingAlgList(
            watermarks=[SoftBindingAlg(alg=alg) for alg in WATERMARK_ALGS],
            fingerprints=[SoftBindingAlg(alg=PHASH_ALG)],
        )

    return api
