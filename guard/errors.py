"""The exceptions genguard raises. Each carries the CLI exit code it maps to.

Messages follow attrs' habit: name the thing, what was expected, and what was found.
They never contain key material.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genguard.guard.types import PromptDecision


class GenguardError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code: int = 1


class BadInputError(GenguardError):
    """The caller gave something unusable: a malformed pack, an empty prompt, a corrupt image."""

    exit_code = 2


class PolicyError(BadInputError):
    """A policy pack is malformed or tries something no pack may do."""


class ImageInputError(BadInputError):
    """An image file or array that cannot be used (corrupt, truncated, too large, wrong shape)."""


class NotFoundError(BadInputError):
    """An id (generation, image, review item) that the audit database does not hold."""


class InfrastructureError(GenguardError):
    """Something outside the request failed: the database, model loading, the filesystem."""

    exit_code = 4


class AuditUnavailableError(InfrastructureError):
    """The audit database cannot be reached or written. Generation fails closed."""


class ModelLoadError(InfrastructureError):
    """A model path, hub id or embedded name could not be loaded."""


class BlockedError(GenguardError):
    """The prompt policy blocked the request. The audit record was written before this was raised."""

    exit_code = 3

    def __init__(self, message: str, decision: PromptDecision, generation_id: str) -> None:
        super().__init__(message)
        self.decision = decision
        self.generation_id = generation_id
