"""The job queue's in-process workers: each claims queued jobs from the database and runs them.

Each worker thread loads the model on its first job (so a service that only verifies never loads torch)
and keeps it; a job asking for another output format (png, jpeg, webp) or another sampler (`scheduler`:
lcm, turbo) loads one more, once. Each tenant gets its own `Governor` around that loaded model
(`Governor.sharing`): its policy pack, its audit store, its signing identity and watermark key
(genguard.pipeline.service.spaces), built on its first job and kept per worker until the tenant's
settings change. An edit job's input and mask come from its sealed job inputs
(genguard.audit.job_inputs), which the job's end deletes. A job's generation is recorded in its tenant's
audit store ("<tenant>/apikey:<key id>" as its actor); the job row then says how it ended and what was
released. Files are written under
`files_dir/<tenant id>/`. A job that raises is recorded `failed` with the error, and the worker goes on.

Graceful stop (`drain()`, then `stop()`): the workers stop claiming at once; a job that has not started
sampling goes back to `queued`; a running one has `grace_s` seconds to finish, and one still sampling then
is recorded `failed` (as a restart's recovery records a job the stop cut).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genguard.audit.service_store import JobRecord, ServiceStore
from genguard.guard.errors import BlockedError, GenguardError, NotFoundError
from genguard.guard.markid import format_mark_id
from genguard.guard.types import GenerationParams, GenerationRequest, PromptDecision
from genguard.pipeline.service.spaces import TenantSpaces
from genguard.pipeline.service.stages import Requeue, ShutdownCut, run_stages
from genguard.pipeline.service.telemetry import Telemetry

log = logging.getLogger("genguard.service.jobs")
POLL_S = 0.5
# A worker's loaded pipelines, by (output format, scheduler).
# (output format, scheduler) -> the loaded model's Governor; (tenant settings..., format, scheduler) -> pipeline
Pipelines = dict[tuple[str | None, ...], Any]
_CUT = "interrupted: the service stopped while this job sampled (its grace period of {:g} s passed); submit it again"


@dataclass(frozen=True)
class WorkerSettings:
    """What the workers load: the model, the service's policy pack (a tenant's own pack wins) and the
    device."""

    model: str = "embedded:tiny-sd"
    policy: str = "default"
    device: str = "cpu"


def decision_summary(decision: PromptDecision) -> dict[str, Any]:
    categories = sorted({hit.category for hit in decision.rules})
    return {
        "action": decision.action.value,
        "policy": {"name": decision.policy.name, "version": decision.policy.version},
        "categories": categories,
        "prompt_rewritten": decision.prompt != decision.original_prompt,
    }


class JobRunner:
    """`workers` threads running queued jobs; `start()` picks up what a stopped service left queued."""

    def __init__(
        self,
        store: ServiceStore,
        spaces: TenantSpaces,
        files_dir: Path,
        settings: WorkerSettings,
        workers: int = 1,
        *,
        grace_s: float = 30.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers: expected 0 or more, found {workers}")
        if grace_s < 0:
            raise ValueError(f"grace_s: expected 0 or more seconds, found {grace_s}")
        self.grace_s = grace_s
        self.telemetry = telemetry if telemetry is not None else Telemetry.disabled()
        self._cut = threading.Event()
        self._current: dict[str, str] = {}  # worker thread name -> the job it runs
        self.store = store
        self.spaces = spaces
        self.files_dir = files_dir
        self.settings = settings
        self.workers = workers
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._finished = threading.Condition()
        self.models_loaded = 0

    def start(self) -> None:
        recovered = self.store.recover_jobs()
        if recovered:
            log.warning("jobs interrupted by the last stop marked failed", extra={"count": recovered})
        for number in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"genguard-worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def drain(self) -> None:
        """Stop claiming jobs (at SIGTERM, before the server's own shutdown); running jobs go on."""
        self._stop.set()
        self.notify()

    def stop(self, timeout: float | None = None) -> None:
        """Drain, give running jobs `timeout` seconds (None: `grace_s`) to finish, then record the ones
        still sampling failed (a worker that gets past its sampling then records its generation failed
        and commits nothing)."""
        self.drain()
        grace = self.grace_s if timeout is None else timeout
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not any(thread.is_alive() for thread in self._threads):
            return
        self._cut.set()
        for job_id in list(self._current.values()):
            try:
                self.store.finish_job(job_id, "failed", error=_CUT.format(grace))
            except GenguardError as exc:
                log.error("job cut by the stop but not recorded", extra={"job_id": job_id, "error": str(exc)})
                continue
            log.warning("job cut by the stop recorded failed", extra={"job_id": job_id, "grace_s": grace})

    def alive(self) -> int:
        return sum(thread.is_alive() for thread in self._threads)

    def notify(self) -> None:
        """A job was queued: wake a waiting worker."""
        with self._wake:
            self._wake.notify()

    def wait(self, job_id: str, tenant_id: str, timeout: float) -> JobRecord | None:
        """The job once it has finished, or as it is when `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.store.get_job(job_id, tenant_id)
            remaining = deadline - time.monotonic()
            if job is None or job.finished or remaining <= 0:
                return job
            with self._finished:
                self._finished.wait(min(remaining, POLL_S))

    # ---------------------------------------------------------------------------------- worker

    def _loop(self) -> None:
        pipelines: Pipelines = {}
        while not self._stop.is_set():
            try:
                job = self.store.claim_next_job()
            except GenguardError as exc:
                log.error("cannot claim a job", extra={"error": str(exc)})
                job = None
            if job is None:
                with self._wake:
                    self._wake.wait(POLL_S)
                continue
            self._current[threading.current_thread().name] = job.id
            try:
                with self.telemetry.span("genguard.job", **{"genguard.job.id": job.id}):
                    self._run(job, pipelines)
            finally:
                self._current.pop(threading.current_thread().name, None)
            with self._finished:
                self._finished.notify_all()

    def _pipeline(
        self, pipelines: Pipelines, tenant_id: str, output_format: str, scheduler: str | None = None
    ) -> Any:
        """This worker's pipeline for the tenant (its pack, store and keys), `output_format` and `scheduler`.
        The model is loaded on the worker's first job asking for both (the format and the sampler are fixed
        when a pipeline is built, so each pair asked for loads the model once per worker); each tenant's
        pipeline shares it."""
        from genguard.pipeline.governed import GovernedPipeline

        space = self.spaces.get(tenant_id)
        loaded = (output_format, scheduler)
        wanted = (*space.pipeline_key, *loaded)
        if wanted not in pipelines:
            base = pipelines.get(loaded)
            if base is None:
                base = pipelines[loaded] = GovernedPipeline.from_pretrained(
                    self.settings.model,
                    policy=space.policy,
                    audit=space.store,
                    classifiers=[],  # the model only: each tenant's pipeline builds its pack's checks
                    device=self.settings.device,
                    output_format=output_format,
                    scheduler=scheduler,
                ).governor
                self.models_loaded += 1
            settings = space.pipeline_key
            for stale in [k for k in pipelines if len(k) > 2 and k[0] == tenant_id and k[:-2] != settings]:
                del pipelines[stale]  # the tenant's settings changed: its old pipelines go
            pipelines[wanted] = GovernedPipeline.around(
                base.sharing(
                    policy=space.policy,
                    audit=space.store,
                    content_credentials=space.content_credentials(),
                    watermark_key=space.watermark_key(),
                    output_format=output_format,
                )
            )
        return pipelines[wanted]

    def _actor(self, job: JobRecord) -> str:
        """The generation's actor, "<tenant name>/apikey:<key id>": the audit store's tenant filters
        (actors "<tenant>" and "<tenant>/...") then find the tenant's generations."""
        name = next((t.name for t in self.store.list_tenants() if t.id == job.tenant_id), job.tenant_id)
        return f"{name}/apikey:{job.key_id}"

    def _run(self, job: JobRecord, pipelines: Pipelines) -> None:
        from genguard.pipeline import families
        from genguard.pipeline.embedded import EMBEDDED_DEFAULT_SIZE, is_embedded
        from genguard.pipeline.outcomes import InvalidRequestError, NotStartedError, ReleaseFailedError

        started = time.monotonic()
        log.info("job started", extra={"job_id": job.id, "key_id": job.key_id})
        asked = job.request
        status, generation_id, result, error = "failed", None, None, None
        try:
            edit = asked.get("edit")
            inputs = self.store.job_inputs(job.id) if edit else {}
            if edit and "image" not in inputs:
                raise NotFoundError(
                    f"init_image: expected job {job.id}'s sealed input, found none (removed before it ran)"
                )
            pipe = self._pipeline(
                pipelines, job.tenant_id, asked.get("output_format", "png"), asked.get("scheduler")
            )
            width, height = asked.get("width") or 0, asked.get("height") or 0
            if not width:
                side = (
                    EMBEDDED_DEFAULT_SIZE
                    if is_embedded(self.settings.model)
                    else families.default_size(pipe.pipe)
                )
                width, height = side, side
            request = GenerationRequest(
                prompt=asked["prompt"],
                negative_prompt=asked.get("negative_prompt", ""),
                params=GenerationParams(
                    width=width,
                    height=height,
                    steps=asked["steps"],
                    guidance_scale=asked["guidance"],
                    num_images=asked["n"],
                    seed=asked.get("seed"),
                ),
                actor=self._actor(job),
                init_image=inputs.get("image"),
                mask=inputs.get("mask"),
                strength=edit["strength"] if edit else None,
                consent=edit["consent"] if edit else None,
            )
            outcome = run_stages(
                pipe.governor,
                request,
                self.files_dir / job.tenant_id,
                self.telemetry,
                lambda stage: self._checkpoint(stage, job.id),
            )
            status, generation_id = "done", outcome.generation_id
            result = summarise(outcome, pipe.sidecar)
        except Requeue:
            if self.store.requeue_job(job.id):
                log.info("job put back in the queue by the stop", extra={"job_id": job.id})
            return
        except BlockedError as exc:
            status, generation_id, error = "blocked", exc.generation_id, str(exc)
            result = {"decision": decision_summary(exc.decision), "generation_status": "blocked"}
        except ShutdownCut as exc:
            error = str(exc)
        except InvalidRequestError as exc:
            status, generation_id, error = "invalid", exc.generation_id, str(exc)
        except (NotStartedError, ReleaseFailedError) as exc:
            generation_id, error = exc.generation_id, str(exc)
        except Exception as exc:  # noqa: BLE001  (recorded failed; the worker goes on with the next job)
            error = f"{type(exc).__name__}: {exc}"
        if result is not None and isinstance(result.get("decision"), dict):
            self.telemetry.decision(result["decision"]["action"], result["decision"]["categories"])
        try:
            self.store.finish_job(job.id, status, generation_id=generation_id, result=result, error=error)
        except GenguardError as exc:
            log.error("job finished but not recorded", extra={"job_id": job.id, "error": str(exc)})
            return
        log.info(
            "job finished",
            extra={
                "job_id": job.id,
                "key_id": job.key_id,
                "status": status,
                "generation_id": generation_id,
                "duration_ms": round((time.monotonic() - started) * 1000),
            },
        )

    def _checkpoint(self, stage: str, job_id: str) -> None:
        """Between stages: a stopping worker puts back a job not yet sampling; past the grace period,
        a job that sampled is cut (recorded failed, nothing committed)."""
        if stage == "sample":
            if self._stop.is_set():
                raise Requeue
            # from here a stop can no longer put the job back: it finishes or is recorded failed
            log.info("job sampling", extra={"job_id": job_id})
        if self._cut.is_set():
            raise ShutdownCut(_CUT.format(self.grace_s))


def summarise(outcome: Any, sidecar: bool) -> dict[str, Any]:
    """What the job row keeps of a GenerationResult: the decision, released files, withheld images."""
    return {
        "generation_status": outcome.status,
        "decision": decision_summary(outcome.decision),
        "released": [
            {
                "index": image.index,
                "file": image.path.name,
                "mime_type": image.mime_type,
                "sha256": image.sha256,
                "mark_id": format_mark_id(image.mark_id),
                "manifest": {
                    "signed": image.manifest is not None,
                    "embedded": image.manifest is not None and not sidecar,
                    "size_bytes": len(image.manifest or b""),
                    "timestamp": image.timestamp,
                },
            }
            for image in outcome.released
        ],
        "withheld": [
            {"index": held.index, "status": held.status, "reason": held.reason} for held in outcome.withheld
        ],
    }


__all__ = ["JobRunner", "WorkerSettings", "decision_summary", "summarise"]
