"""The semantic layer's language gate (`semantic.languages`): which prompts it calls foreign, and what
the default pack decides on them with and without the gate.

    python bench/prompt_language.py [--coco 3000] [--shared PATH]

English sets (from ../shared/data/prompts): a COCO sample, PartiPrompts, I2P, the obfuscated
adversarial sets; foreign: bench/foreign_prompts.tsv, 30 everyday benign prompts in 17 languages
written for this bench. Without the gate means the same pack with `semantic.languages` removed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genguard.guard.policy import PolicyEngine, PolicyPack, load_pack
from genguard.guard.types import PromptAction
from genguard.pipeline.training import prompt_sets as sets

FOREIGN = Path(__file__).resolve().parent / "foreign_prompts.tsv"


def without_gate(pack: PolicyPack, folder: Path) -> PolicyPack:
    data = pack.canonical_dict()
    data["semantic"] = {k: v for k, v in data["semantic"].items() if k != "languages"}
    path = folder / "pack-without-gate.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_pack(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--coco", type=int, default=3000)
    parser.add_argument("--shared", type=Path, default=None)
    args = parser.parse_args()
    pack = load_pack("default")
    gated = PolicyEngine(pack)
    with tempfile.TemporaryDirectory() as folder:
        plain = PolicyEngine(without_gate(pack, Path(folder)))
    foreign_rows = sets.rows(FOREIGN, "\t")
    prompt_sets = {
        "COCO": sets.coco_prompts(args.shared)[: args.coco],
        "PartiPrompts": sets.parti_prompts(args.shared),
        "I2P": [row["prompt"] for row in sets.i2p_rows(args.shared)],
        **{
            f"adversarial {k}": sets.adversarial_prompts(k, args.shared)
            for k in ("Nudity", "Violent", "Horror")
        },
        "foreign (17 languages)": [row["prompt"] for row in foreign_rows],
    }
    semantic = pack.spec.semantic
    print(f"pack {pack.name} {pack.ref.version}, semantic.languages = {semantic and semantic.languages}")
    for name, prompts in prompt_sets.items():
        start = time.perf_counter()
        called = [gated._foreign_language(gated._normalize(p)) for p in prompts]
        identify_ms = 1000 * (time.perf_counter() - start) / max(len(prompts), 1)
        with_gate = Counter(d.action for d in gated.check_many(prompts))
        without = Counter(d.action for d in plain.check_many(prompts))
        languages = Counter(c.code for c in called if c is not None)

        def counts(counter: Counter[PromptAction]) -> str:
            return " ".join(f"{a.value} {counter[a]}" for a in PromptAction)

        print(
            f"\n{name}: {len(prompts)} prompts, called foreign {sum(c is not None for c in called)} "
            f"({dict(languages.most_common(6))}), {identify_ms:.2f} ms each\n"
            f"  with the gate:    {counts(with_gate)}\n  without the gate: {counts(without)}"
        )
    missed = [
        f"{row['language']}: {row['prompt']}"
        for row, c in zip(foreign_rows, called, strict=True)
        if c is None
    ]
    print("\nforeign prompts not called foreign:", missed)


if __name__ == "__main__":
    main()
