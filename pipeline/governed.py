"""`GovernedPipeline`: any diffusers pipeline, with policy, output checks, provenance and audit around it.

The order of a call (DESIGN.md, "The generate flow"):
prompt policy -> sampling (seeded, per-image noise) -> output checks -> pixel watermark -> ONE audit
transaction -> only then are images returned or written. A blocked prompt is recorded and raises
`BlockedError`; a failure after sampling is recorded as failed (when the database is reachable) and
re-raised; if the database is unreachable the call fails closed and no image leaves.

One call and `generate_many` run the same stages (`_admit`, `_plan`, `_initial_noise`, `_sample`,
`_classify`, `_govern`, `_commit`); `pipeline.batching` arranges them for many requests, with the
CPU side of governance overlapped with the next batch's sampling.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from audit.records import GenerationRecord, ImageRecord
from audit.store import AuditStore
from guard import config
from guard.bias import AttributeReader, BatchBias, batch_bias, observe_images
from guard.classifiers.base import ImageClassifier
from guard.classifiers.registry import build_gender_reader, checks_of, load_pack_checks
from guard.errors import BadInputError, BlockedError, ModelLoadError
from guard.imageio import encode_image
from guard.markid import format_mark_id
from guard.output import decide_image
from guard.phash import perceptual_hash
from guard.policy import PolicyEngine, PolicyPack, load_pack
from guard.provenance import ContentCredentials, ManifestFacts
from guard.provenance.content_credentials import MIME_TYPES
from guard.quarantine import QuarantineVault
from guard.types import (
    CheckStatus,
    ClassifierScore,
    GenerationParams,
    GenerationRequest,
    ImageAction,
    ImageVerdict,
    PerceivedFace,
    PromptAction,
    PromptDecision,
)
from guard.watermark import PixelWatermarker, Watermarker
from guard.watermark.latent import ALGORITHM as LATENT_ALGORITHM
from guard.watermark.latent import new_nonce
from pipeline import batching, families
from pipeline.accel import Acceleration, load_accelerated
from pipeline.batching import FailedGeneration
from pipeline.embedded import is_embedded, resolve_model_source
from pipeline.inversion import watermarked_noise

if TYPE_CHECKING:
    import torch

ProgressCallback = Callable[[int, int], None]

# Error texts are recorded for failed generations; genguard's own messages never hold key material.
_MAX_ERROR_TEXT = 500

_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}

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
    timestamp: str = "off"  # guard.provenance.tsa.TimestampState of its signature

    @property
    def suffix(self) -> str:
        return _SUFFIXES[self.mime_type]

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


@dataclass(frozen=True)
class _Job:
    """One admitted request, planned: its seed and, per image, the mark id and latent nonce."""

    request: GenerationRequest
    decision: PromptDecision
    generation_id: str
    seed: int
    marks: tuple[tuple[int, bytes], ...]

    @property
    def negative_prompt(self) -> str:
        """The caller's negative prompt with what the policy adds to it."""
        parts = (self.request.negative_prompt, *self.decision.negative_prompt_additions)
        return ", ".join(part for part in parts if part)


@dataclass(frozen=True)
class _Prepared:
    """A governed request ready to commit: its record, its result, and the quarantined copies sealed."""

    job: _Job
    record: GenerationRecord
    result: GenerationResult
    held: dict[int, bytes]


class GovernedPipeline:
    """Wraps a loaded diffusers pipeline. Build it with `from_pretrained` or pass the parts yourself."""

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
    ) -> None:
        """`checks`: the pack's output checks, run or not (None: each of `classifiers`, run).
        `gender_reader`: reads perceived gender presentation from faces (None: not measured).
        `observe_bias`: run the bias observations (None: as the pack's `bias.enabled` says).
        `quarantine_vault`: where quarantined images are kept encrypted when the pack says
        `image_checks.quarantine.keep: encrypted` (None: under `genguard_home()`).
        `sign`: give every released image Content Credentials, with `content_credentials` (None: the
        configured keys, development keys created on first use); `sign=False` releases unsigned images.
        `output_format`: "png", "jpeg" or "webp". `sidecar`: write the manifest to a `.c2pa` file next
        to the image instead of embedding it."""
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
        self.engine = PolicyEngine(policy)
        self.audit = audit
        self.classifiers = tuple(classifiers)
        self.checks = tuple(checks) if checks is not None else checks_of(self.classifiers)
        self._key = watermark_key if watermark_key is not None else config.watermark_key()
        self.watermarker: Watermarker = watermarker if watermarker is not None else PixelWatermarker()
        self.latent_watermark = latent_watermark
        self.device = device
        self.gender_reader = gender_reader
        self.observe_bias = policy.spec.bias.enabled if observe_bias is None else observe_bias
        self.vault = quarantine_vault if quarantine_vault is not None else QuarantineVault()
        self.family = families.detect_family(pipe)
        families.disable_builtin_safety(pipe)
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
    ) -> GovernedPipeline:
        """Load `model` (hub id, local path or `embedded:tiny-*`) through `DiffusionPipeline.from_pretrained`.

        `classifiers=None` builds the ones the pack's `image_checks` names; pass a list to override.
        `audit` is a database URL (default: `guard.config.default_db_url()`) or an open store.
        `sign`, `output_format`, `sidecar`: as in the constructor (signing keys from the configuration).
        `device`: "cpu", "cuda", "cuda:N" or "auto" (the GPU when there is one). `dtype`: "fp16", "bf16"
        or "fp32"; None picks the family's half precision on CUDA (fp16 for SD and SDXL, bf16 for SD3
        and Flux) and fp32 on the CPU. `compile`: `torch.compile` the denoiser (pays off on long runs;
        each new batch size compiles once). See `pipeline.accel`.
        """
        pack = policy if isinstance(policy, PolicyPack) else load_pack(policy)
        store = audit if isinstance(audit, AuditStore) else AuditStore.open(audit)
        bias = pack.spec.bias
        gender_reader = build_gender_reader(
            bias.gender_model, {value: list(prompts) for value, prompts in bias.gender_labels.items()}
        )
        pipe, acceleration = load_accelerated(model, device=device, dtype=dtype, compile=compile)
        checks = None
        if classifiers is None:  # every check the pack names runs, or this fails closed (registry)
            built = load_pack_checks(
                pack, model=model, real_model=not is_embedded(model), pipe=pipe, record=store.append_event
            )
            classifiers, checks = built.classifiers, built.checks
        governed = cls(
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
        )
        governed.acceleration = acceleration
        return governed

    @property
    def is_demonstration_model(self) -> bool:
        """True for the embedded tiny models: untrained weights, abstract images."""
        return is_embedded(self.model_id)

    def __call__(
        self,
        request: GenerationRequest | str,
        *,
        out_dir: Path | None = None,
        progress: ProgressCallback | None = None,
    ) -> GenerationResult:
        request, decision, generation_id = self._admit(request)
        if decision.action is PromptAction.BLOCK:
            record, error = self._blocked(request, decision, generation_id)
            self.audit.record_generation(record)
            raise error
        job = self._plan(request, decision, generation_id)
        try:
            pixels = self._sample([job], self._initial_noise([job]), progress)
            prepared = self._govern(job, pixels, self._classify(pixels), out_dir)
        except Exception as exc:
            # Record the failure, then re-raise it. If the database is down, that write fails closed
            # on its own (AuditUnavailableError, chained to the original error).
            self.audit.record_generation(self._failed(job, exc))
            raise
        return self._commit(prepared, out_dir)

    def generate_many(
        self,
        requests: Sequence[GenerationRequest | str],
        *,
        out_dir: Path | None = None,
        batch_size: int = 8,
        workers: int = 4,
        queue_size: int = 2,
        progress: ProgressCallback | None = None,
    ) -> list[GenerationResult | FailedGeneration]:
        """Many requests, one result per request in request order (`pipeline.batching` says how).

        The prompt policy runs for all first (blocked requests are recorded, never sampled).
        Requests with the same size, steps and guidance are sampled together, at most `batch_size`
        images per pipeline call; each image equals the same request sampled alone (same noise,
        same seed), up to the rounding of batched kernels. While the next batch samples, `workers`
        threads do the CPU side of governance (one batch's requests spread over all of them), fed
        by a queue of at most `queue_size` batches; one committer commits the records in request
        order, and only then are files written. A request that fails gets a failed record and a
        `FailedGeneration`; the others go on. If the database cannot be written, the run stops and
        raises AuditUnavailableError (fail closed).
        `progress(images sampled, images to sample)` is called after each pipeline call.
        """
        return batching.generate_many(
            self,
            requests,
            out_dir=out_dir,
            batch_size=batch_size,
            workers=workers,
            queue_size=queue_size,
            progress=progress,
        )

    # -- stages -------------------------------------------------------------------------------

    def _validate(self, request: GenerationRequest) -> None:
        if not request.prompt or not request.prompt.strip():
            raise BadInputError("prompt: expected non-empty text, found an empty prompt")
        for field_name in ("prompt", "negative_prompt", "actor"):
            position = getattr(request, field_name).find("\x00")
            if position >= 0:
                raise BadInputError(
                    f"{field_name}: expected text without NUL characters, found one at {position}"
                )
        params = request.params
        for name in ("width", "height"):
            value = getattr(params, name)
            if value <= 0 or value % 8:
                raise BadInputError(f"params.{name}: expected a positive multiple of 8, found {value}")
        families.latent_shape(self.pipe, params.height, params.width)  # e.g. Flux needs multiples of 16
        if params.steps < 1:
            raise BadInputError(f"params.steps: expected at least 1, found {params.steps}")
        if params.num_images < 1:
            raise BadInputError(f"params.num_images: expected at least 1, found {params.num_images}")
        limit = families.max_prompt_tokens(self.pipe)
        for field_name, text in (("prompt", request.prompt), ("negative_prompt", request.negative_prompt)):
            count = families.prompt_token_count(self.pipe, text)
            if count > limit:
                raise BadInputError(
                    f"{field_name}: expected at most {limit} tokens for this model's tokenizer, found {count}"
                    " (diffusers would silently truncate it)"
                )

    def _admit(self, request: GenerationRequest | str) -> tuple[GenerationRequest, PromptDecision, str]:
        """Check the request and run the prompt policy; the generation id is drawn here."""
        if isinstance(request, str):
            request = GenerationRequest(prompt=request)
        self._validate(request)
        return request, self.engine.check(request.prompt), uuid.uuid4().hex

    def _blocked(
        self, request: GenerationRequest, decision: PromptDecision, generation_id: str
    ) -> tuple[GenerationRecord, BlockedError]:
        """The record of a blocked request and the error that reports it (raised once it is committed)."""
        fired = ", ".join(f"{hit.category}/{hit.layer}/{hit.rule}" for hit in decision.rules) or "policy"
        error = BlockedError(
            f"blocked by policy {decision.policy.name} {decision.policy.version} ({fired}); "
            f"recorded as generation {generation_id}",
            decision,
            generation_id,
        )
        return self._record(generation_id, request, decision, "blocked"), error

    def _plan(self, request: GenerationRequest, decision: PromptDecision, generation_id: str) -> _Job:
        seed = request.params.seed if request.params.seed is not None else secrets.randbits(31)
        # Mark ids are random (they say nothing by themselves) and fit a signed SQL BIGINT.
        marks = tuple((secrets.randbits(63) or 1, new_nonce()) for _ in range(request.params.num_images))
        return _Job(request, decision, generation_id, seed, marks)

    def _initial_noise(self, jobs: Sequence[_Job]) -> torch.Tensor:
        """The initial noise of every image of `jobs` (same size), in order, as the pipeline takes it."""
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

    def _sample(
        self, jobs: Sequence[_Job], noise: torch.Tensor, progress: ProgressCallback | None = None
    ) -> np.ndarray:
        """Sample every image of `jobs` in ONE pipeline call; they share size, steps and guidance."""
        import torch

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
        with torch.inference_mode():
            output = self.pipe(**kwargs)
        return families.output_as_uint8(output.images)

    def _classify(self, pixels: np.ndarray) -> list[list[ClassifierScore]]:
        """Every output classifier's scores per image, each classifier given the whole batch at once."""
        batch = [pixels[i] for i in range(pixels.shape[0])]
        per_image_scores: list[list[ClassifierScore]] = [[] for _ in batch]
        for classifier in self.classifiers:
            rows = classifier.classify(batch)
            if len(rows) != len(batch):  # a check that skipped images fails closed
                raise ModelLoadError(f"{classifier.name}: expected {len(batch)} score rows, found {len(rows)}")
            for i, classified in enumerate(rows):
                per_image_scores[i].extend(classified)
        return per_image_scores

    def _govern(
        self, job: _Job, pixels: np.ndarray, scores: Sequence[Sequence[ClassifierScore]], out_dir: Path | None
    ) -> _Prepared:
        """Everything between sampling and the commit for one request; nothing leaves here."""
        generation_id = job.generation_id
        held_pngs: dict[int, bytes] = {}
        try:
            images, withheld, held_pngs, observations = self._check_and_mark(
                pixels, scores, job.decision, job.marks, generation_id
            )
            bias = self._batch_bias(observations)
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
                extra=self._extra(bias, observations, held_pngs),
            )
            # Quarantined pixels are sealed before the commit (encrypted, they reveal nothing) and
            # removed again if anything fails, so that every kept file has its record.
            for index, png in held_pngs.items():
                self.vault.keep(generation_id, index, png)
        except Exception:
            self._discard_kept(generation_id, held_pngs)
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
        return _Prepared(job, record, result, held_pngs)

    def _failed(self, job: _Job, exc: BaseException) -> GenerationRecord:
        error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_TEXT]
        return self._record(
            job.generation_id, job.request, job.decision, "failed", seed=job.seed, error=error
        )

    def _commit(self, prepared: _Prepared, out_dir: Path | None) -> GenerationResult:
        try:
            self.audit.record_generation(prepared.record)  # the commit: only after it may an image leave
        except BaseException:
            self._discard_kept(prepared.job.generation_id, prepared.held)
            raise
        if out_dir is not None:
            _write_files(prepared.result.released, out_dir, sidecar=self.sidecar)
        return prepared.result

    def _check_and_mark(
        self,
        pixels: np.ndarray,
        per_image_scores: Sequence[Sequence[ClassifierScore]],
        decision: PromptDecision,
        marks: Sequence[tuple[int, bytes]],
        generation_id: str,
    ) -> tuple[
        list[GeneratedImage], list[WithheldImage], dict[int, bytes], list[tuple[PerceivedFace, ...]] | None
    ]:
        """Released and withheld images, the unmarked PNGs of quarantined images to keep, observations."""
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
            zip(batch, per_image_scores, marks, strict=True)
        ):
            verdict = decide_image(
                scores,
                self.policy,
                heightened=decision.heightened_categories,
                hold_for_review=hold,
                checks=self.checks,
                observations=observations[index] if observations is not None else (),
            )
            nonce_recorded = nonce if self.latent_watermark else None
            if verdict.action is ImageAction.RELEASE:
                image = self.watermarker.embed(image, mark_id, self._key)
                released.append(
                    self._release(image, index, verdict, mark_id, nonce_recorded, decision, generation_id)
                )
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

    def _release(
        self,
        image: np.ndarray,
        index: int,
        verdict: ImageVerdict,
        mark_id: int,
        nonce: bytes | None,
        decision: PromptDecision,
        generation_id: str,
    ) -> GeneratedImage:
        """Encode a watermarked image and sign it; the recorded sha256 is of the bytes that leave."""
        mime_type = MIME_TYPES[self.output_format]
        data, manifest = encode_image(image, self.output_format), None  # type: ignore[arg-type]
        timestamp = "off"
        if self.content_credentials is not None:
            facts = ManifestFacts(
                generation_id=generation_id,
                image_index=index,
                policy=decision.policy,
                verdict=verdict,
                model_id=self.model_id,
                pipeline_class=type(self.pipe).__name__,
                mark_id=mark_id,
                watermark_algorithm=self.watermarker.algorithm,
            )
            signed = self.content_credentials.sign(data, mime_type, facts, embed=not self.sidecar)
            data, manifest, timestamp = signed.data, signed.manifest, signed.timestamp
        return GeneratedImage(
            index=index,
            pixels=image,
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            phash=perceptual_hash(image),
            mark_id=mark_id,
            latent_nonce=nonce,
            verdict=verdict,
            mime_type=mime_type,
            manifest=manifest,
            timestamp=timestamp,
        )

    def _discard_kept(self, generation_id: str, held_pngs: dict[int, bytes]) -> None:
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
                "watermarks": self._watermark_algorithms(),
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

    def _watermark_algorithms(self) -> list[str]:
        algorithms = [self.watermarker.algorithm]
        if self.latent_watermark:
            algorithms.append(LATENT_ALGORITHM)
        return algorithms


def load_diffusers_pipeline(
    model: str, *, device: str = "cpu", torch_dtype: torch.dtype | None = None
) -> Any:
    """`DiffusionPipeline.from_pretrained` on a hub id, a local path or an embedded model's cache folder."""
    from diffusers import DiffusionPipeline

    source = resolve_model_source(model)
    kwargs: dict[str, Any] = {}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype  # diffusers 0.42's name (torch_dtype is deprecated)
    try:
        pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"model {model!r}: could not load a diffusers pipeline from {source!r}: {exc}"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _image_generators(jobs: Sequence[_Job]) -> list[torch.Generator]:
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


def _write_files(images: Sequence[GeneratedImage], out_dir: Path, *, sidecar: bool = False) -> None:
    """Write each released image atomically (temporary name, then rename); with `sidecar`, its
    manifest goes next to it as NAME.c2pa (written first, so an image never lacks its manifest)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for img in images:
        assert img.path is not None
        files = [(img.path.with_suffix(".c2pa"), img.manifest)] if sidecar and img.manifest else []
        for path, data in [*files, (img.path, img.data)]:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)


__all__ = [
    "FailedGeneration",
    "GeneratedImage",
    "GenerationParams",
    "GenerationResult",
    "GovernedPipeline",
    "WithheldImage",
]
