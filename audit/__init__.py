"""The audit store: a tamper-evident record of every generation (see genguard.audit.store)."""

from genguard.audit.records import GenerationRecord, ImageRecord
from genguard.audit.store import (
    AuditStore,
    ChainVerification,
    GenerationDetail,
    GenerationSummary,
    StoredDecision,
    StoredEvent,
    StoredImage,
    StoredPrompt,
)

__all__ = [
    "AuditStore",
    "ChainVerification",
    "GenerationDetail",
    "GenerationRecord",
    "GenerationSummary",
    "ImageRecord",
    "StoredDecision",
    "StoredEvent",
    "StoredImage",
    "StoredPrompt",
]
