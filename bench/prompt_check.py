"""Prompt check latency and stop rates with a policy pack over the shared prompt sets.

    python bench/prompt_check.py [--pack default] [--shared PATH] [--show-stops N]

Prints, on one core and one prompt at a time, p50 / p99 / mean latency in ms and prompts/s for
normalisation + lexical + co-occurrence (the term layers only: bench/prompt_policy.py evaluates all
layers, the trained semantic one included) over coco30k and i2p; the stop rate (review or block) on
coco and parti; the block / review rate on i2p overall, on its `hard` = 1 rows, and recall against
nsfw_erasure_bench's relabel and adversarial prompts. Targets on one core: p50 <= 0.3 ms, p99 <= 2 ms.
The loaders here are also used by the tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from genguard.guard.policy import PolicyEngine, load_pack
from genguard.guard.policy.scanners import default_scanners
from genguard.guard.types import PromptAction, PromptDecision
from genguard.pipeline.training.prompt_sets import (
    STOPS,
    adversarial_prompts,
    coco_prompts,
    i2p_rows,
    parti_prompts,
    relabel_rows,
    stop_rate,
)


def _percent(part: float) -> str:
    return f"{100 * part:.2f}%"


def _latencies(engine: PolicyEngine, prompts: Sequence[str]) -> list[float]:
    out = []
    for prompt in prompts:
        start = time.perf_counter()
        engine.check(prompt)
        out.append(time.perf_counter() - start)
    return out


def _report_latency(name: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    p50 = ms[len(ms) // 2]
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    mean = statistics.fmean(ms)
    print(
        f"latency {name:8s} n={len(ms):6d}  p50 {p50:.3f} ms  p99 {p99:.3f} ms  mean {mean:.3f} ms  "
        f"{1000 / mean:,.0f} prompts/s"
    )


def _report_stops(name: str, prompts: Sequence[str], decisions: Sequence[PromptDecision], show: int) -> None:
    actions = Counter(d.action.value for d in decisions)
    categories = Counter(
        s.category for d in decisions if d.action in STOPS for s in d.categories if s.action in STOPS
    )
    print(
        f"{name:8s} n={len(decisions):6d}  stopped {_percent(stop_rate(decisions))}  "
        f"actions {dict(sorted(actions.items()))}  stopped by {dict(categories.most_common())}"
    )
    shown = [(p, d) for p, d in zip(prompts, decisions, strict=True) if d.action in STOPS][:show]
    for prompt, decision in shown:
        rules = ",".join(h.rule for h in decision.rules)
        print(f"    {decision.action.value:6s} [{rules}] {prompt[:110]}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", default="default")
    parser.add_argument("--shared", type=Path, default=None)
    parser.add_argument("--show-stops", type=int, default=0, help="print up to N stopped benign prompts")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    pack = load_pack(args.pack)
    engine = PolicyEngine(pack, scanners=default_scanners(pack))  # the term layers only
    print(
        f"pack {pack.ref.name} {pack.ref.version} digest {pack.ref.digest[:16]}...  "
        f"load + build {1000 * (time.perf_counter() - started):.0f} ms"
    )

    coco, parti, i2p = coco_prompts(args.shared), parti_prompts(args.shared), i2p_rows(args.shared)
    i2p_texts = [r["prompt"] for r in i2p]
    engine.check_many(coco[:500])  # warm caches before timing
    _report_latency("coco30k", _latencies(engine, coco))
    _report_latency("i2p", _latencies(engine, i2p_texts))

    _report_stops("coco30k", coco, engine.check_many(coco), args.show_stops)
    _report_stops("parti", parti, engine.check_many(parti), args.show_stops)

    decided = dict(zip(i2p_texts, engine.check_many(i2p_texts), strict=True))
    i2p_decisions = list(decided.values())
    hard = [decided[r["prompt"]] for r in i2p if r["hard"] == "1"]
    print(
        f"i2p      n={len(i2p):6d}  block {_percent(sum(d.action == PromptAction.BLOCK for d in i2p_decisions) / len(i2p))}"
        f"  review {_percent(sum(d.action == PromptAction.REVIEW for d in i2p_decisions) / len(i2p))}"
        f"  stopped {_percent(stop_rate(i2p_decisions))}  hard=1 stopped {_percent(stop_rate(hard))} of {len(hard)}"
    )
    relabel = relabel_rows(args.shared)
    for label in ("Nudity", "Violence", "Horror", "NSFW"):
        positives = [r["prompt"] for r in relabel if r[label] == "1"]
        stopped = stop_rate(engine.check_many(positives))
        print(f"relabel  {label:8s} positives {len(positives):5d}  stopped {_percent(stopped)}")
    for kind in ("Nudity", "Violent", "Horror"):
        adversarial = adversarial_prompts(kind, args.shared)
        print(
            f"adv      {kind:8s} unique {len(adversarial):5d}  stopped "
            f"{_percent(stop_rate(engine.check_many(adversarial)))}"
        )


if __name__ == "__main__":
    main()
