"""genguard: governed image generation, provenance and a tamper-evident audit log around diffusers.

The public API is the names below; everything else lives in the subpackages `genguard.guard`
(policy, classifiers, provenance; no torch at import), `genguard.audit` (the store, verify, reports;
no torch at import), `genguard.pipeline` (the governed pipeline, its stages and the CLI) and
`genguard.policies` (the shipped packs). Names are loaded on first use, so that `import genguard`
stays light: only `GovernedPipeline` and `Governor` bring in torch and diffusers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genguard.audit.store import AuditStore
    from genguard.audit.verify import VerificationReport, verify_image
    from genguard.guard.errors import (
        AuditUnavailableError,
        BadInputError,
        BlockedError,
        GenguardError,
        ImageInputError,
        InfrastructureError,
        ModelLoadError,
        NotFoundError,
        PolicyError,
    )
    from genguard.guard.policy import PolicyEngine, PolicyPack, load_pack
    from genguard.guard.types import GenerationParams, GenerationRequest, PromptAction, PromptDecision
    from genguard.pipeline.governed import GovernedPipeline
    from genguard.pipeline.governor import GeneratedImage, GenerationResult, Governor, WithheldImage
    from genguard.pipeline.outcomes import InvalidRequestError, NotStartedError, ReleaseFailedError

# public name -> the module that defines it
_EXPORTS = {
    "AuditStore": "genguard.audit.store",
    "VerificationReport": "genguard.audit.verify",
    "verify_image": "genguard.audit.verify",
    "AuditUnavailableError": "genguard.guard.errors",
    "BadInputError": "genguard.guard.errors",
    "BlockedError": "genguard.guard.errors",
    "GenguardError": "genguard.guard.errors",
    "ImageInputError": "genguard.guard.errors",
    "InfrastructureError": "genguard.guard.errors",
    "ModelLoadError": "genguard.guard.errors",
    "NotFoundError": "genguard.guard.errors",
    "PolicyError": "genguard.guard.errors",
    "PolicyEngine": "genguard.guard.policy",
    "PolicyPack": "genguard.guard.policy",
    "load_pack": "genguard.guard.policy",
    "GenerationParams": "genguard.guard.types",
    "GenerationRequest": "genguard.guard.types",
    "PromptAction": "genguard.guard.types",
    "PromptDecision": "genguard.guard.types",
    "GeneratedImage": "genguard.pipeline.governor",
    "GenerationResult": "genguard.pipeline.governor",
    "GovernedPipeline": "genguard.pipeline.governed",
    "Governor": "genguard.pipeline.governor",
    "WithheldImage": "genguard.pipeline.governor",
    "InvalidRequestError": "genguard.pipeline.outcomes",
    "NotStartedError": "genguard.pipeline.outcomes",
    "ReleaseFailedError": "genguard.pipeline.outcomes",
}

__all__ = [
    "AuditStore",
    "AuditUnavailableError",
    "BadInputError",
    "BlockedError",
    "GeneratedImage",
    "GenerationParams",
    "GenerationRequest",
    "GenerationResult",
    "GenguardError",
    "GovernedPipeline",
    "Governor",
    "ImageInputError",
    "InfrastructureError",
    "InvalidRequestError",
    "ModelLoadError",
    "NotFoundError",
    "NotStartedError",
    "PolicyEngine",
    "PolicyError",
    "PolicyPack",
    "PromptAction",
    "PromptDecision",
    "ReleaseFailedError",
    "VerificationReport",
    "WithheldImage",
    "load_pack",
    "verify_image",
]


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'genguard' has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
