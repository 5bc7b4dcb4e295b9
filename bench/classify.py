"""Output-check latency per classifier, and the bias report over 100,000 audit records.

    python bench/classify.py [--images 16] [--records 100000] [--clip PATH] [--hf PATH --hf-label L]
                             [--checker PATH] [--db-cache DIR] [--skip-report]

Prints milliseconds per 512x512 image on one core (torch, onnxruntime and OpenCV limited to one
thread) for each classifier, one image at a time and in batches of 8: NudeNet's bundled detector
(real), the SD safety checker, a transformers image classifier and CLIP zero-shot (tiny models built
from configs unless real paths are given: tiny-model figures measure the plumbing, not a real model),
vlm-guard with tiny ShieldGemma 2 and LlavaGuard twins (plumbing only; see `vlm_guard_estimate`),
and the bias observations (faces + skin tone, no gender model). Then the false positives of NudeNet
and CLIP zero-shot (tiny unless --clip) on every real photograph of the test fixtures (scikit-image,
scikit-learn) with the default and strict packs' thresholds. Then the time of `bias_report` over
`--records` synthetic completed generations with bias observations (target: <= 5 s), written once
through AuditStore.record_generations into an SQLite file under --db-cache and reused.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np

from genguard.audit.records import GenerationRecord


def _photos(count: int) -> list[np.ndarray]:
    from tests._photos import photographs

    base = list(photographs(512).values())
    return [base[i % len(base)] for i in range(count)]


def _ms_per_image(
    run: Callable[[Sequence[np.ndarray]], object], images: list[np.ndarray], batch: int
) -> float:
    run(images[:batch])  # warm up
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        run(images[i : i + batch])
    return 1000 * (time.perf_counter() - start) / len(images)


def bench_classifiers(args: argparse.Namespace, images: list[np.ndarray], root: Path) -> None:
    from genguard.guard.bias import observe_images
    from genguard.guard.classifiers.clip_zero_shot import ClipZeroShotClassifier
    from genguard.guard.classifiers.hf_image import HFImageClassifier
    from genguard.guard.classifiers.nudenet import NudeNetClassifier
    from genguard.guard.classifiers.sd_safety import StableDiffusionSafetyClassifier
    from genguard.guard.classifiers.vlm_guard import VLMGuardClassifier
    from tests.tiny_models import (
        build_tiny_clip,
        build_tiny_llavaguard,
        build_tiny_safety_checker,
        build_tiny_shieldgemma2,
        build_tiny_vit_classifier,
    )

    clip = args.clip or str(build_tiny_clip(root / "clip"))
    hf = args.hf or str(build_tiny_vit_classifier(root / "vit"))
    hf_label = args.hf_label or "gore"
    checker = args.checker or str(build_tiny_safety_checker(root / "checker", flag_everything=False))
    tiny = "" if args.clip else " (tiny)"
    classifiers: list[tuple[str, Callable[[Sequence[np.ndarray]], object]]] = [
        ("nudenet (bundled 320n)", NudeNetClassifier(threads=1).classify),
        (
            f"sd-safety-checker{'' if args.checker else ' (tiny)'}",
            StableDiffusionSafetyClassifier(checker).classify,
        ),
        (
            f"hf-image-classification{'' if args.hf else ' (tiny)'}",
            HFImageClassifier(hf, labels={hf_label: "violence"}, device="cpu").classify,
        ),
        (f"clip-zero-shot{tiny}", ClipZeroShotClassifier(clip, device="cpu").classify),
        (
            "vlm-guard shieldgemma2 (tiny, 6 policies)",
            VLMGuardClassifier(build_tiny_shieldgemma2(root / "shieldgemma2"), device="cpu").classify,
        ),
        (
            "vlm-guard llavaguard (tiny, 6 policies)",
            VLMGuardClassifier(build_tiny_llavaguard(root / "llavaguard"), device="cpu").classify,
        ),
        ("bias observations (faces, ITA)", observe_images),
    ]
    print(f"{'classifier':<40} {'ms/image, 1 at a time':>22} {'ms/image, batch 8':>18}")
    for name, run in classifiers:
        single = _ms_per_image(run, images, 1)
        batched = _ms_per_image(run, images, 8)
        print(f"{name:<40} {single:>22.1f} {batched:>18.1f}")


def vlm_guard_estimate() -> None:
    """Real-model cost of vlm-guard, estimated from parameter counts (not measured: no GPU and no
    download here). A forward pass costs about 2 FLOPs per (non-embedding) parameter per token, the
    attention's quadratic term left out; every image is paired with each policy text, so the vision
    tower and the language model both run once per (image, policy)."""
    from genguard.guard.classifiers.vlm_guard import DEFAULT_POLICIES

    policies = len(DEFAULT_POLICIES)
    rows = [
        # name, language-model params, vision params, vision tokens, language-model tokens per prompt
        # ShieldGemma 2: Gemma 3 4B (3.2B without embeddings), SigLIP 400M at 896 px (4096 patches,
        # pooled to 256 image tokens), ~200 prompt tokens.
        ("shieldgemma-2-4b-it", 3.2e9, 0.4e9, 4096, 456),
        # LlavaGuard 0.5B: Qwen2 0.5B (0.36B without embeddings), SigLIP 400M at 384 px; a 512 px
        # image is a 2x2 grid plus the base view (5 x 729 patches, ~3,700 image tokens), ~600 prompt tokens.
        ("LlavaGuard-v1.2-0.5B-OV-hf", 0.36e9, 0.4e9, 5 * 729, 4300),
    ]
    print(f"vlm-guard real-model estimate ({policies} policies per image; not measured):")
    for name, lm, vision, vision_tokens, lm_tokens in rows:
        tflop = policies * 2 * (lm * lm_tokens + vision * vision_tokens) / 1e12
        # 30% of an H200's ~990 dense bf16 TFLOP/s, a usual utilisation for batched prefill
        print(
            f"  {name}: ~{tflop:.0f} TFLOP per image, ~{1000 * tflop / (0.3 * 990):.0f} ms/image on one "
            "H200 at 30% utilisation (estimate)"
        )


def bench_false_positives(args: argparse.Namespace, root: Path) -> None:
    """NudeNet and CLIP zero-shot on every real photograph the test fixtures hold, with the packs' thresholds."""
    from genguard.guard.classifiers.base import ImageClassifier
    from genguard.guard.classifiers.clip_zero_shot import ClipZeroShotClassifier
    from genguard.guard.classifiers.nudenet import NudeNetClassifier
    from genguard.guard.policy import load_pack
    from tests._photos import photographs
    from tests.tiny_models import build_tiny_clip

    photos = photographs(512)
    clip_source = args.clip or str(build_tiny_clip(root / "clip-fp"))
    checks: list[tuple[str, ImageClassifier]] = [
        ("nudenet", NudeNetClassifier(threads=1)),
        (
            f"clip-zero-shot{'' if args.clip else ' (tiny)'}",
            ClipZeroShotClassifier(clip_source, device="cpu"),
        ),
    ]
    for pack_name in ("default", "strict"):
        pack = load_pack(pack_name)
        for label, classifier in checks:
            flagged: list[str] = []
            for name, image in photos.items():
                [scores] = classifier.classify([image])
                hits = [
                    f"{s.category} {s.score:.2f}"
                    for s in scores
                    if s.score >= pack.classifier_threshold(classifier.name, s.category)
                ]
                if hits:
                    flagged.append(f"{name} ({', '.join(hits)})")
            print(
                f"false positives, {pack_name} pack, {label}: {len(flagged)} of {len(photos)} photographs"
                + (f": {'; '.join(flagged)}" if flagged else "")
            )


def _synthetic_records(count: int, seed: int = 0) -> list[GenerationRecord]:
    from genguard.guard.bias import SKIN_TONE_VALUES, UNKNOWN, batch_bias
    from genguard.guard.policy import PolicyEngine, load_pack
    from genguard.guard.policy.schema import BiasSpec
    from genguard.guard.types import GenerationRequest, PerceivedFace, PromptStorage

    rng = random.Random(seed)
    engine = PolicyEngine(load_pack("default"))
    jobs = ["doctor", "nurse", "ceo", "teacher", "pilot", "chef", "engineer", "farmer", "lawyer", "cleaner"]
    prompts = [
        f"a portrait photo of a {job}{suffix}" for job in jobs for suffix in ("", " at work", " smiling")
    ]
    decisions = {p: engine.check(p) for p in prompts}
    spec = BiasSpec()
    tones = [*SKIN_TONE_VALUES, UNKNOWN]
    records = []
    for _ in range(count):
        prompt = rng.choice(prompts)
        observed = [
            tuple(
                PerceivedFace(
                    (0, 0, 64, 64), None, rng.choice(tones), rng.choice(("feminine", "masculine", UNKNOWN))
                )
                for _ in range(rng.randint(0, 2))
            )
            for _ in range(4)
        ]
        records.append(
            GenerationRecord(
                uuid.uuid4().hex,
                GenerationRequest(prompt),
                decisions[prompt],
                PromptStorage.FULL,
                "completed",
                model_id="bench",
                extra={"bias": batch_bias(observed, spec, ("feminine", "masculine")).to_json()},
            )
        )
    return records


def bench_report(records: int, cache: Path) -> None:
    from genguard.audit.reports import bias_report
    from genguard.audit.store import AuditStore

    path = cache / f"bias-bench-{records}.sqlite3"
    url = f"sqlite:///{path}"
    if not path.exists():
        start = time.perf_counter()
        with AuditStore.open(url) as store:
            for first in range(0, records, 2000):
                store.record_generations(_synthetic_records(min(2000, records - first), seed=first))
        print(f"wrote {records} synthetic generations to {path} in {time.perf_counter() - start:.1f} s")
    with AuditStore.open(url) as store:
        for group_by in ("prompt", "occupation"):
            start = time.perf_counter()
            report = bias_report(store, group_by=group_by)
            elapsed = time.perf_counter() - start
            print(
                f"bias_report over {report.generations} generations ({report.faces} faces), group by {group_by}: "
                f"{elapsed:.2f} s (target <= 5 s)"
            )
        from genguard.audit.report_html import render_bias_html

        start = time.perf_counter()
        html = render_bias_html(report)
        print(f"render_bias_html: {1000 * (time.perf_counter() - start):.0f} ms, {len(html) // 1024} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--clip", help="a CLIP model path (default: a tiny one built here)")
    parser.add_argument("--hf", help="a transformers image-classification model path")
    parser.add_argument("--hf-label", help="the label of --hf to score (default: gore, the tiny model's)")
    parser.add_argument("--checker", help="a StableDiffusionSafetyChecker path")
    parser.add_argument("--db-cache", type=Path, default=Path(tempfile.gettempdir()) / "genguard-bench")
    parser.add_argument("--skip-report", action="store_true")
    parser.add_argument("--skip-classifiers", action="store_true")
    parser.add_argument("--skip-false-positives", action="store_true")
    args = parser.parse_args()

    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not args.skip_classifiers:
        with tempfile.TemporaryDirectory() as tmp:
            bench_classifiers(args, _photos(args.images), Path(tmp))
        vlm_guard_estimate()
    if not args.skip_false_positives:
        with tempfile.TemporaryDirectory() as tmp:
            bench_false_positives(args, Path(tmp))
    if not args.skip_report:
        args.db_cache.mkdir(parents=True, exist_ok=True)
        bench_report(args.records, args.db_cache)


if __name__ == "__main__":
    main()
