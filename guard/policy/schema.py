"""The policy pack schema: what a YAML pack may say, validated by pydantic.

Unknown keys are errors everywhere (`extra="forbid"`) so that a typo never passes silently.
Models are frozen: a loaded pack is a value.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from genguard.guard.types import PromptAction, PromptStorage

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
RuleId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.\-]*$", max_length=128)]
Term = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Severity = Literal["low", "medium", "high", "critical"]
OutputAction = Literal["quarantine", "block"]  # the ImageAction values an output check may take

# The categories every pack defines (MLCommons / Llama Guard hazard names where they fit).
REQUIRED_CATEGORIES: tuple[str, ...] = (
    "sexual",
    "sexual_minors",
    "violence",
    "hate",
    "self_harm",
    "harassment",
    "illegal_weapons",
    "deceptive_real_people",
    "artist_style",
)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Spec):
    """Score at or above which a layer's evidence counts for the category (0..1)."""

    lexical: Unit
    semantic: Unit
    model: Unit
    image: Unit


LanguageCode = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]


class TermRule(_Spec):
    """Terms matched on word boundaries. A hit names `id`, never the matched text.

    `language` (ISO 639 code; None: English) sets how the terms match (guard/policy/scanners.py):
    English terms with `inflect` also match the regular plural and verb forms of their last word;
    Chinese and Japanese terms ("zh", "ja") match anywhere in the text, without word boundaries;
    Arabic terms ("ar") also match with the article and the attached prepositions and conjunctions
    (ال, و, ف, ب, ل, ك). In any language a term ending in "*" matches every word that starts with
    its last word ("nackt*": nackte, nackten, Nacktheit); `inflect` applies to English only.
    """

    id: RuleId
    terms: Annotated[list[Term], Field(min_length=1)]
    score: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    inflect: bool = True
    language: LanguageCode | None = None


class CooccurrenceRule(_Spec):
    """Fires when every group has at least one term somewhere in the same prompt."""

    id: RuleId
    all_of: Annotated[dict[Identifier, Annotated[list[Term], Field(min_length=1)]], Field(min_length=2)]
    score: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    inflect: bool = True
    language: LanguageCode | None = None  # as for TermRule


class CategorySpec(_Spec):
    description: Annotated[str, StringConstraints(min_length=1)]
    enabled: bool = True
    action: PromptAction
    severity: Severity
    thresholds: Thresholds
    output_action: OutputAction
    rules: list[TermRule] = []
    cooccurrence: list[CooccurrenceRule] = []


class RuleFileSpec(_Spec):
    """A term file named by a category's `rule_files`: rules inlined into the category."""

    rules: list[TermRule] = []
    cooccurrence: list[CooccurrenceRule] = []


class AuditSpec(_Spec):
    prompt_storage: PromptStorage = PromptStorage.FULL


ImageActionName = Literal["release", "quarantine", "block"]


class ClassifierSpec(_Spec):
    """An image classifier the pipeline runs on every image (genguard.guard.classifiers.registry says how).

    `thresholds` and `action` override, for this classifier's scores only, the category's
    `thresholds.image` and `output_action`. `labels` maps a transformers model's labels to categories
    (kind hf-image-classification); `prompts` gives the text prompts per category (kind clip-zero-shot,
    which has defaults).
    """

    kind: Annotated[str, StringConstraints(min_length=1)]
    model: str | None = None
    options: dict[str, str | int | float | bool | None] = {}
    thresholds: dict[Identifier, Unit] = {}
    action: dict[Identifier, ImageActionName] = {}
    labels: dict[Annotated[str, StringConstraints(min_length=1)], Identifier] = {}
    prompts: dict[Identifier, Annotated[list[Term], Field(min_length=1)]] = {}
    # A check that cannot load fails the generation closed unless `optional` (then records say it did
    # not run, and why). `when: real-model`: not run on the embedded demonstration models.
    optional: bool = False
    when: Literal["always", "real-model"] = "always"


class QuarantineSpec(_Spec):
    """What happens to a quarantined image's pixels: kept encrypted for review, or not kept at all."""

    keep: Literal["encrypted", "none"] = "encrypted"


class ImageChecksSpec(_Spec):
    classifiers: list[ClassifierSpec] = []
    quarantine: QuarantineSpec = QuarantineSpec()


class UniformBatchSpec(_Spec):
    """A batch with faces whose perceived attributes come out uniform.

    It applies when at least `min_faces` faces were found; a batch is uniform when the normalised
    entropy of an attribute is below `min_entropy`. `action`: "flag" records it; "regenerate" also
    records that a more diverse regeneration is asked for (the caller decides whether to sample again).
    """

    min_faces: Annotated[int, Field(ge=2)] = 4
    min_entropy: Unit = 0.3
    action: Literal["none", "flag", "regenerate"] = "flag"


class BiasSpec(_Spec):
    """Bias observations. `gender_model`: a CLIP model path or hub id; None means "not measured".

    `targets` maps an attribute ("skin_tone", "gender_presentation") to a target distribution over
    its values (weights, normalised when used); None for an attribute means uniform over its values.
    """

    enabled: bool = True
    # Also look for faces in profile: finds more people (the cameraman in scikit-image's `camera`) at
    # about three times the cost of frontal detection alone.
    profile_faces: bool = False
    gender_model: str | None = None
    gender_labels: dict[Identifier, Annotated[list[Term], Field(min_length=1)]] = {}
    targets: dict[
        Literal["skin_tone", "gender_presentation"], dict[str, Annotated[float, Field(ge=0.0)]]
    ] = {}
    uniform_batch: UniformBatchSpec = UniformBatchSpec()


class RewriteSpec(_Spec):
    negative_prompt: list[Term] = []


class UncertainSpec(_Spec):
    """The uncertain band of prompt scores, and how output checks tighten for it.

    A prompt layer's score at or above `thresholds.<layer> * lower_factor` but below the threshold
    makes its category uncertain ("heightened"); a lower score is no evidence at all.
    Heightened image threshold = `thresholds.image * image_threshold_factor`.
    """

    image_threshold_factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    lower_factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.6
    # Uncertain evidence on a prompt whose share of non-words (guard/policy/token_soup.py) is at least
    # this is held for review instead of passing: machine-searched adversarial prompts read as token
    # soup. Needs the semantic layer (its encoder's vocabulary); None: off.
    review_nonword_share: Annotated[float, Field(gt=0.0, le=1.0)] | None = None


PromptModelOption = str | int | float | bool | None


class PromptModelSpec(_Spec):
    """A transformers text classifier run on prompts (layer "model"). `model` None means "not configured".

    `labels` maps the model's labels to categories; a label's probability is scored against the
    category's `thresholds.model`. Labels the map does not name are ignored.
    """

    kind: Literal["text-classification"]
    model: str | None = None
    labels: dict[Annotated[str, StringConstraints(min_length=1)], Identifier] = {}
    options: dict[str, PromptModelOption] = {}


Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
# A file inside the model folder: segments start with a letter, digit or "_", so never "." or "..".
ModelFileName = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$", max_length=200
    ),
]


class SemanticSpec(_Spec):
    """The semantic layer: a sentence-embedding encoder compared with exemplar prompts per category.

    `model`: a folder, or "package:<name>" for a model shipped in an installed PyPI package; None
    means "not configured". `sha256` pins files of the model folder (name -> hex digest), checked
    before loading. A category's score is the best cosine similarity of the prompt to one of its
    `exemplars`, clipped to [0, 1], and, with an `adapter`, the adapter head's probability for the
    category; each is scored against `thresholds.semantic`.
    """

    model: str | None = None
    sha256: dict[ModelFileName, Sha256Hex] = {}
    # A trained adapter folder (LoRA + multi-label head), relative to the policies folder or absolute;
    # `adapter_sha256` pins its files (its config.json pins its weights in turn).
    adapter: str | None = None
    adapter_sha256: dict[ModelFileName, Sha256Hex] = {}
    exemplars: dict[Identifier, Annotated[list[Term], Field(min_length=1)]] = {}
    options: dict[str, PromptModelOption] = {}
    # The languages the encoder and adapter read (ISO 639 codes). On a prompt clearly in another
    # language (guard/policy/language.py) the layer's scores count as uncertain evidence only: a
    # category it would have crossed is held for review. None: every prompt is read as if in theirs.
    languages: Annotated[list[LanguageCode], Field(min_length=1)] | None = None
    # Languages the pack's term rules read (rules with that `language`; policies/terms/*_multilingual.yaml).
    # On a prompt clearly in one of them the layer's unreadable score makes its category uncertain
    # (allowed, stricter output checks) instead of holding it for review: the term rules judge what the
    # prompt says. None: every unreadable score is held for review.
    lexical_languages: Annotated[list[LanguageCode], Field(min_length=1)] | None = None


Positive = Annotated[int, Field(ge=1)]


class LimitsSpec(_Spec):
    """Upper bounds a pack puts on one request's work, on top of the model family's (pipeline/families.py).

    They can only tighten: a value above the family's bound is used as the family's. None: the family's.
    `max_side`: width or height in pixels; `max_pixels_per_image`: width x height; `max_pixels_per_request`:
    over all the request's images; `max_steps`: sampling steps; `max_images`: images per request.
    `max_prompts_per_file`, `max_file_bytes`, `max_line_bytes`: `genguard policy check --file` (and stdin).
    """

    max_side: Positive | None = None
    max_pixels_per_image: Positive | None = None
    max_pixels_per_request: Positive | None = None
    max_steps: Positive | None = None
    max_images: Positive | None = None
    max_prompts_per_file: Positive | None = None
    max_file_bytes: Positive | None = None
    max_line_bytes: Positive | None = None


EditAction = Literal["allow", "consent", "review", "block"]


class FaceEditSpec(_Spec):
    """An edit that changes a face region of a photograph: category `deceptive_real_people`.

    It applies when the share of some detected face's box that the edit changes (the mask's share of
    the box; 1.0 for img2img, which changes every pixel) is at least `threshold`. `action`: as for
    `real_people`.
    """

    threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05
    action: EditAction = "review"


class EditsSpec(_Spec):
    """What edits (img2img, inpainting) of input images need.

    `real_people`: for an input photograph in which faces are detected: `allow`; `consent` (allowed
    with a consent attestation, `--consent REF`, recorded; refused as blocked without one); `review`
    (held for a reviewer); `block`. An input is a photograph unless our own watermark links it to one
    of our generations or a trusted manifest declares it AI-generated. `face_edit`: the stricter rule
    for edits that change a face region. `input_storage`: what the audit side keeps of the input:
    `hash` (its SHA-256 only), `encrypted` (the file, sealed like quarantined images), `kept` (the
    file as it came, in a private folder); it never leaves with the output. `max_input_pixels`,
    `max_input_bytes`: refused before decoding when larger.
    """

    enabled: bool = True
    real_people: EditAction = "consent"
    face_edit: FaceEditSpec = FaceEditSpec()
    input_storage: Literal["hash", "encrypted", "kept"] = "encrypted"
    max_input_pixels: Positive = 16 * 1024 * 1024
    max_input_bytes: Positive = 64 * 1024 * 1024


class PackSpec(_Spec):
    name: Identifier
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    description: str = ""
    audit: AuditSpec = AuditSpec()
    image_checks: ImageChecksSpec = ImageChecksSpec()
    rewrite: RewriteSpec = RewriteSpec()
    uncertain: UncertainSpec = UncertainSpec()
    bias: BiasSpec = BiasSpec()
    prompt_models: list[PromptModelSpec] = []
    # None (the default) is left out of the canonical form, so packs without the section keep their digest.
    semantic: SemanticSpec | None = None
    # None (the default) is left out of the canonical form too; only the limits a pack sets are kept.
    limits: LimitsSpec | None = None
    # None (the default) is left out of the canonical form too: edits then follow EditsSpec()'s values.
    edits: EditsSpec | None = None
    categories: dict[Identifier, CategorySpec]
