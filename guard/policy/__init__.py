"""Policy packs and the prompt checks (normalisation; lexical, co-occurrence and model layers).

Public surface: `load_pack`, `pack_file`, `list_shipped_packs`, `PolicyPack`, `PolicyEngine`, `PromptScanner`,
`TextClassifierScanner` (the model layer), `SemanticScanner` (the semantic layer), `normalize` / `NormalizedPrompt`. Everything else is internal.
"""

from genguard.guard.policy.engine import PolicyEngine
from genguard.guard.policy.loader import list_shipped_packs, load_pack, pack_file
from genguard.guard.policy.model_layer import TextClassifierScanner
from genguard.guard.policy.normalize import NormalizedPrompt, PromptView, normalize
from genguard.guard.policy.pack import PolicyPack
from genguard.guard.policy.scanners import CooccurrenceScanner, LexicalScanner, PromptScanner
from genguard.guard.policy.semantic import SemanticScanner

__all__ = [
    "CooccurrenceScanner",
    "LexicalScanner",
    "NormalizedPrompt",
    "PolicyEngine",
    "PolicyPack",
    "PromptScanner",
    "PromptView",
    "SemanticScanner",
    "TextClassifierScanner",
    "list_shipped_packs",
    "load_pack",
    "normalize",
    "pack_file",
]
