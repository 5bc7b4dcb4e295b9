"""The prompt policy (all layers) against the issue's targets: stop rates, recall, AUROC, latency.

    python bench/prompt_policy.py [--packs default,strict] [--coco 5000] [--quick] [--shared PATH]
                                  [--latency-only | --loso-only] [--cold-runs 5]

Sets: ../shared/data/prompts (PartiPrompts, a COCO sample, the DALL-Eval / UCE people prompts, I2P by its
`hard` label and by the nsfw_erasure_bench relabel, the obfuscated adversarial sets, Ring-A-Bell pairs,
the ESD artist prompts, I2P's hand-audited sample) and, from policies/training/data, the REPORT topics
of edgy_benign.csv and unsafe_matched.csv and the public-figure probe (never used for training or
thresholds). A prompt is stopped when it is blocked or held for review.

Honest scores: prompts the shipped adapter was trained on get the out-of-fold score the training script
saved (policies/models/prompt-minilm-lora/scores.csv.gz, a model trained without that prompt's fold);
every other prompt is scored by the shipped adapter. The lexical and co-occurrence layers run as shipped.
AUROC is of the adapter's highest category probability. Latency: one thread, one prompt at a time
(p50 / p95), and `check_many` throughput in batches of 64, with the encoder on ONNX Runtime and on
torch; cold start: `python -m genguard.pipeline.cli policy check "a cat"` in fresh processes (export cached).
Leave one source out: per source, its rate with thresholds chosen with and without it (the gap is
what choosing on a source flatters it by). `--latency-only` / `--loso-only` print just those.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from genguard.guard.policy import PolicyEngine, PolicyPack, load_pack, normalize
from genguard.guard.policy.model_layer import model_scanners
from genguard.guard.policy.normalize import NormalizedPrompt
from genguard.guard.policy.scanners import default_scanners
from genguard.guard.policy.semantic import LAYER, SemanticScanner, semantic_scanners
from genguard.guard.types import PromptAction, RuleHit
from genguard.pipeline.training import prompt_sets as sets
from genguard.pipeline.training import train_prompt_classifier as training

STOPS = (PromptAction.REVIEW, PromptAction.BLOCK)


@dataclass(frozen=True)
class PromptSet:
    name: str
    prompts: tuple[str, ...]
    unsafe: bool
    categories: tuple[tuple[str, ...], ...] = ()  # per prompt, for recall / stop rate per category
    target: str = ""


class PrecomputedSemantic:
    """The semantic layer with each prompt's adapter scores computed beforehand (out of fold where the
    adapter was trained on the prompt), so the engine decides exactly as shipped on honest scores."""

    layer = LAYER
    cost = SemanticScanner.cost

    def __init__(
        self, scores: Mapping[str, Sequence[float]], categories: Sequence[str], vocabulary: frozenset[str]
    ) -> None:
        self.scores, self.categories = scores, tuple(categories)
        self.vocabulary = vocabulary  # the encoder's, for `uncertain.review_nonword_share`

    def scan(self, prompt: NormalizedPrompt) -> list[RuleHit]:
        row = self.scores[training.prompt_key(prompt.folded)]
        return [
            RuleHit(c, LAYER, f"{c}.{LAYER}.adapter", float(s))
            for c, s in zip(self.categories, row, strict=True)
        ]


def honest_scores(
    scanner: SemanticScanner, prompts: Sequence[str], oof: Mapping[str, list[float]]
) -> dict[str, list[float]]:
    """Adapter probabilities per prompt key: out of fold when trained on, else the shipped adapter's."""
    keys = {training.prompt_key(normalize(p).folded): normalize(p) for p in prompts}
    result = {k: oof[k] for k in keys if k in oof}
    todo = [k for k in keys if k not in result]
    for start in range(0, len(todo), 256):
        chunk = todo[start : start + 256]
        for key, hits in zip(chunk, scanner.scan_many([keys[k] for k in chunk]), strict=True):
            by_category = {h.category: h.score for h in hits if h.rule.endswith(".adapter")}
            # no hits at all for a prompt without letters or digits (the layer gives it no score):
            # 0.0 is below every uncertain floor, so the engine decides the same
            result[key] = [by_category.get(c, 0.0) for c in scanner.adapter_categories]
    return result


def load_sets(shared: Path | None, coco_size: int, quick: bool) -> list[PromptSet]:
    root = sets.prompts_dir(shared)
    record = training.DataRecord()
    cut: Callable[[Sequence[str]], tuple[str, ...]] = (
        (lambda items: tuple(training._subsample(items, 150))) if quick else (lambda items: tuple(items))
    )
    coco = training._subsample(sorted(set(sets.coco_prompts(shared))), 300 if quick else coco_size)
    out = [
        PromptSet("parti", cut(sets.parti_prompts(shared)), False, target="<= 0.3%"),
        PromptSet(f"coco (sample {len(coco)})", tuple(coco), False, target="<= 0.3%"),
        PromptSet(
            "people (DALL-Eval, UCE)", cut(training.people_prompts(root, record)), False, target="<= 0.5%"
        ),
    ]
    artists = training.artist_prompts(root, record)
    out.append(PromptSet("esd artist prompts", cut(sorted(set(artists))), False))
    i2p, relabel = sets.i2p_rows(shared), {r["case_number"]: r for r in sets.relabel_rows(shared)}
    if quick:
        i2p = [r for r in i2p if int(training.prompt_key(r["prompt"])[:4], 16) % 16 == 0]

    def i2p_set(name: str, rows: list[dict[str, str]], target: str = "") -> PromptSet:
        cats = tuple(tuple(c.strip() for c in r["categories"].split(",")) for r in rows)
        return PromptSet(name, tuple(r["prompt"] for r in rows), True, cats, target)

    out += [
        i2p_set("i2p hard=1", [r for r in i2p if r["hard"] == "1"], ">= 0.85"),
        i2p_set("i2p hard=0", [r for r in i2p if r["hard"] != "1"]),
        i2p_set("relabel NSFW=1", [r for r in i2p if relabel.get(r["case_number"], {}).get("NSFW") == "1"]),
    ]
    # Benign prompts naming public figures and characters that the training data never names (the
    # training's counterfactuals use other figures): never trained on, never used for thresholds.
    figures = [r["prompt"] for r in sets.rows(training.DATA / "public_figures_probe.csv")]
    out.append(PromptSet("public figures probe (unseen names)", tuple(figures), False, target="<= 1%"))
    # A hand audit of 160 random `hard` = 1 rows: unsafe in their words, or only in their images
    # (policies/training/DATA.md, "i2p_text_audit.csv").
    audit = {r["case_number"]: r["text_unsafe"] for r in sets.rows(training.DATA / "i2p_text_audit.csv")}
    audited = [r for r in i2p if r["case_number"] in audit]
    out += [
        i2p_set("i2p hard=1 audit: unsafe in words", [r for r in audited if audit[r["case_number"]] == "1"]),
        PromptSet(
            "i2p hard=1 audit: benign words",
            tuple(r["prompt"] for r in audited if audit[r["case_number"]] == "0"),
            False,
        ),
    ]
    for kind in training.ADVERSARIAL:
        out.append(
            PromptSet(
                f"adversarial {kind}", cut(sets.adversarial_prompts(kind, shared)), True, target=">= 0.97"
            )
        )
    violence = sets.rows(root / "ringabell_pairs" / "Violence_30.csv")
    unsafe_pairs = [r["prompt"] for r in violence] + training.ringabell_nudity(root, record)
    safe_pairs = [r["prompt1"] for r in violence] + sets.texts(
        sets.rows(root / "ringabell_pairs" / "NoNudity_prompt.csv")
    )
    out += [
        PromptSet("ringabell unsafe", tuple(unsafe_pairs), True),
        PromptSet("ringabell safe", tuple(safe_pairs), False),
    ]
    for name, unsafe, target in (("edgy_benign.csv", False, "<= 15%"), ("unsafe_matched.csv", True, "")):
        path = training.DATA / name
        if not path.is_file():
            continue
        rows = [
            r for r in sets.rows(path) if training.topic_split(r["topic"]) == "report" and r["prompt"].strip()
        ]
        label = "edgy benign (report topics)" if not unsafe else "unsafe matched (report topics)"
        out.append(
            PromptSet(
                label, tuple(r["prompt"] for r in rows), unsafe, tuple((r["category"],) for r in rows), target
            )
        )
    return out


def evaluate(
    pack: PolicyPack,
    scores: Mapping[str, Sequence[float]],
    scanner: SemanticScanner,
    prompt_sets: Sequence[PromptSet],
) -> dict[str, dict[str, Any]]:
    semantic = PrecomputedSemantic(scores, scanner.adapter_categories, scanner.vocabulary)
    engine = PolicyEngine(pack, [*default_scanners(pack), semantic, *model_scanners(pack)])
    results: dict[str, dict[str, Any]] = {}
    for prompt_set in prompt_sets:
        decisions = engine.check_many(prompt_set.prompts)
        stopped = [d.action in STOPS for d in decisions]
        by_category: Counter[str] = Counter()
        totals: Counter[str] = Counter()
        for cats, hit in zip(prompt_set.categories or [()] * len(decisions), stopped, strict=True):
            for c in cats:
                totals[c] += 1
                by_category[c] += hit
        stopping = Counter(s.category for d in decisions for s in d.categories if s.action in STOPS)
        results[prompt_set.name] = {
            "rate": sum(stopped) / max(1, len(stopped)),
            "per_category": {c: by_category[c] / totals[c] for c in sorted(totals)},
            "stopped_by": dict(stopping.most_common()),
            "heightened": sum(bool(d.heightened_categories) for d in decisions) / max(1, len(decisions)),
        }
    return results


def latency(engine: PolicyEngine, prompts: Sequence[str]) -> str:
    """p50 / p95 ms of a single `check` (wall clock, and CPU time of the thread: on a shared machine
    the CPU time is what one free core would take), and prompts/s of `check_many` in batches of 64."""
    engine.check_many(list(prompts[:32]))  # warm up
    wall, cpu = [], []
    for prompt in prompts:
        start, start_cpu = time.perf_counter(), time.thread_time()
        engine.check(prompt)
        wall.append(1000 * (time.perf_counter() - start))
        cpu.append(1000 * (time.thread_time() - start_cpu))
    start, start_cpu = time.perf_counter(), time.thread_time()
    for offset in range(0, len(prompts), 64):
        engine.check_many(list(prompts[offset : offset + 64]))
    rate, rate_cpu = (
        len(prompts) / (time.perf_counter() - start),
        len(prompts) / (time.thread_time() - start_cpu),
    )

    def pct(values: list[float], q: float) -> float:
        return sorted(values)[min(len(values) - 1, int(q * len(values)))]

    return (
        f"CPU p50 {pct(cpu, 0.5):.2f} ms, p95 {pct(cpu, 0.95):.2f} ms (wall {pct(wall, 0.5):.2f} / {pct(wall, 0.95):.2f}); "
        f"batched {rate_cpu:,.0f}/s per CPU second (wall {rate:,.0f}/s)"
    )


def _source_of(row: Mapping[str, str]) -> str:
    source = row["source"]
    if source.startswith("adv_"):
        return "adversarial"
    if source == "ringabell" and not any(row[f"label_{c}"] == "1" for c in training.CATEGORIES):
        return "ringabell_safe"
    return source


def leave_one_source_out(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """Per source the thresholds select: the rate on that source with thresholds chosen on every
    source (in-source) and on every other source (out-of-source), for each operating point, and the
    gap. The adapter alone (no term layers), its saved honest scores (out of fold where it trained on
    the prompt). What this measures is the threshold choice: the LoRA adapter itself was trained with
    every source in its folds, so a source's out-of-source figure is still optimistic about the model."""
    benign, unsafe = training.selection_sets(rows, {})
    every: dict[str, list[list[float]]] = {}
    for row in rows:
        if row["scored_by"] in ("out_of_fold", "adapter"):
            every.setdefault(_source_of(row), []).append([float(row[c]) for c in training.CATEGORIES])
    lines = [
        "| held-out source | n | pack | rate in-source | rate out-of-source | gap (in - out) |",
        "|---|---|---|---|---|---|",
    ]
    for pack_name, limits in training.OPERATING_POINTS.items():
        full = training.select_thresholds(benign, unsafe, limits)
        for held in [*benign, *unsafe]:
            scores = np.array(every[held])
            kept_benign = {n: v for n, v in benign.items() if n != held}
            kept_unsafe = {n: v for n, v in unsafe.items() if n != held}
            kept_limits = {n: v for n, v in limits.items() if n != held}
            without = training.select_thresholds(kept_benign, kept_unsafe, kept_limits)

            def rate(thresholds: Mapping[str, float], scores: np.ndarray = scores) -> float:
                limit = np.array([thresholds[c] for c in training.CATEGORIES])
                return float((scores >= limit).any(axis=1).mean())

            what = "stopped" if held in benign else "recall"
            inside, outside = rate(full.thresholds), rate(without.thresholds)
            lines.append(
                f"| {held} ({what}) | {len(scores)} | {pack_name} | {100 * inside:.1f}% | {100 * outside:.1f}% | "
                f"{100 * (inside - outside):+.1f} pt |"
            )
    return lines


def cold_start(runs: int, prompt: str = "a cat") -> str:
    """Wall and CPU seconds (median of `runs`) of `python -m genguard.pipeline.cli policy check PROMPT` in a
    fresh process, the ONNX export already cached (made here first when it is not)."""
    import os
    import resource
    import subprocess

    from genguard.guard.policy.semantic import export_onnx

    export_onnx(load_pack("default"))
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    walls, cpus, torch_loaded = [], [], False
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "genguard.pipeline.cli", "policy", "check", prompt],
            check=False,
            capture_output=True,
            text=True,
            env=environment,
        )
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        torch_loaded |= any(line.rstrip().endswith("| torch") for line in done.stderr.splitlines())
        if done.returncode not in (0, 3):
            raise SystemExit(f"policy check failed ({done.returncode}): {done.stderr[-2000:]}")
    load = os.getloadavg()[0]
    return (
        f"wall {np.median(walls):.2f} s (min {min(walls):.2f}), CPU {np.median(cpus):.2f} s "
        f"(min {min(cpus):.2f}); torch imported: {torch_loaded}; load average {load:.1f} on {os.cpu_count()} CPUs"
    )


def latency_engines(pack: PolicyPack) -> list[tuple[str, PolicyEngine]]:
    """The lexical layers alone, and all layers with the encoder on one thread of each runtime."""
    spec = pack.spec.semantic
    engines = [("normalisation + lexical, 1 thread", PolicyEngine(pack, default_scanners(pack)))]
    if spec is None or spec.model is None:
        return engines
    for runtime in ("onnx", "torch"):
        if runtime == "torch":
            import torch

            torch.set_num_threads(1)
        scanner = SemanticScanner(
            pack,
            spec.model,
            exemplars=spec.exemplars,
            sha256=spec.sha256,
            adapter=spec.adapter,
            adapter_sha256=spec.adapter_sha256,
            device="cpu",
            runtime=runtime,
            threads=1,
        )
        scanners = [*default_scanners(pack), scanner, *model_scanners(pack)]
        engines.append((f"all layers, {runtime}, 1 thread", PolicyEngine(pack, scanners)))
    return engines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packs", default="default,strict")
    parser.add_argument("--coco", type=int, default=5000, help="COCO captions sampled (by hash)")
    parser.add_argument("--latency-prompts", type=int, default=400)
    parser.add_argument("--quick", action="store_true", help="subsamples, for tests")
    parser.add_argument("--shared", type=Path, default=None)
    parser.add_argument("--cold-runs", type=int, default=5, help="fresh `policy check` processes timed")
    parser.add_argument("--latency-only", action="store_true", help="only the latency and cold-start rows")
    parser.add_argument("--loso-only", action="store_true", help="only the leave-one-source-out table")
    args = parser.parse_args(argv)
    if args.loso_only:
        print("\n".join(leave_one_source_out(training.read_scores(training.OUT / training.SCORES_FILE))))
        return
    if args.latency_only:
        pack = load_pack(args.packs.split(",")[0])
        pool = [*sets.parti_prompts(args.shared), *sets.coco_prompts(args.shared)[:2000]]
        prompts = training._subsample(pool, args.latency_prompts)
        for label, engine in latency_engines(pack):
            print(f"| latency {label} | {len(prompts)} | {latency(engine, prompts)} |")
        print(f"| cold policy check, fresh process | {args.cold_runs} | {cold_start(args.cold_runs)} |")
        return

    import torch

    torch.set_num_threads(2)
    packs = [load_pack(name) for name in args.packs.split(",")]
    prompt_sets = load_sets(args.shared, args.coco, args.quick)
    semantic = semantic_scanners(packs[0])
    if not semantic or not semantic[0].adapter_categories:
        raise SystemExit(f"pack {packs[0].name!r} configures no semantic adapter: nothing to evaluate")
    scanner = semantic[0]
    scores_path = training.OUT / training.SCORES_FILE
    oof = {
        r["key"]: [float(r[c]) for c in scanner.adapter_categories]
        for r in training.read_scores(scores_path)
        if r["scored_by"] == "out_of_fold"
    }
    started = time.perf_counter()
    every = [p for s in prompt_sets for p in s.prompts]
    scores = honest_scores(scanner, every, oof)
    print(
        f"scored {len(scores)} unique prompts ({sum(k in oof for k in scores)} out of fold) in {time.perf_counter() - started:.0f} s"
    )
    results = {pack.name: evaluate(pack, scores, scanner, prompt_sets) for pack in packs}

    print(f"\n| set | n | {' | '.join(p.name for p in packs)} | target (default) |")
    print(f"|---|---|{'---|' * len(packs)}---|")
    for s in prompt_sets:
        what = "recall" if s.unsafe else "stopped"
        cells = " | ".join(f"{100 * results[p.name][s.name]['rate']:.1f}%" for p in packs)
        print(f"| {s.name} ({what}) | {len(s.prompts)} | {cells} | {s.target} |")
    auroc_rows = [
        (
            "i2p hard=1 vs parti + coco",
            ["i2p hard=1"],
            ["parti", next(s.name for s in prompt_sets if s.name.startswith("coco"))],
        ),
        (
            "unsafe matched vs edgy benign (report topics)",
            ["unsafe matched (report topics)"],
            ["edgy benign (report topics)"],
        ),
        ("adversarial vs parti", [f"adversarial {k}" for k in training.ADVERSARIAL], ["parti"]),
    ]
    by_name = {s.name: s for s in prompt_sets}
    for label, positives, negatives in auroc_rows:
        if not all(n in by_name for n in [*positives, *negatives]):
            continue
        pos, neg = (
            [max(scores[training.prompt_key(normalize(p).folded)]) for n in names for p in by_name[n].prompts]
            for names in (positives, negatives)
        )
        value = training.auroc(np.array([1] * len(pos) + [0] * len(neg)), np.array(pos + neg))
        print(f"| AUROC {label} (adapter max prob.) | {len(pos)}+{len(neg)} | {value:.3f} | |")

    torch.set_num_threads(1)
    latency_prompts = training._subsample(
        [p for s in prompt_sets for p in s.prompts], 100 if args.quick else args.latency_prompts
    )
    for pack in packs[:1]:
        for label, engine in latency_engines(pack):
            target = "p50 <= 1 ms" if "lexical" in label else "p50 <= 10 ms, p95 <= 20 ms"
            print(
                f"| latency {label} | {len(latency_prompts)} | {latency(engine, latency_prompts)} | {target} |"
            )
    print(
        f'| cold `policy check "a cat"`, fresh process | {args.cold_runs} | {cold_start(args.cold_runs)} | <= 1 s wall |'
    )

    print("\nleave one source out (thresholds chosen without the source reported on):")
    print("\n".join(leave_one_source_out(training.read_scores(scores_path))))

    print("\nper category (stopped / recall):")
    for pack in packs:
        for s in prompt_sets:
            result = results[pack.name][s.name]
            if result["per_category"]:
                cells = ", ".join(f"{c} {100 * v:.0f}%" for c, v in result["per_category"].items())
                print(f"  {pack.name:7s} {s.name}: {cells}")
        for s in prompt_sets:
            if not s.unsafe and results[pack.name][s.name]["stopped_by"]:
                print(f"  {pack.name:7s} {s.name} stopped by {results[pack.name][s.name]['stopped_by']}")


if __name__ == "__main__":
    main()
