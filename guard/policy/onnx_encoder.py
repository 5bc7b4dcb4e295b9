"""The semantic layer's encoder on ONNX Runtime: no torch, no transformers, a fast cold start.

The encoder (LoRA deltas merged, guard/policy/adapter.py) and the adapter's head are exported once
to one ONNX graph with torch, into the cache (`guard.config.cache_dir() / "prompt-encoders"`), in a
folder named by a digest of everything the export read: the encoder's pinned files (or, unpinned, a
digest over its folder), the adapter's config and weights, and this module's export format. A later
process loads that graph with onnxruntime and tokenizes with `tokenizers` (the encoder's own
tokenizer.json), so a cold `genguard policy check` never imports torch.

Integrity: `manifest.json` in the cache folder records the graph's SHA-256, which is checked before
the graph is loaded, and the version string the torch path records (so both paths write the same
model id into decisions). The graph's inputs are `input_ids` and `attention_mask` (int64, batch x
tokens); its outputs `pooled` (the attention-masked mean of the last hidden state, batch x width)
and, with an adapter, `logits` (the head's, batch x categories; sigmoid them for probabilities).

Scores agree with the torch path to about 1e-5 (tests/test_prompt_onnx.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genguard.guard.errors import ModelLoadError

EXPORT_FORMAT = "genguard-onnx-1"  # in the cache key: a new format re-exports
GRAPH_FILE = "encoder.onnx"
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
OPSET = 17


def available() -> bool:
    """Whether onnxruntime and tokenizers are installed (found without importing them)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "tokenizers"))


def can_export() -> bool:
    """Whether this process can write a graph: torch, transformers and onnx installed."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers", "onnx"))


def cache_key(parts: Mapping[str, Any]) -> str:
    """The cache folder name for an export of `parts` (JSON-able: what the export read)."""
    text = json.dumps({"format": EXPORT_FORMAT, **parts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def cache_root() -> Path:
    from genguard.guard.config import cache_dir

    return cache_dir() / "prompt-encoders"


@dataclass(frozen=True)
class Manifest:
    """What `manifest.json` of an exported graph says."""

    graph_sha256: str
    version: str
    has_head: bool
    width: int


def export(
    network: Any,
    head: tuple[Any, Any] | None,
    folder: Path,
    *,
    version: str,
    key_parts: Mapping[str, Any],
) -> Path:
    """Writes `network` (a transformers encoder, LoRA merged) and `head` as one graph into `folder`
    (created atomically: a half-written export is never seen). Returns `folder`."""
    import torch

    class _Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network
            if head is not None:
                self.head = torch.nn.Linear(head[0].shape[1], head[0].shape[0])
                with torch.no_grad():
                    self.head.weight.copy_(head[0])
                    self.head.bias.copy_(head[1])

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.network(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
            if head is None:
                return pooled
            return pooled, self.head(pooled)

    graph = _Graph().eval().to("cpu")
    outputs = ["pooled", "logits"] if head is not None else ["pooled"]
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    axes.update({name: {0: "batch"} for name in outputs})
    example = torch.ones((2, 4), dtype=torch.long)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        raw = staging / "exported.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on how it lowered indexing
            torch.onnx.export(
                graph,
                (example, example),
                str(raw),
                input_names=["input_ids", "attention_mask"],
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        _optimize(raw, staging / GRAPH_FILE)
        raw.unlink()
        manifest = {
            "format": EXPORT_FORMAT,
            "graph_sha256": _sha256(staging / GRAPH_FILE),
            "version": version,
            "has_head": head is not None,
            "width": int(network.config.hidden_size),
            "key": dict(key_parts),
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True), "utf-8")
        try:
            os.replace(staging, folder)
        except OSError:
            if not (folder / MANIFEST_FILE).is_file():  # not another process's finished export
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _optimize(source: Path, target: Path) -> None:
    """Writes `source` with ONNX Runtime's graph optimisations applied (constant folding, fused
    layer norm and GELU, ...), so that loading it needs none: a third of a cold start otherwise."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def read_manifest(folder: Path, who: str) -> Manifest:
    path = folder / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest = Manifest(
            graph_sha256=str(data["graph_sha256"]),
            version=str(data["version"]),
            has_head=bool(data["has_head"]),
            width=int(data["width"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"{who}: file {str(path)!r}: expected an export manifest (graph_sha256, version, has_head, "
            f"width), found an unreadable one ({type(exc).__name__}: {exc}); delete the folder to re-export"
        ) from exc
    if data.get("format") != EXPORT_FORMAT:
        raise ModelLoadError(
            f"{who}: file {str(path)!r}: format: expected {EXPORT_FORMAT!r}, found {data.get('format')!r}"
        )
    return manifest


class OnnxEncoder:
    """An exported graph and the encoder's tokenizer: pooled embeddings and head logits as numpy."""

    def __init__(self, folder: Path, tokenizer_file: Path, max_length: int, threads: int, who: str) -> None:
        manifest = read_manifest(folder, who)
        graph = folder / GRAPH_FILE
        found = _sha256(graph) if graph.is_file() else "no such file"
        if found != manifest.graph_sha256:
            raise ModelLoadError(
                f"{who}: {MANIFEST_FILE}: graph_sha256: expected {manifest.graph_sha256}, found {found} "
                f"(file {str(graph)!r}); delete the folder to re-export"
            )
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # optimised at export (_optimize): nothing left to do at load time
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            self._session = onnxruntime.InferenceSession(
                str(graph), options, providers=["CPUExecutionProvider"]
            )
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"{who}: could not load {str(graph)!r}: {exc}") from exc
        tokenizer.enable_truncation(max_length)
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self._pad_id = tokenizer.token_to_id("[PAD]") or 0
        self.version = manifest.version
        self.has_head = manifest.has_head
        self.width = manifest.width
        self.vocab: dict[str, int] = tokenizer.get_vocab()

    def run(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(pooled embeddings, head logits or None), one row per text, float32."""
        encodings = self._tokenizer.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), length), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        outputs = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
        pooled = np.asarray(outputs[0], dtype=np.float32)
        logits = np.asarray(outputs[1], dtype=np.float32) if self.has_head else None
        return pooled, logits


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
