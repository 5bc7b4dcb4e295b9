"""The service's request and response bodies (pydantic); the OpenAPI schema is built from them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

OutputFormat = Literal["png", "jpeg", "webp"]
Scheduler = Literal["lcm", "turbo"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _a_number(value: Any) -> Any:
    """`false` is not a seed and "10" is not a step count (JSON Schema's integer still admits 10.0)."""
    if isinstance(value, bool | str):
        raise ValueError(f"expected a number, found {type(value).__name__}")  # noqa: TRY004  (pydantic wants it)
    return value


Int = Annotated[int, BeforeValidator(_a_number)]
Float = Annotated[float, BeforeValidator(_a_number)]


class ErrorBody(BaseModel):
    """Every error, in the OpenAI API's shape: `{"error": {...}}`."""

    message: str
    type: str
    code: str
    param: str | None = None
    request_id: str | None = None
    categories: list[str] | None = None
    generation_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class GenerationCreate(_Strict):
    """A generation to run: sizes, steps and images are checked against the model's bounds.

    An edit (img2img; inpainting with a mask) is sent as `multipart/form-data`: this object as the
    `request` part, the input as the `image` file part and the mask as the `mask` file part; `strength`
    and `consent` belong to edits only."""

    prompt: str = Field(min_length=1, max_length=4000)
    negative_prompt: str = Field(default="", max_length=4000)
    n: Int = Field(default=1, ge=1, le=64, description="Images to generate.")
    size: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,5}x[0-9]{1,5}$",
        description="WIDTHxHEIGHT (default: 256x256 for the embedded models, else the model's own).",
    )
    steps: Int = Field(default=10, ge=1, le=1000)
    guidance: Float = Field(default=7.0, ge=0.0, le=50.0)
    # the bounds before the validator: after it, the schema would read "ge"/"le", not JSON Schema's words
    seed: Annotated[int, Field(ge=0, le=2**31 - 1), BeforeValidator(_a_number)] | None = None
    output_format: OutputFormat = "png"
    scheduler: Scheduler | None = Field(
        default=None,
        description="Few-step sampler for SD/SDXL models: lcm or turbo (null: the model's own).",
    )
    strength: Annotated[float, Field(gt=0.0, le=1.0), BeforeValidator(_a_number)] | None = Field(
        default=None,
        description="Edits only: how far the edit may move from the input, in (0, 1] "
        "(default 0.75 for img2img, 1.0 for inpainting).",
    )
    consent: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="Edits only: a reference to the consent attestation for editing a picture of a "
        "real person (recorded with the generation).",
    )


class JobAccepted(BaseModel):
    id: str
    status: str
    url: str


class PolicySummary(BaseModel):
    name: str
    version: str


class DecisionSummary(BaseModel):
    action: str
    policy: PolicySummary
    categories: list[str]
    prompt_rewritten: bool


class ManifestSummary(BaseModel):
    """The image's Content Credentials: signed or not, embedded in the file or in a sidecar."""

    signed: bool
    embedded: bool
    size_bytes: int
    timestamp: str


class ReleasedImage(BaseModel):
    index: int
    url: str
    file: str
    mime_type: str
    sha256: str
    mark_id: str
    manifest: ManifestSummary


class WithheldImage(BaseModel):
    index: int
    status: str
    reason: str


class EditSummary(BaseModel):
    """An edit's facts that the job may show: never the input image or the mask."""

    edited: Literal[True] = True
    mode: Literal["img2img", "inpaint"]
    strength: float
    mask_area_share: float = Field(description="The share of the image the edit may change (1.0: img2img).")
    input_sha256: str
    mask_sha256: str | None
    consent: str | None


class GenerationJob(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "blocked", "invalid", "failed"]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    generation_id: str | None
    generation_status: str | None
    decision: DecisionSummary | None
    released: list[ReleasedImage]
    withheld: list[WithheldImage]
    error: str | None
    scheduler: Scheduler | None = None
    edit: EditSummary | None = None


class Me(BaseModel):
    key_id: str
    tenant: str
    role: str


class OpenAIImagesRequest(_Strict):
    """OpenAI's `POST /v1/images/generations` (the fields this service reads; others are refused)."""

    prompt: str = Field(min_length=1, max_length=4000)
    model: str | None = None
    n: Int = Field(default=1, ge=1, le=10)
    size: str | None = Field(default=None, pattern=r"^[0-9]{1,5}x[0-9]{1,5}$")
    response_format: Literal["url", "b64_json"] = "url"
    output_format: OutputFormat | None = None
    user: str | None = Field(default=None, max_length=256)


class OpenAIImagesEditRequest(OpenAIImagesRequest):
    """OpenAI's `POST /v1/images/edits` form fields (besides the `image` and `mask` files); `strength`
    and `consent` are genguard's own, as on `/v1/generations`."""

    n: int = Field(default=1, ge=1, le=10)  # a form field: "2" is a number here
    strength: float | None = Field(default=None, gt=0.0, le=1.0)
    consent: str | None = Field(default=None, min_length=1, max_length=500)


class OpenAIImage(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class OpenAIImagesResponse(BaseModel):
    created: int
    data: list[OpenAIImage]


class PublicCredentials(BaseModel):
    state: str
    signer: str | None
    signed_at: str | None


class PublicWatermark(BaseModel):
    detected: bool
    confidence: float


class PublicVerification(BaseModel):
    """What a member of the public may learn about an image: is it ours, was it changed, when, under
    which policy version. Never the prompt, a tenant's records, or any other image."""

    verdict: str
    ours: bool
    changed: bool | None = Field(description="True: not the bytes we released (None: no record found).")
    released: bool | None
    created_at: datetime | None
    policy: PolicySummary | None
    content_credentials: PublicCredentials
    watermark: PublicWatermark | None
    layers_agreeing: list[str]
    conflict: bool


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: bool
    workers_alive: int
    workers: int
    model_loaded: bool
    queued_jobs: int | None
