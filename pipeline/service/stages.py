"""A job's governed generation, stage by stage, with a checkpoint between stages and a span per stage.

The same stages in the same order as `Governor.run` (admit -> plan -> sample -> check -> release ->
commit), with the same records: a refusal is committed, a blocked prompt is committed, a failure after
planning is recorded failed. What the worker adds between them:

- `checkpoint(stage)` before sample, check, release and commit: the worker's graceful stop. Before
  `sample` nothing is recorded yet, so `Requeue` puts the job back; later, `ShutdownCut` is a failure
  like any other (recorded failed) and nothing is committed.
- `Telemetry.stage(name)` around each stage: its span and its duration.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from genguard.guard.types import GenerationRequest
from genguard.pipeline.service.telemetry import Telemetry

STAGES = ("admit", "plan", "sample", "check", "release", "commit")


class Requeue(Exception):
    """The worker is stopping and the job has not started sampling: put it back in the queue."""


class ShutdownCut(Exception):
    """The worker's grace period ended after sampling started: the job is recorded failed."""


def run_stages(
    governor: Any,
    request: GenerationRequest,
    out_dir: Path | None,
    telemetry: Telemetry,
    checkpoint: Callable[[str], None],
) -> Any:
    """`governor.run(request, out_dir=out_dir)`, stage by stage (see the module doc)."""
    from genguard.pipeline.outcomes import InvalidRequestError, NotStartedError

    try:
        with telemetry.stage("admit"):
            admitted = governor.admit(request, governor.out_dir_problem(out_dir))
    except (InvalidRequestError, NotStartedError) as refused:
        governor.commit_refusal(refused)
        raise
    if admitted.blocked:
        with telemetry.stage("commit"):
            record, error = governor.blocked(admitted)
            governor.audit.record_generation(record)
        raise error
    with telemetry.stage("plan"):
        job = governor.plan(admitted)
    checkpoint("sample")
    try:
        with telemetry.stage("sample"):
            sampled = governor.sample([job])
        checkpoint("check")
        with telemetry.stage("check"):
            (checked,) = governor.check(sampled)
        checkpoint("release")
        with telemetry.stage("release"):
            prepared = governor.release(checked, out_dir)
        checkpoint("commit")
    except Exception as exc:
        governor.audit.record_generation(governor.failed(job, exc))
        raise
    with telemetry.stage("commit"):
        return governor.commit(prepared, out_dir)


__all__ = ["STAGES", "Requeue", "ShutdownCut", "run_stages"]
