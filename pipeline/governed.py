"""`GovernedPipeline`: any diffusers pipeline, with policy, output checks, provenance and audit around it.

The order of a call (DESIGN.md, "The generate flow"):
prompt policy -> sampling (seeded, per-image noise) -> output checks -> pixel watermark -> ONE audit
transaction -> only then are images returned or written. A blocked prompt is recorded and raises
`BlockedError`; a failure after sampling is recorded as failed (when the database is reachable) and
re-raised; if the database is unreachable the call fails closed and no image leaves.

The stages themselves are `pipeline.governor.Governor` (admit -> plan -> sample -> check -> release
-> commit); a `GovernedPipeline` holds one (`governor`) and drives it: one call is `Governor.run`,
`generate_many` is `pipeline.batching`, which arranges the same public stages for many requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genguard.audit.store import AuditStore
from genguard.guard.bias import AttributeReader
from genguard.guard.classifiers.base import ImageClassifier
from genguard.guard.errors import GenguardError
from genguard.guard.policy import PolicyEngine, PolicyPack
from genguard.guard.provenance import ContentCredentials
from genguard.guard.quarantine import QuarantineVault
from genguard.guard.types import CheckStatus, GenerationParams, GenerationRequest
from genguard.guard.watermark import Watermarker
from genguard.pipeline import batching, families
from genguard.pipeline.accel import Acceleration
from genguard.pipeline.batching import FailedGeneration
from genguard.pipeline.edit_input import InputStore
from genguard.pipeline.governor import (
    MAX_PROMPT_CHARS,
    RELEASE_FAILED_EVENT,
    GeneratedImage,
    GenerationResult,
    Governor,
    ProgressCallback,
    WithheldImage,
    check_out_dir,
    check_request,
    refusal,
)
from genguard.pipeline.loading import load_diffusers_pipeline
from genguard.pipeline.outcomes import RefusedRequest


class GovernedPipeline:
    """Wraps a loaded diffusers pipeline. Build it with `from_pretrained` or pass the parts yourself.

    Its stages are `governor` (a `Governor`); the attributes below read the governor's configuration.
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
        """The arguments are the `Governor`'s (see `Governor.__init__`)."""
        self.governor = Governor(
            pipe,
            model_id=model_id,
            policy=policy,
            audit=audit,
            classifiers=classifiers,
            watermarker=watermarker,
            latent_watermark=latent_watermark,
            device=device,
            watermark_key=watermark_key,
            gender_reader=gender_reader,
            observe_bias=observe_bias,
            quarantine_vault=quarantine_vault,
            sign=sign,
            content_credentials=content_credentials,
            output_format=output_format,
            sidecar=sidecar,
            checks=checks,
            policy_engine=policy_engine,
            input_store=input_store,
        )

    @classmethod
    def around(cls, governor: Governor) -> GovernedPipeline:
        """A GovernedPipeline driving an existing `governor`."""
        governed = cls.__new__(cls)
        governed.governor = governor
        return governed

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
    ) -> GovernedPipeline:
        """Load `model` (hub id, local path or `embedded:tiny-*`) through `DiffusionPipeline.from_pretrained`.

        `classifiers=None` builds the ones the pack's `image_checks` names; pass a list to override.
        `audit` is a database URL (default: `guard.config.default_db_url()`) or an open store.
        `sign`, `output_format`, `sidecar`: as in the constructor (signing keys from the configuration).
        `device`: "cpu", "cuda", "cuda:N" or "auto" (the GPU when there is one). `dtype`: "fp16", "bf16"
        or "fp32"; None picks the family's half precision on CUDA (fp16 for SD and SDXL, bf16 for SD3
        and Flux) and fp32 on the CPU. `compile`: `torch.compile` the denoiser (pays off on long runs;
        each new batch size compiles once). See `pipeline.accel`. `scheduler`: "lcm" or "turbo" swaps an
        SD or SDXL model's scheduler for a few-step one (`families.use_scheduler`); None keeps its own.
        """
        return cls.around(
            Governor.from_pretrained(
                model,
                policy=policy,
                audit=audit,
                classifiers=classifiers,
                watermarker=watermarker,
                device=device,
                dtype=dtype,
                compile=compile,
                sign=sign,
                output_format=output_format,
                sidecar=sidecar,
                policy_engine=policy_engine,
                scheduler=scheduler,
            )
        )

    def __call__(
        self,
        request: GenerationRequest | str,
        *,
        out_dir: Path | None = None,
        progress: ProgressCallback | None = None,
    ) -> GenerationResult:
        """One request through every stage (`Governor.run`): the result once its record is committed."""
        return self.governor.run(request, out_dir=out_dir, progress=progress)

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
            self.governor,
            requests,
            out_dir=out_dir,
            batch_size=batch_size,
            workers=workers,
            queue_size=queue_size,
            progress=progress,
        )

    def refusal(self, request: Any, error: GenguardError, generation_id: str | None = None) -> RefusedRequest:
        """The error for a request refused before sampling, holding its record (not yet committed)."""
        return self.governor.refusal(request, error, generation_id)

    # -- the governor's configuration, read through ---------------------------------------------

    @property
    def pipe(self) -> Any:
        return self.governor.pipe

    @property
    def model_id(self) -> str:
        return self.governor.model_id

    @property
    def policy(self) -> PolicyPack:
        return self.governor.policy

    @property
    def engine(self) -> PolicyEngine:
        return self.governor.engine

    @property
    def audit(self) -> AuditStore:
        return self.governor.audit

    @property
    def classifiers(self) -> tuple[ImageClassifier, ...]:
        return self.governor.classifiers

    @property
    def checks(self) -> tuple[CheckStatus, ...]:
        return self.governor.checks

    @property
    def watermarker(self) -> Watermarker:
        return self.governor.watermarker

    @property
    def latent_watermark(self) -> bool:
        return self.governor.latent_watermark

    @latent_watermark.setter
    def latent_watermark(self, value: bool) -> None:
        self.governor.latent_watermark = value

    @property
    def device(self) -> str:
        return self.governor.device

    @property
    def family(self) -> families.Family:
        return self.governor.family

    @property
    def bounds(self) -> families.Bounds:
        return self.governor.bounds

    @property
    def vault(self) -> QuarantineVault:
        return self.governor.vault

    @property
    def input_store(self) -> InputStore:
        return self.governor.input_store

    @property
    def content_credentials(self) -> ContentCredentials | None:
        return self.governor.content_credentials

    @property
    def output_format(self) -> str:
        return self.governor.output_format

    @property
    def sidecar(self) -> bool:
        return self.governor.sidecar

    @property
    def acceleration(self) -> Acceleration | None:
        """What `from_pretrained` did for speed (precision, attention, compile); None for a pipeline
        passed in as it is."""
        return self.governor.acceleration

    @acceleration.setter
    def acceleration(self, value: Acceleration | None) -> None:
        self.governor.acceleration = value

    @property
    def is_demonstration_model(self) -> bool:
        """True for the embedded tiny models: untrained weights, abstract images."""
        return self.governor.is_demonstration_model


__all__ = [
    "MAX_PROMPT_CHARS",
    "RELEASE_FAILED_EVENT",
    "FailedGeneration",
    "GeneratedImage",
    "GenerationParams",
    "GenerationResult",
    "GovernedPipeline",
    "Governor",
    "WithheldImage",
    "check_out_dir",
    "check_request",
    "load_diffusers_pipeline",
    "refusal",
]
