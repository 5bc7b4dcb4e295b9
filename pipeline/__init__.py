"""The governed pipeline: `GovernedPipeline` and its stages, the `Governor` (loaded on first use, so that
importing a command module does not load torch)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"GovernedPipeline": "genguard.pipeline.governed", "Governor": "genguard.pipeline.governor"}

__all__ = ["GovernedPipeline", "Governor"]


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'genguard.pipeline' has no attribute {name!r}") from None
    return getattr(import_module(module), name)
