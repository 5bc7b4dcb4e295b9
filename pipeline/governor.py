"""The Governor: the stages every governed generation goes through, as one public object.

    admit -> plan -> sample -> check -> release -> commit

Each stage is a public method of `Governor` taking and returning frozen values:

    request --admit--> Admitted --plan--> Job --sample--> Sampled --check--> Checked (per job)
            --release--> Prepared --commit--> GenerationResult

The single call (`GovernedPipeline.__call__`, which is `Governor.run`), `GovernedPipeline.generate_many`
(`pipeline.batching`, which arranges the same stages over threads), review approval (which releases
through the same `genguard.audit.release` path) and the service's workers all drive these stages.

The promise the stages keep together (DESIGN.md, "The generate flow"): nothing leaves before its
record is committed. Only `commit` writes files, and only after the audit transaction succeeded;
every request that reaches `admit` ends in exactly one record (`invalid` or `failed` refusals,
`blocked`, `failed` after sampling, or the generation with its images); when the database cannot
be written, the stage fails closed and no image leaves.

Edits (a request with `init_image`: img2img, or inpainting with a `mask`) go through the same stages:
`admit` checks the input and joins the pack's `edits:` decision to the prompt's, `sample` runs the
img2img / inpainting pipeline built from the model's components, `release` signs the output as an
edit with the input as its ingredient and stores the input as the pack says (`pipeline.edit_input`).
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import secrets
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from genguard.audit.records import RELEASE_FAILED_EVENT, GenerationRecord, ImageRecord
from genguard.audit.release import SUFFIXES, ReleaseFile, release_image, write_released
from genguard.audit.store import AuditStore
from genguard.guard import config
from genguard.guard.bias import AttributeReader, BatchBias, batch_bias, observe_images
from genguard.guard.classifiers.base import ImageClassifier
from genguard.guard.classifiers.registry import build_gender_reader, checks_of, load_pack_checks
from genguard.guard.errors import BadInputError, BlockedError, GenguardError, ModelLoadError
from genguard.guard.imageio import encode_image
from genguard.guard.input_image import merge_decision
from genguard.guard.markid import format_mark_id
from genguard.guard.output import decide_image
from genguard.guard.phash import perceptual_hash
from genguard.guard.policy import PolicyEngine, PolicyPack, load_pack
from genguard.guard.provenance import ContentCredentials, ManifestFacts
from genguard.guard.provenance.content_credentials import MIME_TYPES
from genguard.guard.quarantine import QuarantineVault
from genguard.guard.types import (
    CheckStatus,
    ClassifierScore,
    GenerationParams,
    GenerationRequest,
    ImageAction,
    ImageVerdict,
    PerceivedFace,
    PromptAction,
    PromptDecision,
    validate_prompt,
)
from genguard.guard.watermark import PixelWatermarker, Watermarker
from genguard.guard.watermark.latent import ALGORITHM as LATENT_ALGORITHM
from genguard.guard.watermark.latent import new_nonce
from genguard.pipeline import families
from genguard.pipeline.accel import Acceleration, load_accelerated
from genguard.pipeline.edit_input import (
    CheckedEdit,
    InputStore,
    check_edit_steps,
    edit_call_kwargs,
    edit_pipeline,
    inspect_edit,
    refused_edit_json,
)
from genguard.pipeline.embedded import is_embedded
from genguard.pipeline.inversion import watermarked_noise
from genguard.pipeline.outcomes import (
    InvalidRequestError,
    NotStartedError,
    RefusedRequest,
    ReleaseFailedError,
)

if TYPE_CHECKING:
    import torch

ProgressCallback = Callable[[int, int], None]

_MAX_ERROR_TEXT = 500
# The longest prompt (or negative prompt) accepted, in characters, before any tokenizer sees it: far
# above what any family's tokenizer limit lets through (CLIP 77 tokens, T5 512), so only abuse meets
# it. An invalid request's record stores at most this many characters of each text.
MAX_PROMPT_CHARS = 20_000
_MAX_SEED = 1 << 63


_STATUS_BY_ACTION = {
    ImageAction.RELEASE: "released",
    ImageAction.QUARANTINE: "quarantined",
    ImageAction.BLOCK: "blocked",
}


@dataclass(frozen=True)
class GeneratedImage:
    """A released image: its pixels (RGB uint8, watermarked), the file that leaves, identifiers, verdict.

    `data`: the encoded file (`mime_type`), with its Content Credentials embedded unless they go to a
    sidecar; `sha256` is of `data`. `manifest`: the C2PA manifest store (None when not signed).
    """

    index: int
    pixels: np.ndarray
    data: bytes
    sha256: str
    phash: int
    mark_id: int
    latent_nonce: bytes | None
    verdict: ImageVerdict
    path: Path | None = None
    mime_type: str = "image/png"
    manifest: bytes | None = None
    timestamp: str = "off"  # genguard.guard.provenance.tsa.TimestampState of its signature

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.mime_type]

    def to_pil(self) -> Image.Image:
        return Image.fromarray(self.pixels)

    def __repr__(self) -> str:  # what a person reads: no pixel arrays, no file bytes
        manifest = "None" if self.manifest is None else f"<{len(self.manifest)} bytes>"
        return (
            f"GeneratedImage(index={self.index}, pixels=<{'x'.join(map(str, self.pixels.shape))} "
            f"{self.pixels.dtype}>, data=<{len(self.data)} bytes {self.mime_type}>, sha256={self.sha256!r}, "
            f"mark_id={format_mark_id(self.mark_id)}, verdict={self.verdict.action.value}, "
            f"path={str(self.path) if self.path else None!r}, manifest={manifest})"
        )


@dataclass(frozen=True)
class WithheldImage:
    """An image the output checks or the prompt review held back. Its pixels do not leave."""

    index: int
    status: str  # "quarantined" or "blocked"
    verdict: ImageVerdict
    reason: str
    sha256: str  # of the unmarked PNG, as evidence
    phash: int
    mark_id: int  # carried by the latent noise only
    latent_nonce: bytes | None


@dataclass(frozen=True)
class GenerationResult:
    generation_id: str
    decision: PromptDecision
    model_id: str
    seed: int
    released: tuple[GeneratedImage, ...]
    withheld: tuple[WithheldImage, ...]
    # Perceived attributes over the batch and the pack's uniform-batch rule (None: bias not observed).
    bias: BatchBias | None = None

    @property
    def status(self) -> str:
        """`completed`, or `withheld` when images were sampled and every one was withheld."""
        return "withheld" if self.withheld and not self.released else "completed"


@dataclass(frozen=True)
class Admitted:
    """A request `admit` accepted: valid, with the prompt policy's decision and its generation id.

    When `blocked`, the request goes no further: `Governor.blocked` gives its record and error.
    """

    request: GenerationRequest
    decision: PromptDecision
    generation_id: str
    edit: CheckedEdit | None = None  # an edit's checked input (its decision is joined to `decision`)

    @property
    def blocked(self) -> bool:
        return self.decision.action is PromptAction.BLOCK


@dataclass(frozen=True)
class Job:
    """An admitted request, planned: its seed and, per image, the mark id and latent nonce."""

    request: GenerationRequest
    decision: PromptDecision
    generation_id: str
    seed: int
    marks: tuple[tuple[int, bytes], ...]
    edit: CheckedEdit | None = None

    @property
    def negative_prompt(self) -> str:
        """The caller's negative prompt with what the policy adds to it."""
        parts = (self.request.negative_prompt, *self.decision.negative_prompt_additions)
        return ", ".join(part for part in parts if part)

    @property
    def num_images(self) -> int:
        return self.request.params.num_images


@dataclass(frozen=True)
class Sampled:
    """The images of one pipeline call: `pixels` (N, H, W, 3) uint8, the images of `jobs` in order."""

    jobs: tuple[Job, ...]
    pixels: np.ndarray


@dataclass(frozen=True)
class Checked:
    """One job's sampled images with every output classifier's scores per image."""

    job: Job
    pixels: np.ndarray
    scores: tuple[tuple[ClassifierScore, ...], ...]


@dataclass(frozen=True)
class Prepared:
    """A governed request ready to commit: its record, its result (nothing written yet), and the
    quarantined copies sealed in the vault (`held`: image index -> unmarked PNG), which `discard`
    removes again if the commit does not happen."""

    job: Job
    record: GenerationRecord
    result: GenerationResult
    held: Mapping[int, bytes]
    input_file: str | None = None  # an edit's input, stored as the pack says (removed with `discard`)


class Governor:
    """The stages of a governed generation, configured once (model, policy, checks, provenance, store).

    Stages, in order; each says what it may do, and none lets anything leave before `commit`:

    - `admit(request)`: validate and run the prompt policy -> `Admitted` (or raise a refusal holding
      its uncommitted record).
    - `plan(admitted)`: draw the seed and each image's mark id and latent nonce -> `Job`.
    - `sample(jobs)`: one pipeline call for jobs that share size, steps and guidance -> `Sampled`.
    - `check(sampled)`: the output classifiers over the whole call -> one `Checked` per job.
    - `release(checked)`: decide each image, mark, encode, sign and hash the released ones, seal the
      quarantined ones -> `Prepared` (the record to commit and the result; no file written).
    - `commit(prepared)`: ONE audit transaction, then (only then) the files -> `GenerationResult`.

    `run(request)` drives them for one request; `pipeline.batching` drives them for many.
    The stage methods are thread-safe for distinct jobs (the batching workers call `check` and
    `release` concurrently); `sample` uses the model and is called from one thread at a time.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        model_id: str,
        policy: PolicyPack,
        audit: AuditStore,
        classifiers: Sequence[ImageClassifier] = (),
        watermarker: Watermarker | None = None,
        latent_watermark: bool = True,
        device: str = "cpu",
        watermark_key: bytes | None = None,
        gender_reader: AttributeReader | None = None,
        observe_bias: bool | None = None,
        quarantine_vault: QuarantineVault | None = None,
        sign: bool = True,
        content_credentials: ContentCredentials | None = None,
        output_format: str = "png",
        sidecar: bool = False,
        checks: Sequence[CheckStatus] | None = None,
        policy_engine: PolicyEngine | None = None,
        input_store: InputStore | None = None,
    ) -> None:
        """`input_store`: where edit inputs are kept when the pack's `edits.input_storage` says so (None:
        under `genguard_home()`).
        `checks`: the pack's output checks, run or not (None: each of `classifiers`, run).
        `gender_reader`: reads perceived gender presentation from faces (None: not measured).
        `observe_bias`: run the bias observations (None: as the pack's `bias.enabled` says).
        `quarantine_vault`: where quarantined images are kept encrypted when the pack says
        `image_checks.quarantine.keep: encrypted` (None: under `genguard_home()`).
        `sign`: give every released image Content Credentials, with `content_credentials` (None: the
        configured keys, development keys created on first use); `sign=False` releases unsigned images.
        `output_format`: "png", "jpeg" or "webp". `sidecar`: write the manifest to a `.c2pa` file next
        to the image instead of embedding it. `policy_engine`: an engine already built for `policy`
        (None: built here)."""
        if output_format not in MIME_TYPES:
            raise BadInputError(
                f"output_format: expected one of {sorted(MIME_TYPES)}, found {output_format!r}"
            )
        if sidecar and not sign:
            raise BadInputError(
                "sidecar: expected signing to be on (a sidecar holds the manifest), found sign=False"
            )
        self.output_format = output_format
        self.sidecar = sidecar
        self.content_credentials = (
            (content_credentials if content_credentials is not None else ContentCredentials.from_config())
            if sign
            else None
        )
        self.pipe = pipe
        self.model_id = model_id
        self.policy = policy
        self.engine = policy_engine if policy_engine is not None else PolicyEngine(policy)
        self.audit = audit
        self.classifiers = tuple(classifiers)
        self.checks = tuple(checks) if checks is not None else checks_of(self.classifiers)
        self._key = watermark_key if watermark_key is not None else config.watermark_key()
        self.watermarker: Watermarker = watermarker if watermarker is not None else PixelWatermarker()
        self.family = families.detect_family(pipe)
        # A family whose noise cannot carry the latent mark (IF) releases with the pixel mark alone;
        # its records say so (`latent_mark`).
        self.latent_watermark = latent_watermark and families.latent_mark_unavailable(self.family) is None
        self.device = device
        self.gender_reader = gender_reader
        self.observe_bias = policy.spec.bias.enabled if observe_bias is None else observe_bias
        self.vault = quarantine_vault if quarantine_vault is not None else QuarantineVault()
        self.input_store = input_store if input_store is not None else InputStore()
        self._edit_pipes: dict[str, Any] = {}  # "img2img" / "inpaint" -> pipeline over `pipe`'s parts
        # Reads our watermark from edit inputs while the model samples (see `inspect_edit`).
        self._mark_reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genguard-edit-mark")
        families.disable_builtin_safety(pipe)
        # Upper bounds on one request's work (sizes, steps, images), from the family and the pack's limits.
        self.bounds = families.bounds_for(
            self.family, embedded=is_embedded(model_id), limits=policy.spec.limits
        )
        # What `from_pretrained` did for speed (precision, attention, compile); None for a pipeline
        # passed in as it is.
        self.acceleration: Acceleration | None = None

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        policy: str | Path | PolicyPack = "default",
        audit: str | AuditStore | None = None,
        classifiers: Sequence[ImageClassifier] | None = None,
        watermarker: Watermarker | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        compile: bool = False,
        sign: bool = True,
        output_format: str = "png",
        sidecar: bool = False,
        policy_engine: PolicyEngine | None = None,
        scheduler: str | None = None,
    ) -> Governor:
        """Load `model` and build its Governor: see `GovernedPipeline.from_pretrained`."""
        pack = policy if isinstance(policy, PolicyPack) else load_pack(policy)
        store = audit if isinstance(audit, AuditStore) else AuditStore.open(audit)
        bias = pack.spec.bias
        gender_reader = build_gender_reader(
            bias.gender_model, {value: list(prompts) for value, prompts in bias.gender_labels.items()}
        )
        pipe, acceleration = load_accelerated(model, device=device, dtype=dtype, compile=compile)
        families.use_scheduler(pipe, scheduler)
        checks = None
        if classifiers is None:  # every check the pack names runs, or this fails closed (registry)
            built = load_pack_checks(
                pack, model=model, real_model=not is_embedded(model), pipe=pipe, record=store.append_event
            )
            classifiers, checks = built.classifiers, built.checks
        governor = cls(
            pipe,
            model_id=model,
            policy=pack,
            audit=store,
            classifiers=classifiers,
            watermarker=watermarker,
            device=acceleration.device,
            gender_reader=gender_reader,
            sign=sign,
            output_format=output_format,
            sidecar=sidecar,
            checks=checks,
            policy_engine=policy_engine,
        )
        governor.acceleration = acceleration
        return governor

    def sharing(
        self,
        *,
        policy: str | Path | PolicyPack,
        audit: AuditStore,
        content_credentials: ContentCredentials | None = None,
        watermark_key: bytes | None = None,
        output_format: str | None = None,
    ) -> Governor:
        """Another Governor around this one's loaded model (no second load): its own policy pack, audit
        store, signing identity (`content_credentials`, None: the configured one) and watermark key
        (None: the configured one), and the checks its pack names, built as `from_pretrained` builds
        them. `output_format` None: this one's. Both must sample from one thread at a time, as one."""
        pack = policy if isinstance(policy, PolicyPack) else load_pack(policy)
        bias = pack.spec.bias
        gender_reader = build_gender_reader(
            bias.gender_model, {value: list(prompts) for value, prompts in bias.gender_labels.items()}
        )
        built = load_pack_checks(
            pack,
            model=self.model_id,
            real_model=not is_embedded(self.model_id),
            pipe=self.pipe,
            record=audit.append_event,
        )
        governor = Governor(
            self.pipe,
            model_id=self.model_id,
            policy=pack,
            audit=audit,
            classifiers=built.classifiers,
            checks=built.checks,
            watermarker=self.watermarker,
            latent_watermark=self.latent_watermark,
            device=self.device,
            watermark_key=watermark_key,
            gender_reader=gender_reader,
            sign=self.content_credentials is not None,
            content_credentials=content_credentials,
            output_format=output_format if output_format is not None else self.output_format,
            sidecar=self.sidecar,
        )
        governor.acceleration = self.acceleration
        return governor

    @property
    def is_demonstration_model(self) -> bool:
        """True for the embedded tiny models: untrained weights, abstract images."""
        return is_embedded(self.model_id)

    # -- one request, start to end --------------------------------------------------------------

    def run(
        self,
        request: GenerationRequest | str,
        *,
        out_dir: Path | None = None,
        progress: ProgressCallback | None = None,
    ) -> GenerationResult:
        """One request through every stage; what `GovernedPipeline.__call__` does.

        A refused request is committed and its InvalidRequestError / NotStartedError raised; a
        blocked one is committed and its BlockedError raised; a failure after planning is recorded
        as failed (fail closed when the database is down) and re-raised.
        """
        try:
            admitted = self.admit(request, self.out_dir_problem(out_dir))
        except (InvalidRequestError, NotStartedError) as refused:
            self.commit_refusal(refused)
            raise
        if admitted.blocked:
            record, error = self.blocked(admitted)
            self.audit.record_generation(record)
            raise error
        job = self.plan(admitted)
        try:
            (checked,) = self.check(self.sample([job], progress=progress))
            prepared = self.release(checked, out_dir)
        except Exception as exc:
            # Record the failure, then re-raise it. If the database is down, that write fails closed
            # on its own (AuditUnavailableError, chained to the original error).
            self.audit.record_generation(self.failed(job, exc))
            raise
        return self.commit(prepared, out_dir)

    # -- admit ------------------------------------------------------------------------------------

    def validate(self, request: GenerationRequest) -> None:
        """Everything `check_request` checks, with this family's bounds, then what needs the model:
        the family's size multiple and the tokenizer's limit (BadInputError naming the field)."""
        check_request(request, self.bounds)
        params = request.params
        families.latent_shape(self.pipe, params.height, params.width)  # e.g. Flux needs multiples of 16
        limit = families.max_prompt_tokens(self.pipe)
        for field_name, text in (("prompt", request.prompt), ("negative_prompt", request.negative_prompt)):
            count = families.prompt_token_count(self.pipe, text)
            if count > limit:
                raise BadInputError(
                    f"{field_name}: expected at most {limit} tokens for this model's tokenizer, found {count}"
                    " (diffusers would silently truncate it)"
                )

    def admit(self, request: GenerationRequest | str, out_problem: GenguardError | None = None) -> Admitted:
        """Stage 1: check the request and run the prompt policy; the generation id is drawn here.

        May: read the request, run the policy. May not: write anything. A request refused here (bad
        input, or `out_problem`: what `out_dir_problem` found) raises InvalidRequestError /
        NotStartedError holding its record, not yet committed (`commit_refusal` commits it).
        A blocked prompt is admitted with `blocked` set: `blocked()` gives its record and error.
        """
        generation_id = uuid.uuid4().hex
        if isinstance(request, str):
            request = GenerationRequest(prompt=request)
        try:
            if not isinstance(request, GenerationRequest):
                raise BadInputError(
                    f"request: expected a GenerationRequest or a prompt string, found {type(request).__name__}"
                )
            self.validate(request)
            if out_problem is not None:
                raise out_problem
            edit = self.inspect_edit(request) if request.is_edit else None
        except GenguardError as exc:
            refused = self.refusal(request, exc, generation_id)
            if isinstance(request, GenerationRequest) and request.is_edit and refused.record is not None:
                refused.record.extra["edit"] = refused_edit_json(request)
            raise refused from exc
        decision = self.engine.check(request.prompt)
        if edit is not None:
            decision = merge_decision(decision, edit.decision)
        return Admitted(request, decision, generation_id, edit)

    def inspect_edit(self, request: GenerationRequest) -> CheckedEdit:
        """An edit's input checked before sampling: bounded decode, mask size, faces, its Content
        Credentials, our watermark and the generation it links to, and the pack's decision on it."""
        edit = inspect_edit(
            request,
            pack=self.policy,
            store=self.audit,
            watermarker=self.watermarker,
            key=self._key,
            executor=self._mark_reader,
        )
        check_edit_steps(request.params.steps, edit.input.strength)
        return edit

    def refusal(self, request: Any, error: GenguardError, generation_id: str | None = None) -> RefusedRequest:
        """The error for a request refused before sampling, holding its record (not yet committed):
        `invalid` for bad input, `failed` for infrastructure (e.g. a full disk)."""
        return refusal(
            request,
            error,
            policy=self.policy,
            engine=self.engine,
            model_id=self.model_id,
            pipeline_class=type(self.pipe).__name__,
            generation_id=generation_id,
        )

    def commit_refusal(self, refused: RefusedRequest) -> None:
        """Commit a refused request's record (the caller then raises `refused`)."""
        if refused.record is not None:
            self.audit.record_generation(refused.record)

    @staticmethod
    def out_dir_problem(out_dir: Path | None) -> GenguardError | None:
        """What `check_out_dir` finds wrong with `out_dir` (None: nothing, or no folder), for `admit`."""
        if out_dir is None:
            return None
        try:
            check_out_dir(out_dir)
        except GenguardError as exc:
            return exc
        return None

    def blocked(self, admitted: Admitted) -> tuple[GenerationRecord, BlockedError]:
        """The record of a blocked request and the error that reports it (raise it once it is committed)."""
        decision, generation_id = admitted.decision, admitted.generation_id
        fired = ", ".join(f"{hit.category}/{hit.layer}/{hit.rule}" for hit in decision.rules) or "policy"
        error = BlockedError(
            f"blocked by policy {decision.policy.name} {decision.policy.version} ({fired}); "
            f"recorded as generation {generation_id}",
            decision,
            generation_id,
        )
        edit = admitted.edit.resolved(self.audit) if admitted.edit is not None else None
        extra = self._edit_extra(edit)
        return self._record(generation_id, admitted.request, decision, "blocked", extra=extra), error

    # -- plan -------------------------------------------------------------------------------------

    def plan(self, admitted: Admitted) -> Job:
        """Stage 2: the seed (the request's, or drawn) and per image a random mark id and latent nonce.

        May not: sample, write or record. Mark ids are random (they say nothing by themselves) and fit
        a signed SQL BIGINT.
        """
        request = admitted.request
        seed = request.params.seed if request.params.seed is not None else secrets.randbits(31)
        marks = tuple((secrets.randbits(63) or 1, new_nonce()) for _ in range(request.params.num_images))
        return Job(request, admitted.decision, admitted.generation_id, seed, marks, admitted.edit)

    # -- sample -----------------------------------------------------------------------------------

    def initial_noise(self, jobs: Sequence[Job]) -> torch.Tensor:
        """The initial noise of every image of `jobs` (same size), in order, as the pipeline takes it.

        With the latent watermark, each image's noise carries its mark id (keyed); without it, each
        image's noise comes from its own generator seeded seed + index. Pure computation (the
        batching runs it on a helper thread while the previous batch samples).
        """
        import torch

        params = jobs[0].request.params
        if self.latent_watermark:
            # Gaussian-Shading noise: the mark id under a fresh nonce picks each value's half of N(0, 1).
            # The image is then determined by (key, mark id, nonce), all in the audit record.
            marks = [mark for job in jobs for mark in job.marks]
            return watermarked_noise(
                self.pipe,
                [m for m, _ in marks],
                [n for _, n in marks],
                params.height,
                params.width,
                self._key,
            )
        # One generator per image, seeded seed + i, so that image i is reproducible on its own.
        return torch.cat(
            [
                families.initial_noise(self.pipe, 1, params.height, params.width, generator)
                for generator in _image_generators(jobs)
            ]
        )

    def sample(
        self,
        jobs: Sequence[Job],
        noise: torch.Tensor | None = None,
        progress: ProgressCallback | None = None,
    ) -> Sampled:
        """Stage 3: sample every image of `jobs` in ONE pipeline call; they share size, steps and
        guidance (`batching.batch_key`). `noise`: from `initial_noise(jobs)` (None: made here).

        May: use the model. May not: decide, mark, write or record; its pixels are unmarked and
        must pass `check` and `release` before anything leaves.
        """
        import torch

        if any(job.edit is not None for job in jobs):
            return self._sample_each(jobs, noise, progress)
        if noise is None:
            noise = self.initial_noise(jobs)
        params = jobs[0].request.params
        negatives = [job.negative_prompt for job in jobs]
        prompt: str | list[str]
        negative: str | list[str]
        if len(jobs) == 1:  # the prompt once, repeated by the pipeline, as a single call always did
            prompt, negative = jobs[0].decision.prompt, negatives[0]
        else:
            counts = [job.request.params.num_images for job in jobs]
            prompt = [job.decision.prompt for job, n in zip(jobs, counts) for _ in range(n)]
            negative = [text for text, n in zip(negatives, counts) for _ in range(n)]
        kwargs = families.call_kwargs(
            self.family,
            prompt=prompt,
            negative_prompt=negative,
            height=params.height,
            width=params.width,
            steps=params.steps,
            guidance_scale=params.guidance_scale,
            latents=noise.to(self.device, self.pipe.dtype),
            num_images=int(noise.shape[0]),
        )
        # Any randomness left to the scheduler (none for DDIM / Euler) follows each image's seed too.
        kwargs["generator"] = _image_generators(jobs)
        if progress is not None:
            total = params.steps

            def on_step_end(
                pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]
            ) -> dict[str, Any]:
                progress(step + 1, total)
                return callback_kwargs

            kwargs["callback_on_step_end"] = on_step_end
        # The embedded models are so small that splitting their kernels over threads costs more than it
        # saves (tiny-sd at 256 px, 10 steps: 0.5 s on one thread, 23 s on two on a busy 2-core machine).
        threads = 1 if self.is_demonstration_model and self.device == "cpu" else None
        with torch.inference_mode(), _torch_threads(threads):
            images = families.sample(self.family, self.pipe, kwargs)  # both stages of a two-stage family
        return Sampled(tuple(jobs), families.output_as_uint8(images))

    def _sample_each(
        self, jobs: Sequence[Job], noise: torch.Tensor | None, progress: ProgressCallback | None
    ) -> Sampled:
        """A call holding edits: each job sampled on its own (an edit's input is its own), in order."""
        parts, start = [], 0
        for job in jobs:
            end = start + job.num_images
            if job.edit is None:
                parts.append(self.sample([job], None if noise is None else noise[start:end], progress).pixels)
            else:
                parts.append(self._sample_edit(job, progress))
            start = end
        return Sampled(tuple(jobs), np.concatenate(parts))

    def _edit_pipe(self, mode: str) -> Any:
        if mode not in self._edit_pipes:
            self._edit_pipes[mode] = edit_pipeline(self.pipe, mode)
        return self._edit_pipes[mode]

    def _sample_edit(self, job: Job, progress: ProgressCallback | None) -> np.ndarray:
        """One edit (img2img or inpainting) through the pipeline built from the model's components.

        No planted noise: sampling starts from the input's latents (see `pipeline.edit_input`)."""
        import torch

        assert job.edit is not None
        edit, params = job.edit.input, job.request.params
        derived = self._edit_pipe(edit.mode)
        kwargs = edit_call_kwargs(
            derived,
            self.family,
            edit,
            prompt=job.decision.prompt,
            negative_prompt=job.negative_prompt,
            width=params.width,
            height=params.height,
            steps=params.steps,
            guidance_scale=params.guidance_scale,
            num_images=params.num_images,
        )
        kwargs["generator"] = _image_generators([job])
        if progress is not None:
            total = max(1, int(params.steps * edit.strength))

            def on_step_end(
                pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]
            ) -> dict[str, Any]:
                progress(min(step + 1, total), total)
                return callback_kwargs

            kwargs["callback_on_step_end"] = on_step_end
        threads = 1 if self.is_demonstration_model and self.device == "cpu" else None
        with torch.inference_mode(), _torch_threads(threads):
            output = derived(**kwargs)
        return families.output_as_uint8(output.images)

    # -- check ------------------------------------------------------------------------------------

    def check(self, sampled: Sampled) -> list[Checked]:
        """Stage 4: every output classifier's scores per image, each classifier given the whole call's
        images at once (on the model's device) -> one `Checked` per job, in order.

        May: run the classifiers. May not: decide, mark, write or record. A classifier that returns
        fewer or more rows than images fails the stage (ModelLoadError): a check never skips images.
        """
        pixels = sampled.pixels
        batch = [pixels[i] for i in range(pixels.shape[0])]
        per_image: list[list[ClassifierScore]] = [[] for _ in batch]
        for classifier in self.classifiers:
            rows = classifier.classify(batch)
            if len(rows) != len(batch):  # a check that skipped images fails closed
                raise ModelLoadError(
                    f"{classifier.name}: expected {len(batch)} score rows, found {len(rows)}"
                )
            for i, classified in enumerate(rows):
                per_image[i].extend(classified)
        checked, start = [], 0
        for job in sampled.jobs:
            end = start + job.num_images
            scores = tuple(tuple(row) for row in per_image[start:end])
            checked.append(Checked(job, pixels[start:end], scores))
            start = end
        return checked

    # -- release ----------------------------------------------------------------------------------

    def release(self, checked: Checked, out_dir: Path | None = None) -> Prepared:
        """Stage 5: everything between the checks and the commit for one request; nothing leaves here.

        Per image: the output decision (scores, bias observations, the prompt's review hold), then
        for a released image the one release path (`genguard.audit.release.release_image`: mark,
        encode in `output_format`, sign, hash), for a quarantined one its unmarked PNG sealed in the
        vault (encrypted, so that it has its record when committed; removed again if this fails).
        Returns the record to commit and the result; `out_dir` only names the files `commit` writes.
        """
        job = checked.job
        if job.edit is not None and job.edit.pending is not None:  # the input's mark, read meanwhile
            job = replace(job, edit=job.edit.resolved(self.audit))
            checked = replace(checked, job=job)
        generation_id = job.generation_id
        held_pngs: dict[int, bytes] = {}
        input_file: str | None = None
        try:
            images, withheld, held_pngs, observations = self._decide_and_mark(checked)
            bias = self._batch_bias(observations)
            if job.edit is not None:  # the input, as the pack says (removed again if this fails)
                input_file = self.input_store.keep(
                    self.policy.edits.input_storage, generation_id, job.edit.input
                )
            if out_dir is not None:
                images = [
                    replace(img, path=out_dir / f"{generation_id}-{img.index}{img.suffix}") for img in images
                ]
            record = self._record(
                generation_id,
                job.request,
                job.decision,
                "completed",
                seed=job.seed,
                images=images,
                withheld=withheld,
                extra={
                    **self._extra(bias, observations, held_pngs),
                    **self._edit_extra(job.edit, input_file),
                },
            )
            # Quarantined pixels are sealed before the commit (encrypted, they reveal nothing) and
            # removed again if anything fails, so that every kept file has its record.
            for index, png in held_pngs.items():
                self.vault.keep(generation_id, index, png)
        except Exception:
            self._discard_held(generation_id, held_pngs)
            self.input_store.discard(input_file)
            raise
        result = GenerationResult(
            generation_id=generation_id,
            decision=job.decision,
            model_id=self.model_id,
            seed=job.seed,
            released=tuple(images),
            withheld=tuple(withheld),
            bias=bias,
        )
        return Prepared(job, record, result, held_pngs, input_file)

    def failed(self, job: Job, exc: BaseException) -> GenerationRecord:
        """The `failed` record of a planned job whose sampling, checks or release raised `exc` (to commit)."""
        error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_TEXT]
        return self._record(
            job.generation_id,
            job.request,
            job.decision,
            "failed",
            seed=job.seed,
            error=error,
            extra=self._edit_extra(job.edit.resolved(self.audit) if job.edit is not None else None),
        )

    def discard(self, prepared: Prepared) -> None:
        """Remove the sealed quarantined copies of a prepared request that will not be committed."""
        self._discard_held(prepared.job.generation_id, prepared.held)
        self.input_store.discard(prepared.input_file)

    # -- commit -----------------------------------------------------------------------------------

    def commit(self, prepared: Prepared, out_dir: Path | None = None) -> GenerationResult:
        """Stage 6: the record in ONE audit transaction; only after it, the released files.

        If the commit fails (e.g. AuditUnavailableError) the sealed copies are discarded and nothing
        is written. Files go to `out_dir` by temporary name then rename; a file that cannot be
        written after the commit gets a chained `release.failed` event and ReleaseFailedError.
        """
        try:
            self.audit.record_generation(prepared.record)  # the commit: only after it may an image leave
        except BaseException:
            self.discard(prepared)
            raise
        if out_dir is not None:
            files = [
                ReleaseFile(img.index, img.path, img.data, img.manifest)
                for img in prepared.result.released
                if img.path is not None
            ]
            failures = write_released(files, sidecar=self.sidecar, folder=out_dir)
            if failures:
                self._release_failed(prepared.result, failures)
        return prepared.result

    # -- internals --------------------------------------------------------------------------------

    def _release_failed(self, result: GenerationResult, failures: dict[int, OSError]) -> None:
        """After the commit some files could not be written: one chained `release.failed` event per
        image not written (the record's `released` is thereby withdrawn), then ReleaseFailedError."""
        generation_id = result.generation_id
        paths = {img.index: img.path for img in result.released}
        for index, exc in sorted(failures.items()):
            self.audit.append_event(
                RELEASE_FAILED_EVENT,
                {"image_index": index, "path": str(paths[index]), "error": _os_error_text(exc)},
                generation_id,
            )
        first = failures[min(failures)]
        indices = ", ".join(str(i) for i in sorted(failures))
        raise ReleaseFailedError(
            f"output: could not write image(s) {indices} of generation {generation_id} to "
            f"{paths[min(failures)]!s}: {_os_error_text(first)}; recorded as not released "
            f"({RELEASE_FAILED_EVENT})",
            generation_id,
            sorted(failures),
            result,
        ) from first

    def _decide_and_mark(
        self, checked: Checked
    ) -> tuple[
        list[GeneratedImage], list[WithheldImage], dict[int, bytes], list[tuple[PerceivedFace, ...]] | None
    ]:
        """Released and withheld images, the unmarked PNGs of quarantined images to keep, observations."""
        job, pixels, decision = checked.job, checked.pixels, checked.job.decision
        batch = [pixels[i] for i in range(pixels.shape[0])]
        observations = (
            observe_images(batch, self.gender_reader, profiles=self.policy.spec.bias.profile_faces)
            if self.observe_bias
            else None
        )
        keep_encrypted = self.policy.spec.image_checks.quarantine.keep == "encrypted"
        held_pngs: dict[int, bytes] = {}
        hold = decision.action is PromptAction.REVIEW
        released: list[GeneratedImage] = []
        withheld: list[WithheldImage] = []
        for index, (image, scores, (mark_id, nonce)) in enumerate(
            zip(batch, checked.scores, job.marks, strict=True)
        ):
            verdict = decide_image(
                scores,
                self.policy,
                heightened=decision.heightened_categories,
                hold_for_review=hold,
                checks=self.checks,
                observations=observations[index] if observations is not None else (),
            )
            nonce_recorded = nonce if self.latent_watermark and job.edit is None else None
            if verdict.action is ImageAction.RELEASE:
                released.append(self._release_image(image, index, verdict, mark_id, nonce_recorded, job))
                continue
            png = encode_image(image, "png")
            sha256, phash = hashlib.sha256(png).hexdigest(), perceptual_hash(image)
            held_by = ", ".join(  # the prompt categories whose review held the image, with their scores
                f"{c.category} {c.score:.2f}" for c in decision.categories if c.action is PromptAction.REVIEW
            )
            reason = (
                f"prompt held for review ({held_by or 'policy'})"
                if hold and not verdict.flagged
                else "flagged: "
                + ", ".join(f"{category}>={threshold:g}" for category, threshold in verdict.flagged)
            )
            status = _STATUS_BY_ACTION[verdict.action]
            if verdict.action is ImageAction.QUARANTINE and keep_encrypted:
                held_pngs[index] = png
            withheld.append(
                WithheldImage(index, status, verdict, reason, sha256, phash, mark_id, nonce_recorded)
            )
        return released, withheld, held_pngs, observations

    def _release_image(
        self,
        image: np.ndarray,
        index: int,
        verdict: ImageVerdict,
        mark_id: int,
        nonce: bytes | None,
        job: Job,
    ) -> GeneratedImage:
        """One released image through the one release path; the recorded sha256 is of the bytes that leave."""
        facts = ManifestFacts(
            generation_id=job.generation_id,
            image_index=index,
            policy=job.decision.policy,
            verdict=verdict,
            model_id=self.model_id,
            pipeline_class=type(self.pipe).__name__,
            mark_id=mark_id,
            watermark_algorithm=self.watermarker.algorithm,
            edit=job.edit.facts() if job.edit is not None else None,
        )
        released = release_image(
            image,
            facts,
            watermarker=self.watermarker,
            key=self._key,
            output_format=self.output_format,
            credentials=self.content_credentials,
            embed_manifest=not self.sidecar,
        )
        return GeneratedImage(
            index=index,
            pixels=released.pixels,
            data=released.data,
            sha256=released.sha256,
            phash=released.phash,
            mark_id=mark_id,
            latent_nonce=nonce,
            verdict=verdict,
            mime_type=released.mime_type,
            manifest=released.manifest,
            timestamp=released.timestamp,
        )

    def _discard_held(self, generation_id: str, held_pngs: Mapping[int, bytes]) -> None:
        for index in held_pngs:
            self.vault.discard(generation_id, index)

    def _batch_bias(self, observations: Sequence[tuple[PerceivedFace, ...]] | None) -> BatchBias | None:
        if observations is None:
            return None
        values = self.gender_reader.values if self.gender_reader is not None else ()
        return batch_bias(observations, self.policy.spec.bias, values)

    def _extra(
        self,
        bias: BatchBias | None,
        observations: Sequence[tuple[PerceivedFace, ...]] | None,
        held_pngs: dict[int, bytes],
    ) -> dict[str, Any]:
        """What the record's `extra` holds besides the watermark algorithms: bias and quarantine."""
        extra: dict[str, Any] = {
            "quarantine": {"keep": self.policy.spec.image_checks.quarantine.keep, "kept": sorted(held_pngs)}
        }
        if bias is not None and observations is not None:
            extra["bias"] = {
                **bias.to_json(),
                "observations": {
                    str(index): [_face_json(face) for face in faces]
                    for index, faces in enumerate(observations)
                },
            }
        return extra

    def _record(
        self,
        generation_id: str,
        request: GenerationRequest,
        decision: PromptDecision,
        status: str,
        *,
        seed: int | None = None,
        images: Sequence[GeneratedImage] = (),
        withheld: Sequence[WithheldImage] = (),
        error: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> GenerationRecord:
        height, width = request.params.height, request.params.width
        image_records = [
            ImageRecord(
                index=img.index,
                sha256=img.sha256,
                phash=img.phash,
                width=width,
                height=height,
                verdict=img.verdict,
                status=status,
                path=str(path) if path else None,
                mark_id=img.mark_id,
                latent_nonce=img.latent_nonce,
                manifest=img.manifest if isinstance(img, GeneratedImage) else None,
            )
            for img, status, path in [(i, "released", i.path) for i in images]
            + [(w, w.status, None) for w in withheld]
        ]
        return GenerationRecord(
            generation_id=generation_id,
            request=request,
            decision=decision,
            prompt_storage=self.policy.prompt_storage,
            status=status,
            model_id=self.model_id,
            pipeline_class=type(self.pipe).__name__,
            seed=seed,
            images=tuple(sorted(image_records, key=lambda r: r.index)),
            error=error,
            extra={
                "watermarks": self._watermark_algorithms(edit=request.is_edit),
                # An edit starts from the input's latents, not the marked noise: pixel mark only.
                "latent_mark": families.latent_mark_facts(
                    self.pipe, self.latent_watermark and not request.is_edit
                ),
                "sampler": families.sampler_facts(
                    self.pipe, request.params.steps, request.params.guidance_scale
                ),
                "content_credentials": {
                    "format": self.output_format,
                    "manifest": self._manifest_mode(),
                    # per released image: "timestamped", "skipped" (optional TSA unreachable) or "off"
                    "timestamps": {str(i.index): i.timestamp for i in images},
                },
                **(extra or {}),
            },
        )

    def _manifest_mode(self) -> str:
        if self.content_credentials is None:
            return "none"
        return "sidecar" if self.sidecar else "embedded"

    def _edit_extra(self, edit: CheckedEdit | None, input_file: str | None = None) -> dict[str, Any]:
        """`{"edit": ...}` for an edit's record (hashes and decisions, never its pixels); {} otherwise."""
        if edit is None:
            return {}
        return {"edit": edit.to_json(self.policy.edits.input_storage, input_file)}

    def _watermark_algorithms(self, *, edit: bool = False) -> list[str]:
        """The marks the images carry: an edit's output has the pixel mark only (`pipeline.edit_input`)."""
        algorithms = [self.watermarker.algorithm]
        if self.latent_watermark and not edit:
            algorithms.append(LATENT_ALGORITHM)
        return algorithms


def check_request(request: GenerationRequest, bounds: families.Bounds, *, check_size: bool = True) -> None:
    """Validation that needs no model: the texts, and the parameters against `bounds` (BadInputError
    naming the field, what was expected and what was found). `check_size=False` leaves width and
    height to a later check (the CLI does not know a real model's default size before loading it)."""
    for field_name in ("prompt", "negative_prompt", "actor"):
        value = getattr(request, field_name)
        if isinstance(value, str) and len(value) > MAX_PROMPT_CHARS:
            raise BadInputError(
                f"{field_name}: expected at most {MAX_PROMPT_CHARS} characters, found {len(value)}"
            )
        # the one prompt validator (text, no NUL; the prompt not blank), as `policy check` uses it
        validate_prompt(value, field_name, allow_empty=field_name != "prompt")
    params = request.params
    if not isinstance(params, GenerationParams):
        raise BadInputError(f"params: expected GenerationParams, found {type(params).__name__}")
    names = ("width", "height", "steps", "num_images") if check_size else ("steps", "num_images")
    for name in names:
        value = getattr(params, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInputError(f"params.{name}: expected an integer, found {value!r}")
    if check_size:
        for name in ("width", "height"):
            value = getattr(params, name)
            if value <= 0 or value % 8 or value > bounds.max_side:
                raise BadInputError(
                    f"params.{name}: expected a positive multiple of 8 up to {bounds.max_side}, found {value}"
                )
        if params.width * params.height > bounds.max_pixels:
            raise BadInputError(
                f"params: expected width x height at most {bounds.max_pixels} pixels, found "
                f"{params.width}x{params.height} = {params.width * params.height}"
            )
    if not 1 <= params.steps <= bounds.max_steps:
        raise BadInputError(f"params.steps: expected 1 to {bounds.max_steps}, found {params.steps}")
    if not 1 <= params.num_images <= bounds.max_images:
        raise BadInputError(
            f"params.num_images: expected 1 to {bounds.max_images}, found {params.num_images}"
        )
    if check_size and params.width * params.height * params.num_images > bounds.max_request_pixels:
        total = params.width * params.height * params.num_images
        raise BadInputError(
            f"params: expected width x height x num_images at most {bounds.max_request_pixels} pixels, "
            f"found {params.width}x{params.height}x{params.num_images} = {total}"
        )
    guidance = params.guidance_scale
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance):
        raise BadInputError(f"params.guidance_scale: expected a finite number, found {guidance!r}")
    seed = params.seed
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _MAX_SEED
    ):
        raise BadInputError(f"params.seed: expected None or an integer 0 to 2**63-1, found {seed!r}")


def check_out_dir(out_dir: Path) -> None:
    """Before sampling: the output folder is a folder this process can write files in, or can be
    created (nothing is created here: a probe file is written and removed in the folder, or in its
    nearest existing parent).

    BadInputError for a folder that cannot be used (a file, /proc, no permission, a read-only mount);
    InfrastructureError for a full or failing disk.
    """
    from genguard.guard.errors import InfrastructureError

    folder = out_dir
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    if not folder.is_dir():
        where = str(out_dir) if folder == out_dir else f"{folder} (in the way of {out_dir})"
        raise BadInputError(f"out_dir: expected a folder, found a file at {where}")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".genguard-probe-", suffix=".tmp") as probe:
            probe.write(b"\0")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        text = _os_error_text(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise InfrastructureError(
                f"out_dir: expected a disk with room, found {text} at {out_dir}"
            ) from None
        raise BadInputError(
            f"out_dir: expected a folder this process can write, found {text} at {out_dir}"
        ) from None


def refusal(
    request: Any,
    error: GenguardError,
    *,
    policy: PolicyPack,
    engine: PolicyEngine,
    model_id: str,
    pipeline_class: str = "",
    generation_id: str | None = None,
) -> RefusedRequest:
    """The error for a request refused before sampling, with its record (to commit):
    status `invalid` (bad input: InvalidRequestError) or `failed` (NotStartedError).

    The record holds the request as the pack stores prompts (texts cut to MAX_PROMPT_CHARS, NUL shown
    as U+FFFD, parameters that are not numbers recorded as None) and the prompt policy's decision on
    it, so that a probe of the policy with a refused request leaves the same trace as any other.
    """
    generation_id = generation_id or uuid.uuid4().hex
    recorded = _recordable(request)
    try:
        decision = engine.check(recorded.prompt)
    except Exception as exc:  # noqa: BLE001 - the refusal is recorded even when the policy cannot judge it
        decision = PromptDecision(
            action=PromptAction.BLOCK,
            prompt=recorded.prompt,
            original_prompt=recorded.prompt,
            categories=(),
            rules=(),
            policy=policy.ref,
        )
        error_text = f"{error}; the prompt policy could not run: {type(exc).__name__}: {exc}"
    else:
        error_text = str(error)
    status = "invalid" if isinstance(error, BadInputError) else "failed"
    record = GenerationRecord(
        generation_id=generation_id,
        request=recorded,
        decision=decision,
        prompt_storage=policy.prompt_storage,
        status=status,
        model_id=model_id,
        pipeline_class=pipeline_class,
        error=f"{type(error).__name__}: {error_text}"[:_MAX_ERROR_TEXT],
    )
    message = f"{error}; recorded as {status} generation {generation_id}"
    if status == "invalid":
        return InvalidRequestError(message, generation_id, record)
    return NotStartedError(message, generation_id, record)


def _recordable(request: Any) -> GenerationRequest:
    """The request as a record can hold it, whatever the caller passed."""
    if isinstance(request, str):
        request = GenerationRequest(prompt=request)
    if not isinstance(request, GenerationRequest):
        return GenerationRequest(prompt="", params=GenerationParams())

    def text(value: Any) -> str:
        if not isinstance(value, str):
            return ""
        return value[:MAX_PROMPT_CHARS].replace("\x00", "\ufffd")

    params = request.params if isinstance(request.params, GenerationParams) else GenerationParams()
    values: dict[str, Any] = {}
    for name, value in vars(params).items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        fits = number and (
            math.isfinite(value) if isinstance(value, float) else -_MAX_SEED <= value < _MAX_SEED
        )
        values[name] = value if fits else None
    return GenerationRequest(
        prompt=text(request.prompt),
        negative_prompt=text(request.negative_prompt),
        params=GenerationParams(**values),
        actor=text(request.actor) or "anonymous",
    )


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `count` for the block (None: left as they are)."""
    import torch

    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _image_generators(jobs: Sequence[Job]) -> list[torch.Generator]:
    """One CPU generator per image, seeded (request seed + image index): image i of a request is the
    same whichever batch it is sampled in."""
    import torch

    return [
        torch.Generator("cpu").manual_seed(job.seed + i)
        for job in jobs
        for i in range(job.request.params.num_images)
    ]


def _face_json(face: PerceivedFace) -> dict[str, Any]:
    return {
        "box": list(face.box),
        "ita": face.ita,
        "perceived_skin_tone": face.perceived_skin_tone,
        "perceived_gender_presentation": face.perceived_gender_presentation,
        "gender_score": face.gender_score,
        "gender_model_id": face.gender_model_id,
    }


def _os_error_text(exc: OSError) -> str:
    return exc.strerror if exc.strerror else (str(exc) or type(exc).__name__)


__all__ = [
    "MAX_PROMPT_CHARS",
    "RELEASE_FAILED_EVENT",
    "Admitted",
    "Checked",
    "GeneratedImage",
    "GenerationResult",
    "Governor",
    "Job",
    "Prepared",
    "ProgressCallback",
    "Sampled",
    "WithheldImage",
    "check_out_dir",
    "check_request",
    "refusal",
]
