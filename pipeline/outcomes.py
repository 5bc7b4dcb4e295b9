"""How a generation that released nothing, or not everything, ends: typed errors with their records.

Every request that reaches `GovernedPipeline` (one call or `generate_many`) gets exactly one audit
record. A request refused before sampling is recorded as `invalid` (bad input: empty or over-long
prompt, sizes, steps or images over the bounds, an unusable output folder, an unknown model name) or
`failed` (the output folder's disk is full, the model cannot be loaded); the error raised carries
the record's generation id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from genguard.guard.errors import BadInputError, InfrastructureError

if TYPE_CHECKING:
    from genguard.audit.records import GenerationRecord

# The exit code of `genguard generate` when every image was withheld (quarantined or blocked by the
# output checks): the request ran and is recorded, but nothing was released.
ALL_WITHHELD_EXIT_CODE = 5


class InvalidRequestError(BadInputError):
    """A request refused as bad input before sampling, recorded with status `invalid`.

    `record`: the record to commit (the pipeline commits it before raising); `generation_id` its id.
    """

    def __init__(self, message: str, generation_id: str, record: GenerationRecord | None = None) -> None:
        super().__init__(message)
        self.generation_id = generation_id
        self.record = record


class NotStartedError(InfrastructureError):
    """A request that could not start for a reason outside it (the output folder's disk is full, the
    model could not be loaded), found before sampling; recorded as `failed`."""

    def __init__(self, message: str, generation_id: str, record: GenerationRecord | None = None) -> None:
        super().__init__(message)
        self.generation_id = generation_id
        self.record = record


RefusedRequest = InvalidRequestError | NotStartedError


class ReleaseFailedError(InfrastructureError):
    """Writing released files failed after the record was committed.

    A chained `release.failed` event was appended for each image in `indices` (its record keeps
    status `released`; the event says it never left), and its temporary files were removed.
    `result`: the generation's result; the images in `indices` were not written.
    """

    def __init__(self, message: str, generation_id: str, indices: Sequence[int], result: Any = None) -> None:
        super().__init__(message)
        self.generation_id = generation_id
        self.indices = tuple(indices)
        self.result = result
