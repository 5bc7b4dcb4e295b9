"""Typed results shared by every stage. Plain frozen dataclasses: no torch, cheap to import.

`to_json()` gives the canonical JSON-ready form that the audit log stores and the CLI prints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from genguard.guard.errors import BadInputError


class _Strictness(StrEnum):
    """An action enum whose members are declared from most lenient to strictest."""

    @property
    def rank(self) -> int:
        return list(type(self)).index(self)


class PromptAction(_Strictness):
    """What the prompt policy decided, in increasing order of strictness."""

    ALLOW = "allow"
    REWRITE = "rewrite"
    REVIEW = "review"
    BLOCK = "block"


class ImageAction(_Strictness):
    """What the output checks decided for one image, in increasing order of strictness."""

    RELEASE = "release"
    QUARANTINE = "quarantine"
    BLOCK = "block"


class PromptStorage(StrEnum):
    """How the audit log keeps a prompt, as the policy pack says."""

    FULL = "full"
    HASHED = "hashed"
    REDACTED = "redacted"


@dataclass(frozen=True)
class PolicyRef:
    """Which pack decided: its name, version and the SHA-256 of its canonical form."""

    name: str
    version: str
    digest: str


@dataclass(frozen=True)
class RuleHit:
    """One rule that fired. `rule` is the rule's id in the pack, never the matched text."""

    category: str
    layer: str  # "lexical", "semantic", "model", "cooccurrence", ...
    rule: str
    score: float


@dataclass(frozen=True)
class CategoryScore:
    """The strongest evidence for one category and the action the pack ties to it."""

    category: str
    score: float
    action: PromptAction


@dataclass(frozen=True)
class PromptDecision:
    """The policy's answer for one prompt.

    `prompt` is what will be sampled (after any rewrite); `original_prompt` is what was asked.
    """

    action: PromptAction
    prompt: str
    original_prompt: str
    categories: tuple[CategoryScore, ...]
    rules: tuple[RuleHit, ...]
    policy: PolicyRef
    negative_prompt_additions: tuple[str, ...] = ()
    # Categories the output checks should treat with lowered thresholds (uncertain prompts).
    heightened_categories: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = _jsonable(asdict(self))
        return result


@dataclass(frozen=True)
class ClassifierScore:
    """One classifier's score for one category on one image, with the model that produced it."""

    classifier: str
    model_id: str
    category: str
    score: float


@dataclass(frozen=True)
class CheckStatus:
    """Whether one output check the pack names ran on the image, and why not when it did not.

    `model_id`: the versioned model id when it ran, else the model the pack names (None: none named).
    """

    classifier: str
    model_id: str | None
    ran: bool
    reason: str = ""


@dataclass(frozen=True)
class PerceivedFace:
    """One face found in an image and how it is *perceived* to look (never who the person is).

    `box` is (x, y, width, height) in pixels. `ita` is the Individual Typology Angle in degrees over
    the face's skin pixels, None when too few skin pixels were found. `perceived_skin_tone` is
    "monk-1" .. "monk-10" (approximate, see genguard.guard.bias) or "unknown". `perceived_gender_presentation`
    is a label of the configured zero-shot model, "unknown" when it was not confident, or
    "not_measured" when no model is configured (never a guess).
    """

    box: tuple[int, int, int, int]
    ita: float | None
    perceived_skin_tone: str
    perceived_gender_presentation: str = "not_measured"
    gender_score: float | None = None
    gender_model_id: str | None = None


@dataclass(frozen=True)
class ImageVerdict:
    """The output checks' answer for one image."""

    action: ImageAction
    scores: tuple[ClassifierScore, ...]
    # Categories whose score crossed the pack's threshold, with the threshold used.
    flagged: tuple[tuple[str, float], ...] = ()
    # Bias observations (faces and their perceived attributes); () when not observed.
    observations: tuple[PerceivedFace, ...] = ()
    # The output checks the pack names: which ran on this image, which did not and why.
    checks: tuple[CheckStatus, ...] = ()

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = _jsonable(asdict(self))
        return result


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters. `seed` None means the pipeline draws one and records it."""

    width: int = 512
    height: int = 512
    steps: int = 10
    guidance_scale: float = 7.0
    num_images: int = 1
    seed: int | None = None


def validate_prompt(text: str, field: str = "prompt", *, allow_empty: bool = False) -> str:
    """The one check every prompt passes (generate, `policy check`, the service): text, not blank unless
    `allow_empty` (a negative prompt), no NUL character. Returns `text`; raises BadInputError naming `field`."""
    if not isinstance(text, str):
        raise BadInputError(f"{field}: expected text, found {type(text).__name__}")
    if not allow_empty and not text.strip():
        raise BadInputError(f"{field}: expected non-empty text, found an empty {field}")
    position = text.find("\x00")
    if position >= 0:
        raise BadInputError(f"{field}: expected text without NUL characters, found one at {position}")
    return text


@dataclass(frozen=True)
class GenerationRequest:
    """One request. With `init_image` it is an edit: img2img, or inpainting when `mask` is given too.

    `init_image`, `mask`: the encoded files (bytes) or their paths; white (>= 128) mask pixels are the
    region to repaint. `strength`: how far the edit may move from the input, in (0, 1] (None: 0.75 for
    img2img, 1.0 for inpainting). `consent`: a reference to a consent attestation (what the pack's
    `edits:` section may ask for edits of images with real people), recorded as given.
    The input's bytes are never recorded: the record holds their hash (and the pack may keep them).
    """

    prompt: str
    negative_prompt: str = ""
    params: GenerationParams = field(default_factory=GenerationParams)
    actor: str = "anonymous"
    init_image: bytes | str | Path | None = field(default=None, repr=False)
    mask: bytes | str | Path | None = field(default=None, repr=False)
    strength: float | None = None
    consent: str | None = None

    @property
    def is_edit(self) -> bool:
        return self.init_image is not None or self.mask is not None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value
