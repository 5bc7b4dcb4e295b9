"""Many requests at once: compatible requests sampled together, governance overlapped with sampling.

`GovernedPipeline.generate_many` runs here, through the same public stages of the `Governor` as one
call (admit, plan, sample, check, release, commit), arranged in three roles:

    main thread (the sampler)   admit + policy for every request first (blocked ones never sampled);
                                then per batch: sample -> put on a BOUNDED queue (a slow worker
                                blocks the sampler: memory stays at queue_size + workers + 1 batches)
    a noise thread              the next batch's initial noise (keyed latent watermark) meanwhile
    worker threads              per batch: `check` (output classifiers, batched on the model's
                                device); then the batch's requests spread over a pool of as many
                                governor threads, each `release`: output decision, pixel
                                watermark, encoding, C2PA signing, perceptual hash, bias,
                                quarantine vault -> its slot
    one committer thread        takes the slots in REQUEST order, commits each record (one
                                transaction per generation), and only then writes the files and
                                fills in the result

The governor pool is shared, so the last batch of a run (which nothing overlaps) is governed by
all `workers` threads at once rather than one request after another: that tail is most of what a
finite run pays for governance when the CPU keeps up with the GPU.

So records are committed in request order whatever order the workers finish in, and no file is
written and no result exists before its record is committed. A worker that fails on one request
turns that request into a `failed` record and a `FailedGeneration`; the others go on. When the
database cannot be written the run stops (fail closed): nothing more is committed or written,
quarantined copies of uncommitted requests are discarded, and `AuditUnavailableError` is raised
(requests committed before it keep their records and files).

Threads, not processes: the CPU stages spend their time in code that releases the GIL (numpy and
OpenCV for the watermark, zlib for PNG, c2pa-rs through ctypes for signing, the database driver),
and the images need not be copied between processes. The sampler thread only launches GPU work.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from genguard.guard.errors import AuditUnavailableError, BadInputError
from genguard.guard.types import GenerationParams, GenerationRequest
from genguard.pipeline.families import Family
from genguard.pipeline.governor import Checked, GenerationResult, Governor, Job, Prepared, Sampled
from genguard.pipeline.outcomes import InvalidRequestError, NotStartedError

if TYPE_CHECKING:
    from genguard.audit.records import GenerationRecord


@dataclass(frozen=True)
class FailedGeneration:
    """A request of `generate_many` that released nothing, in its place in the result list.

    status "blocked": the policy blocked the prompt (recorded; `error` is the BlockedError);
    "failed": sampling, governance or writing the files failed (recorded as failed, with the error
    text; a file not written after the commit is a ReleaseFailedError and a `release.failed` event),
    or the output folder's disk was full before sampling (NotStartedError);
    "invalid": the request was refused as bad input before sampling (recorded as invalid with the
    reason; `error` is the InvalidRequestError).
    `generation_id` is None only for a request the run stopped before recording (the database failed).
    """

    generation_id: str | None
    status: str
    error: Exception


@dataclass(frozen=True)
class _Outcome:
    """What a slot holds once its request is ready to commit (exactly one of the three is set)."""

    prepared: Prepared | None = None
    record: GenerationRecord | None = None  # a blocked or failed record to commit
    failure: FailedGeneration | None = None


def batch_key(family: Family, params: GenerationParams, negative_prompt: str) -> tuple[object, ...]:
    """Requests with equal keys can share one pipeline call.

    Size, steps and guidance are per call in diffusers. Flux applies true classifier-free guidance
    only when a negative prompt is given, so with and without one are different calls there.
    """
    flux_cfg = family is Family.FLUX and bool(negative_prompt)
    return (params.width, params.height, params.steps, params.guidance_scale, flux_cfg)


def plan_batches(jobs: Sequence[Job], family: Family, batch_size: int) -> list[list[Job]]:
    """Group compatible jobs (in request order within a group) into calls of at most `batch_size` images.

    A request is never split: one with more images than `batch_size` is sampled in a call of its own.
    Groups are taken in the order of their first request, so that commits rarely wait.
    """
    groups: dict[tuple[object, ...], list[Job]] = {}
    for job in jobs:
        groups.setdefault(batch_key(family, job.request.params, job.negative_prompt), []).append(job)
    batches: list[list[Job]] = []
    for group in groups.values():
        current: list[Job] = []
        for job in group:
            images = job.request.params.num_images
            if current and sum(j.request.params.num_images for j in current) + images > batch_size:
                batches.append(current)
                current = []
            current.append(job)
        batches.append(current)
    return batches


def generate_many(
    governor: Governor,
    requests: Sequence[GenerationRequest | str],
    *,
    out_dir: Path | None = None,
    batch_size: int = 8,
    workers: int = 4,
    queue_size: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> list[GenerationResult | FailedGeneration]:
    """See `GovernedPipeline.generate_many`."""
    for name, value in (("batch_size", batch_size), ("workers", workers), ("queue_size", queue_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInputError(f"{name}: expected a positive integer, found {value!r}")
    slots: list[Future[_Outcome]] = [Future() for _ in requests]
    slot_of: dict[str, Future[_Outcome]] = {}
    jobs: list[Job] = []
    out_problem = governor.out_dir_problem(out_dir)  # checked once, before anything is sampled
    for slot, request in zip(slots, requests, strict=True):
        try:
            admitted = governor.admit(request, out_problem)
        except (InvalidRequestError, NotStartedError) as refused:
            assert refused.record is not None
            status = refused.record.status
            failure = FailedGeneration(refused.generation_id, status, refused)
            slot.set_result(_Outcome(record=refused.record, failure=failure))
            continue
        if admitted.blocked:
            record, error = governor.blocked(admitted)
            failure = FailedGeneration(admitted.generation_id, "blocked", error)
            slot.set_result(_Outcome(record=record, failure=failure))
            continue
        job = governor.plan(admitted)
        jobs.append(job)
        slot_of[job.generation_id] = slot

    batches = plan_batches(jobs, governor.family, batch_size)
    sampled, total = 0, sum(job.request.params.num_images for job in jobs)
    governors = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="genguard-governor")
    run = _Run(governor, out_dir, slots, slot_of, queue_size, governors)
    pool = [
        threading.Thread(target=run.work, name=f"genguard-govern-{i}", daemon=True) for i in range(workers)
    ]
    committer = threading.Thread(target=run.commit, name="genguard-commit", daemon=True)
    for thread in (*pool, committer):
        thread.start()
    # The initial noise of the next batch (the latent watermark's keyed noise takes numpy time) is
    # made by a helper thread while this batch samples, so that the sampler only samples.
    noise_maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genguard-noise")
    try:
        upcoming = [noise_maker.submit(governor.initial_noise, batch) for batch in batches[:1]]
        for number, batch in enumerate(batches):
            noise = upcoming.pop()
            if number + 1 < len(batches):
                upcoming.append(noise_maker.submit(governor.initial_noise, batches[number + 1]))
            if run.stopped.is_set():
                run.skip(batch)
                continue
            try:
                sampled_batch = governor.sample(batch, noise.result())
            except Exception as exc:  # noqa: BLE001 - the call failed: each of its requests is recorded failed
                for job in batch:
                    run.fail(job, exc)
                continue
            if progress is not None:
                sampled += sum(job.request.params.num_images for job in batch)
                progress(sampled, total)
            run.put(sampled_batch)
    except BaseException:
        run.stopped.set()
        raise
    finally:
        noise_maker.shutdown(wait=True, cancel_futures=True)
        for _ in pool:
            run.put(None)
        for thread in pool:
            thread.join()
        governors.shutdown(wait=True)
        # Only after an interruption are slots left open; with every worker gone nothing else sets them.
        for slot in slots:
            if not slot.done():
                slot.set_result(_Outcome())
        committer.join()
    if run.error is not None:
        raise run.error
    return run.results


class _Run:
    """The state one `generate_many` call shares between its sampler, workers and committer."""

    def __init__(
        self,
        governor: Governor,
        out_dir: Path | None,
        slots: list[Future[_Outcome]],
        slot_of: dict[str, Future[_Outcome]],
        queue_size: int,
        governors: ThreadPoolExecutor,
    ) -> None:
        self.governor = governor
        self.release_pool = governors
        self.out_dir = out_dir
        self.slots = slots
        self.slot_of = slot_of
        self.work_queue: queue.Queue[Sampled | None] = queue.Queue(maxsize=queue_size)
        self.stopped = threading.Event()  # set when the run must commit nothing more
        self.error: BaseException | None = None
        self.results: list[GenerationResult | FailedGeneration] = []

    def put(self, item: Sampled | None) -> None:
        """Block while the queue is full (back-pressure on the sampler), unless the run has stopped."""
        while True:
            try:
                self.work_queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.stopped.is_set() and item is not None:
                    self.skip(item.jobs)
                    return

    def skip(self, batch: Sequence[Job]) -> None:
        for job in batch:
            self.slot_of[job.generation_id].set_result(_Outcome())

    def fail(self, job: Job, exc: Exception) -> None:
        failure = FailedGeneration(job.generation_id, "failed", exc)
        self.slot_of[job.generation_id].set_result(
            _Outcome(record=self.governor.failed(job, exc), failure=failure)
        )

    def work(self) -> None:
        while (item := self.work_queue.get()) is not None:
            if self.stopped.is_set():
                self.skip(item.jobs)
                continue
            try:  # the output classifiers see the whole batch at once (on the model's device)
                checked = self.governor.check(item)
            except Exception as exc:  # noqa: BLE001 - recorded as failed for each request of the batch
                for job in item.jobs:
                    self.fail(job, exc)
                continue
            governing = [self.release_pool.submit(self._release, one) for one in checked]
            for future in governing:  # this worker holds the batch until it is governed (bounded memory)
                future.result()

    def _release(self, checked: Checked) -> None:
        job = checked.job
        if self.stopped.is_set():
            self.skip([job])
            return
        try:
            prepared = self.governor.release(checked, self.out_dir)
        except Exception as exc:  # noqa: BLE001 - one request fails, the others go on
            self.fail(job, exc)
            return
        self.slot_of[job.generation_id].set_result(_Outcome(prepared=prepared))

    def commit(self) -> None:
        """Commit the slots in request order; after a database failure only clean up."""
        for slot in self.slots:
            outcome = slot.result()
            if self.stopped.is_set():
                if outcome.prepared is not None:
                    self.governor.discard(outcome.prepared)
                continue
            try:
                self.results.append(self._commit(outcome))
            except AuditUnavailableError as exc:
                self.error = exc
                self.stopped.set()
            except Exception as exc:  # noqa: BLE001 - e.g. a conflicting record, a file not writable
                generation_id = (
                    outcome.prepared.job.generation_id
                    if outcome.prepared is not None
                    else outcome.failure.generation_id
                    if outcome.failure is not None
                    else None
                )
                self.results.append(FailedGeneration(generation_id, "failed", exc))

    def _commit(self, outcome: _Outcome) -> GenerationResult | FailedGeneration:
        if outcome.prepared is not None:
            return self.governor.commit(outcome.prepared, self.out_dir)
        if outcome.record is not None:
            self.governor.audit.record_generation(outcome.record)
        assert outcome.failure is not None
        return outcome.failure
