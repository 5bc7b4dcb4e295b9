"""A trained adapter for the semantic layer: LoRA deltas for the encoder and a multi-label head.

The folder holds `config.json` (what the adapter is and how it was made) and `adapter.safetensors`
(the LoRA A/B matrices per target linear, `<module>.lora_A` / `<module>.lora_B`, and the head,
`head.weight` / `head.bias`). At load time each delta is merged into its linear's weight
(W + alpha / rank * B @ A), so scoring costs one plain encoder pass plus a 384 x categories matrix.
The training script (genguard.pipeline.training.train_prompt_classifier) writes both files.

torch is imported inside the functions that need it, never at module load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genguard.guard.errors import ModelLoadError

FORMAT = "genguard-lora-1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "adapter.safetensors"
HEAD = "head"

# config.json keys the runtime reads; `training` is the record of how the adapter was made.
_REQUIRED: dict[str, type] = {
    "format": str,
    "base_model": str,
    "base_sha256": dict,
    "lora_rank": int,
    "lora_alpha": float,
    "lora_targets": list,
    "categories": list,
    "max_length": int,
    "sha256": dict,
    "training": dict,
}


@dataclass(frozen=True)
class AdapterConfig:
    """What `config.json` says. `sha256` pins the adapter's weight file; `base_sha256` the encoder's
    files it was trained on (checked against the encoder that the pack loads)."""

    folder: Path
    base_model: str
    base_sha256: Mapping[str, str]
    lora_rank: int
    lora_alpha: float
    lora_targets: tuple[str, ...]
    categories: tuple[str, ...]
    max_length: int
    sha256: Mapping[str, str]

    @property
    def scale(self) -> float:
        return self.lora_alpha / self.lora_rank


def read_config(folder: Path, who: str) -> AdapterConfig:
    """`config.json` of an adapter folder, with every key known, present and of its type."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ModelLoadError(f"{who}: expected the adapter config {str(path)!r}, found no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{who}: file {str(path)!r}: expected JSON, found unreadable text ({exc})"
        ) from exc
    if not isinstance(data, dict):
        raise ModelLoadError(
            f"{who}: file {str(path)!r}: expected a JSON object, found {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(_REQUIRED))
    missing = sorted(set(_REQUIRED) - set(data))
    if unknown or missing:
        raise ModelLoadError(
            f"{who}: file {str(path)!r}: expected the keys {', '.join(sorted(_REQUIRED))}; "
            f"found unknown {unknown or 'none'}, missing {missing or 'none'}"
        )
    for key, kind in _REQUIRED.items():
        value = data[key]
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not ok or isinstance(value, bool):
            raise ModelLoadError(
                f"{who}: file {str(path)!r}: {key}: expected {kind.__name__}, found {type(value).__name__}"
            )
    if data["format"] != FORMAT:
        raise ModelLoadError(
            f"{who}: file {str(path)!r}: format: expected {FORMAT!r}, found {data['format']!r}"
        )
    if WEIGHTS_FILE not in data["sha256"]:
        raise ModelLoadError(
            f"{who}: file {str(path)!r}: sha256: expected a digest for {WEIGHTS_FILE}, found none"
        )
    if data["lora_rank"] < 1 or data["max_length"] < 1 or not data["categories"]:
        raise ModelLoadError(
            f"{who}: file {str(path)!r}: expected lora_rank >= 1, max_length >= 1 and categories; "
            f"found {data['lora_rank']}, {data['max_length']}, {data['categories']}"
        )
    return AdapterConfig(
        folder=folder,
        base_model=data["base_model"],
        base_sha256=dict(data["base_sha256"]),
        lora_rank=data["lora_rank"],
        lora_alpha=float(data["lora_alpha"]),
        lora_targets=tuple(data["lora_targets"]),
        categories=tuple(data["categories"]),
        max_length=data["max_length"],
        sha256=dict(data["sha256"]),
    )


def merge(network: Any, config: AdapterConfig, who: str) -> tuple[Any, Any]:
    """Merges the LoRA deltas into `network` (in place) and returns the head's (weight, bias).

    Every tensor in the file must be used and every module it names must be a target linear of the
    right shape: a file for another encoder fails here, not with wrong scores later.
    """
    import torch
    from safetensors.torch import load_file

    path = config.folder / WEIGHTS_FILE
    tensors: dict[str, Any] = load_file(str(path))
    where = f"{who}: file {str(path)!r}"
    try:
        weight, bias = tensors.pop(f"{HEAD}.weight"), tensors.pop(f"{HEAD}.bias")
    except KeyError as exc:
        raise ModelLoadError(f"{where}: expected the tensor {exc.args[0]!r}, found none") from None
    if tuple(weight.shape[:1]) != (len(config.categories),) or tuple(bias.shape) != (len(config.categories),):
        raise ModelLoadError(
            f"{where}: head: expected {len(config.categories)} outputs (one per category), "
            f"found weight {tuple(weight.shape)}, bias {tuple(bias.shape)}"
        )
    modules = sorted({name.rsplit(".", 1)[0] for name in tensors})
    for name in modules:
        a, b = tensors.pop(f"{name}.lora_A", None), tensors.pop(f"{name}.lora_B", None)
        if a is None or b is None or name.rsplit(".", 1)[-1] not in config.lora_targets:
            raise ModelLoadError(
                f"{where}: {name}: expected lora_A and lora_B of a target linear "
                f"({', '.join(config.lora_targets)}), found {'a non-target module' if a is not None and b is not None else 'one of the pair'}"
            )
        try:
            linear = network.get_submodule(name)
        except AttributeError:
            raise ModelLoadError(f"{where}: {name}: expected a module of the encoder, found none") from None
        delta = (b.float() @ a.float()) * config.scale
        if not isinstance(linear, torch.nn.Linear) or tuple(linear.weight.shape) != tuple(delta.shape):
            raise ModelLoadError(
                f"{where}: {name}: expected a linear of shape {tuple(delta.shape)}, "
                f"found {type(linear).__name__} {tuple(getattr(linear, 'weight', torch.empty(0)).shape)}"
            )
        with torch.no_grad():
            linear.weight += delta.to(linear.weight.dtype)
    if tensors:
        raise ModelLoadError(f"{where}: expected only LoRA and head tensors, found {sorted(tensors)}")
    if weight.shape[1] != network.config.hidden_size:
        raise ModelLoadError(
            f"{where}: head: expected {network.config.hidden_size} inputs (the encoder's width), found {weight.shape[1]}"
        )
    return weight.float(), bias.float()
