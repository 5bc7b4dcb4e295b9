"""`GovernedPipeline`: any diffusers pipeline, with policy, output checks, provenance and audit around it.

The order of a call (DESIGN.md, "The generate flow"):
prompt policy -> sampling (seeded, per-image noise) -> output checks -> pixel watermark -> ONE audit
transaction -> only then are images returned or written. A blocked prompt is recorded and raises
`BlockedError`; a failure after sampling is recorded as failed (when the database is reachable) and
re-raised; if the database is unreachable the call fails closed and no image leaves.
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
from guard.classifiers.registry import build_from_spec, build_gender_reader
from guard.errors import BadInputError, BlockedError, ModelLoadError
from guard.imageio import encode_image
from guard.output import decide_image
from guard.phash import perceptual_hash
from guard.policy import PolicyEngine, PolicyPack, load_pack
from guard.quarantine import QuarantineVault
from guard.types import (
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
from pipeline import families
from pipeline.embedded import is_embedded, resolve_model_source
from pipeline.inversion import watermarked_noise

if TYPE_CHECKING:
    import torch

ProgressCallback = Callable[[int, int], None]

# Error texts are recorded for failed generations; genguard's own messages never hold key material.
_MAX_ERROR_TEXT = 500

_STATUS_BY_ACTION = {
    ImageAction.RELEASE: "released",
    ImageAction.QUARANTINE: "quarantined",
    ImageAction.BLOCK: "blocked",
}


@dataclass(frozen=True)
class GeneratedImage:
    """A released image: its pixels (RGB uint8, watermarked), identifiers and verdict."""

    index: int
    pixels: np.ndarray
    png: bytes
    sha256: str
    phash: int
    mark_id: int
    latent_nonce: bytes | None
    verdict: ImageVerdict
    path: Path | None = None

    def to_pil(self) -> Image.Image:
        return Image.fromarray(self.pixels)


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
    ) -> None:
        """`gender_reader`: reads perceived gender presentation from faces (None: not measured).
        `observe_bias`: run the bias observations (None: as the pack's `bias.enabled` says).
        `quarantine_vault`: where quarantined images are kept encrypted when the pack says
        `image_checks.quarantine.keep: encrypted` (None: under `genguard_home()`)."""
        self.pipe = pipe
        self.model_id = model_id
        self.policy = policy
        self.engine = PolicyEngine(policy)
        self.audit = audit
        self.classifiers = tuple(classifiers)
        self._key = watermark_key if watermark_key is not None else config.watermark_key()
        self.watermarker: Watermarker = watermarker if watermarker is not None else PixelWatermarker()
        self.latent_watermark = latent_watermark
        self.device = device
        self.gender_reader = gender_reader
        self.observe_bias = policy.spec.bias.enabled if observe_bias is None else observe_bias
        self.vault = quarantine_vault if quarantine_vault is not None else QuarantineVault()
        self.family = families.detect_family(pipe)
        families.disable_builtin_safety(pipe)

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
        torch_dtype: torch.dtype | None = None,
    ) -> GovernedPipeline:
        """Load `model` (hub id, local path or `embedded:tiny-*`) through `DiffusionPipeline.from_pretrained`.

        `classifiers=None` builds the ones the pack's `image_checks` names; pass a list to override.
        `audit` is a database URL (default: `guard.config.default_db_url()`) or an open store.
        """
        pack = policy if isinstance(policy, PolicyPack) else load_pack(policy)
        store = audit if isinstance(audit, AuditStore) else AuditStore.open(audit)
        if classifiers is None:
            # `model: null` in the pack means "not configured": that classifier does not run.
            classifiers = [
                build_from_spec(spec) for spec in pack.spec.image_checks.classifiers if spec.model is not None
            ]
        bias = pack.spec.bias
        gender_reader = build_gender_reader(
            bias.gender_model, {value: list(prompts) for value, prompts in bias.gender_labels.items()}
        )
        pipe = load_diffusers_pipeline(model, device=device, torch_dtype=torch_dtype)
        return cls(
            pipe,
            model_id=model,
            policy=pack,
            audit=store,
            classifiers=classifiers,
            watermarker=watermarker,
            device=device,
            gender_reader=gender_reader,
        )

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
        if isinstance(request, str):
            request = GenerationRequest(prompt=request)
        self._validate(request)
        decision = self.engine.check(request.prompt)
        generation_id = uuid.uuid4().hex
        if decision.action is PromptAction.BLOCK:
            self.audit.record_generation(self._record(generation_id, request, decision, "blocked"))
            fired = ", ".join(f"{hit.category}/{hit.layer}/{hit.rule}" for hit in decision.rules) or "policy"
            raise BlockedError(
                f"blocked by policy {decision.policy.name} {decision.policy.version} ({fired}); "
                f"recorded as generation {generation_id}",
                decision,
                generation_id,
            )
        seed = request.params.seed if request.params.seed is not None else secrets.randbits(31)
        # Mark ids are random (they say nothing by themselves) and fit a signed SQL BIGINT.
        marks = [(secrets.randbits(63) or 1, new_nonce()) for _ in range(request.params.num_images)]
        held_pngs: dict[int, bytes] = {}
        try:
            pixels = self._sample(request, decision, seed, marks, progress)
            images, withheld, held_pngs, observations = self._check_and_mark(pixels, decision, marks)
            bias = self._batch_bias(observations)
            if out_dir is not None:
                images = [replace(img, path=out_dir / f"{generation_id}-{img.index}.png") for img in images]
            record = self._record(
                generation_id,
                request,
                decision,
                "completed",
                seed=seed,
                images=images,
                withheld=withheld,
                extra=self._extra(bias, observations, held_pngs),
            )
            # Quarantined pixels are sealed before the commit (encrypted, they reveal nothing) and
            # removed again if anything fails, so that every kept file has its record.
            for index, png in held_pngs.items():
                self.vault.keep(generation_id, index, png)
        except Exception as exc:
            self._discard_kept(generation_id, held_pngs)
            # Record the failure, then re-raise it. If the database is down, that write fails closed
            # on its own (AuditUnavailableError, chained to the original error).
            error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_TEXT]
            failed = self._record(generation_id, request, decision, "failed", seed=seed, error=error)
            self.audit.record_generation(failed)
            raise
        try:
            self.audit.record_generation(record)  # the commit: only after it may an image leave
        except BaseException:
            self._discard_kept(generation_id, held_pngs)
            raise
        if out_dir is not None:
            _write_files(images, out_dir)
        return GenerationResult(
            generation_id=generation_id,
            decision=decision,
            model_id=self.model_id,
            seed=seed,
            released=tuple(images),
            withheld=tuple(withheld),
            bias=bias,
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

    def _sample(
        self,
        request: GenerationRequest,
        decision: PromptDecision,
        seed: int,
        marks: Sequence[tuple[int, bytes]],
        progress: ProgressCallback | None,
    ) -> np.ndarray:
        import torch

        params = request.params
        if self.latent_watermark:
            # Gaussian-Shading noise: the mark id under a fresh nonce picks each value's half of N(0, 1).
            # The image is then determined by (key, mark id, nonce), all in the audit record.
            noise = watermarked_noise(
                self.pipe,
                [m for m, _ in marks],
                [n for _, n in marks],
                params.height,
                params.width,
                self._key,
            )
        else:
            # One generator per image, seeded seed + i, so that image i is reproducible on its own.
            noise = torch.cat(
                [
                    families.initial_noise(
                        self.pipe,
                        1,
                        params.height,
                        params.width,
                        torch.Generator("cpu").manual_seed(seed + i),
                    )
                    for i in range(params.num_images)
                ]
            )
        negative = ", ".join(
            part for part in (request.negative_prompt, *decision.negative_prompt_additions) if part
        )
        kwargs = families.call_kwargs(
            self.family,
            prompt=decision.prompt,
            negative_prompt=negative,
            height=params.height,
            width=params.width,
            steps=params.steps,
            guidance_scale=params.guidance_scale,
            latents=noise.to(self.device, self.pipe.dtype),
            num_images=params.num_images,
        )
        # Any randomness left to the scheduler (none for DDIM / Euler) follows the seed too.
        kwargs["generator"] = torch.Generator("cpu").manual_seed(seed)
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

    def _check_and_mark(
        self, pixels: np.ndarray, decision: PromptDecision, marks: Sequence[tuple[int, bytes]]
    ) -> tuple[
        list[GeneratedImage], list[WithheldImage], dict[int, bytes], list[tuple[PerceivedFace, ...]] | None
    ]:
        """Released and withheld images, the unmarked PNGs of quarantined images to keep, observations."""
        batch = [pixels[i] for i in range(pixels.shape[0])]
        per_image_scores: list[list[ClassifierScore]] = [[] for _ in batch]
        for classifier in self.classifiers:
            for i, classified in enumerate(classifier.classify(batch)):
                per_image_scores[i].extend(classified)
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
                observations=observations[index] if observations is not None else (),
            )
            if verdict.action is ImageAction.RELEASE:
                image = self.watermarker.embed(image, mark_id, self._key)
            png = encode_image(image, "png")
            sha256, phash = hashlib.sha256(png).hexdigest(), perceptual_hash(image)
            nonce_recorded = nonce if self.latent_watermark else None
            if verdict.action is ImageAction.RELEASE:
                released.append(
                    GeneratedImage(index, image, png, sha256, phash, mark_id, nonce_recorded, verdict)
                )
                continue
            reason = (
                "prompt held for review"
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
            extra={"watermarks": self._watermark_algorithms(), **(extra or {})},
        )

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
        kwargs["torch_dtype"] = torch_dtype
    try:
        pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"model {model!r}: could not load a diffusers pipeline from {source!r}: {exc}"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _face_json(face: PerceivedFace) -> dict[str, Any]:
    return {
        "box": list(face.box),
        "ita": face.ita,
        "perceived_skin_tone": face.perceived_skin_tone,
        "perceived_gender_presentation": face.perceived_gender_presentation,
        "gender_score": face.gender_score,
        "gender_model_id": face.gender_model_id,
    }


def _write_files(images: Sequence[GeneratedImage], out_dir: Path) -> None:
    """Write each released image atomically (temporary name, then rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for img in images:
        assert img.path is not None
        tmp = img.path.with_name(f".{img.path.name}.tmp")
        tmp.write_bytes(img.png)
        os.replace(tmp, img.path)


__all__ = ["GeneratedImage", "GenerationParams", "GenerationResult", "GovernedPipeline", "WithheldImage"]
