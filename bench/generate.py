"""Governed vs raw diffusers on the same pipeline object, same seeds, same process.

    python bench/generate.py [--model embedded:tiny-sd] [--size 256] [--steps 10] [--batch 4] [--repeats 5]
                             [--policy default] [--no-checks] [--mode text|img2img|inpaint] [--strength 0.75]

Prints the median wall time of each and their ratio (target: governed / raw <= 1.10 on
embedded:tiny-sd, 256x256, 10 steps, batch 4, one thread). Raw is `pipe(...)` with the same initial
noise; governed adds the policy check, the pack's output checks (as from_pretrained builds them), pixel watermark, PNG encoding, perceptual hash,
the audit transaction and writing the files.

`--mode img2img` / `--mode inpaint` edit scikit-image's astronaut (resized to --size; inpainting repaints
the bottom quarter, away from her face) with a consent reference. Raw is the img2img / inpainting
pipeline built from the same components with the same input, strength and generators; governed adds
the input's checks (bounded decode, mask, face detection, its Content Credentials, our watermark and
the audit lookup), storing it encrypted, and the input as the output manifest's ingredient. The pack
is --policy with `edits.face_edit.action: allow`, so that img2img (which changes the face) is released
and the whole release path is timed rather than the review hold.

    python bench/generate.py --suite families [--size 256] [--steps 10] [--batch 2] [--repeats 3]
                             [--family-models embedded:tiny-kandinsky,embedded:tiny-if]
    python bench/generate.py --suite few-step [--size 256] [--batch 4] [--repeats 5]

`families`: the same ratio for the two-stage twins (embedded:tiny-kandinsky: prior + decoder;
embedded:tiny-if: stage I + stage II), raw being the family's own diffusers calls with the same noise
(`families.sample`). `few-step`: embedded:tiny-sd with the LCM scheduler (2 steps) and the Turbo
configuration (Euler ancestral, trailing, 1 step), guidance 0, where governance is a larger share of
the total: the ratio, then the median time of each Governor stage (policy, plan, sampling with the
watermarked noise, output checks; release split into the pixel watermark, the C2PA manifest signing and
the rest (output decision, bias observations, encoding, hashes); the audit commit with the file writes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded:tiny-sd")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--policy", default="default")
    parser.add_argument("--no-checks", action="store_true", help="run no output checks (the old setting)")
    parser.add_argument("--mode", choices=["text", "img2img", "inpaint"], default="text")
    parser.add_argument(
        "--strength", type=float, default=None, help="edits: default 0.75 img2img, 1.0 inpaint"
    )
    parser.add_argument(
        "--suite",
        choices=("model", "families", "few-step"),
        default="model",
        help="model: --model alone; families: Kandinsky and IF twins; few-step: LCM and Turbo on tiny-sd",
    )
    parser.add_argument(
        "--family-models",
        default="embedded:tiny-kandinsky,embedded:tiny-if",
        help="--suite families: the models, comma-separated",
    )
    args = parser.parse_args()
    if args.suite == "families":
        bench_families(args)
        return
    if args.suite == "few-step":
        bench_few_step(args)
        return

    import torch

    from genguard.audit.store import AuditStore
    from genguard.guard.classifiers.registry import build_pack_checks
    from genguard.guard.policy import PolicyPack, load_pack
    from genguard.guard.types import GenerationParams, GenerationRequest
    from genguard.pipeline import families
    from genguard.pipeline.embedded import is_embedded
    from genguard.pipeline.governed import GovernedPipeline, load_diffusers_pipeline

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="genguard-bench-"))
    pipe = load_diffusers_pipeline(args.model)
    pack = load_pack(args.policy)
    if args.mode != "text":  # the release path, not the review hold, for an edit that changes the face
        edits = pack.edits.model_copy(
            update={"face_edit": pack.edits.face_edit.model_copy(update={"action": "allow"})}
        )
        pack = PolicyPack.from_spec(pack.spec.model_copy(update={"edits": edits}))
    # The pack's output checks, as GovernedPipeline.from_pretrained builds them (fail closed).
    checks = build_pack_checks(pack, model=args.model, real_model=not is_embedded(args.model), pipe=pipe)
    if args.no_checks:
        checks = type(checks)((), ())
    checks.require()
    governed = GovernedPipeline(
        pipe,
        model_id=args.model,
        policy=pack,
        audit=AuditStore.open(f"sqlite:///{work / 'audit.sqlite3'}"),
        classifiers=checks.classifiers,
        checks=checks.checks,
    )
    params = GenerationParams(
        width=args.size, height=args.size, steps=args.steps, num_images=args.batch, seed=1234
    )
    prompt = "a lighthouse at dusk"

    def raw() -> None:
        noise = torch.cat(
            [
                families.initial_noise(
                    pipe, 1, args.size, args.size, torch.Generator("cpu").manual_seed(1234 + i)
                )
                for i in range(args.batch)
            ]
        )
        with torch.inference_mode():
            pipe(
                prompt=[prompt] * args.batch,
                num_inference_steps=args.steps,
                height=args.size,
                width=args.size,
                latents=noise,
                output_type="np",
            )

    def gov() -> None:
        governed(GenerationRequest(prompt, params=params), out_dir=work / "out")

    if args.mode != "text":
        raw, gov = edit_calls(args, pipe, governed, params, prompt, work)

    raw()  # warm-up: first calls allocate and compile kernels
    gov()
    raw_times: list[float] = []
    gov_times: list[float] = []
    for _ in range(args.repeats):  # interleaved so that machine noise hits both alike
        for fn, times in ((raw, raw_times), (gov, gov_times)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    raw_med, gov_med = statistics.median(raw_times), statistics.median(gov_times)
    print(
        f"model {args.model}  mode {args.mode}  {args.size}x{args.size}  steps {args.steps}  batch {args.batch}  "
        f"threads {args.threads}  repeats {args.repeats}"
    )
    ran = [c.classifier for c in checks.checks if c.ran]
    print(f"output checks ({args.policy} pack): {', '.join(ran) or 'none'}")
    print(f"raw diffusers   median {raw_med:.3f} s  ({args.batch / raw_med:.2f} images/s)")
    print(f"governed        median {gov_med:.3f} s  ({args.batch / gov_med:.2f} images/s)")
    print(f"ratio governed/raw  {gov_med / raw_med:.3f}   (target <= 1.10)")
    print(f"governance overhead per image  {(gov_med - raw_med) / args.batch * 1000:.1f} ms")


def edit_calls(
    args: argparse.Namespace, pipe: Any, governed: Any, params: Any, prompt: str, work: Path
) -> tuple[Callable[[], None], Callable[[], None]]:
    """The raw and governed calls of an edit (img2img or inpainting) of the astronaut."""
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data

    from genguard.guard.imageio import encode_image
    from genguard.guard.input_image import DEFAULT_STRENGTH
    from genguard.guard.types import GenerationRequest
    from genguard.pipeline.edit_input import edit_pipeline

    side = args.size
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.LANCZOS))
    mask = np.zeros((side, side), np.uint8)
    mask[side * 3 // 4 :, :] = 255
    strength = args.strength if args.strength is not None else DEFAULT_STRENGTH[args.mode]
    derived = edit_pipeline(pipe, args.mode)
    image_png, mask_png = encode_image(photo, "png"), encode_image(mask, "png")

    def raw() -> None:
        kwargs: dict[str, Any] = {}
        if args.mode == "inpaint":
            kwargs.update(mask_image=Image.fromarray(mask), height=side, width=side)
        with torch.inference_mode():
            derived(
                prompt=prompt,
                image=Image.fromarray(photo),
                strength=strength,
                num_inference_steps=args.steps,
                num_images_per_prompt=args.batch,
                generator=[torch.Generator("cpu").manual_seed(1234 + i) for i in range(args.batch)],
                output_type="np",
                **kwargs,
            )

    def gov() -> None:
        governed(
            GenerationRequest(
                prompt,
                params=params,
                init_image=image_png,
                mask=mask_png if args.mode == "inpaint" else None,
                strength=strength,
                consent="bench-consent",
            ),
            out_dir=work / "out",
        )

    return raw, gov


def _governed_pair(
    model: str, args: argparse.Namespace, work: Path, scheduler: str | None = None
) -> tuple[Any, Any]:
    """The loaded pipeline and a GovernedPipeline around it with the pack's output checks."""
    from genguard.audit.store import AuditStore
    from genguard.guard.classifiers.registry import build_pack_checks
    from genguard.guard.policy import load_pack
    from genguard.pipeline import families
    from genguard.pipeline.embedded import is_embedded
    from genguard.pipeline.governed import GovernedPipeline, load_diffusers_pipeline

    pipe = load_diffusers_pipeline(model)
    families.use_scheduler(pipe, scheduler)
    pack = load_pack(args.policy)
    checks = build_pack_checks(pack, model=model, real_model=not is_embedded(model), pipe=pipe)
    if args.no_checks:
        checks = type(checks)((), ())
    checks.require()
    governed = GovernedPipeline(
        pipe,
        model_id=model,
        policy=pack,
        audit=AuditStore.open(f"sqlite:///{work / 'audit.sqlite3'}"),
        classifiers=checks.classifiers,
        checks=checks.checks,
    )
    return pipe, governed


def _raw_call(pipe: Any, params: Any, prompt: str) -> Callable[[], None]:
    """The family's own diffusers call(s), same size, steps, guidance and per-image seeded noise."""
    import torch

    from genguard.pipeline import families

    family = families.detect_family(pipe)

    def raw() -> None:
        generators = [torch.Generator("cpu").manual_seed(1234 + i) for i in range(params.num_images)]
        noise = torch.cat(
            [families.initial_noise(pipe, 1, params.height, params.width, g) for g in generators]
        )
        kwargs = families.call_kwargs(
            family,
            prompt=prompt,
            negative_prompt="",
            height=params.height,
            width=params.width,
            steps=params.steps,
            guidance_scale=params.guidance_scale,
            latents=noise,
            num_images=params.num_images,
        )
        kwargs["generator"] = [torch.Generator("cpu").manual_seed(1234 + i) for i in range(params.num_images)]
        with torch.inference_mode():
            families.sample(family, pipe, kwargs)

    return raw


def _ratio(raw: Callable[[], None], gov: Callable[[], None], repeats: int) -> tuple[float, float]:
    raw()  # warm-up: first calls allocate and compile kernels
    gov()
    raw_times: list[float] = []
    gov_times: list[float] = []
    for _ in range(repeats):  # interleaved so that machine noise hits both alike
        for fn, times in ((raw, raw_times), (gov, gov_times)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(raw_times), statistics.median(gov_times)


def _print_ratio(label: str, batch: int, raw_med: float, gov_med: float) -> None:
    print(
        f"{label:<48} raw {raw_med:7.3f} s  governed {gov_med:7.3f} s  ratio {gov_med / raw_med:.3f}  "
        f"overhead/image {(gov_med - raw_med) / batch * 1000:6.1f} ms"
    )


def bench_families(args: argparse.Namespace) -> None:
    """Governed / raw on the two-stage twins (Kandinsky 2.2 and DeepFloyd IF)."""
    import torch

    from genguard.guard.types import GenerationParams, GenerationRequest

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="genguard-bench-"))
    prompt = "a lighthouse at dusk"
    params = GenerationParams(
        width=args.size,
        height=args.size,
        steps=args.steps,
        num_images=args.batch,
        seed=1234,
        guidance_scale=4.0,
    )
    print(
        f"{args.size}x{args.size}  steps {args.steps} (each stage)  batch {args.batch}  guidance 4  "
        f"threads {args.threads}  repeats {args.repeats}  policy {args.policy}"
    )
    for model in args.family_models.split(","):
        pipe, governed = _governed_pair(model, args, work)

        def gov(governed: Any = governed) -> None:
            governed(GenerationRequest(prompt, params=params), out_dir=work / "out")

        raw_med, gov_med = _ratio(_raw_call(pipe, params, prompt), gov, args.repeats)
        _print_ratio(model, args.batch, raw_med, gov_med)
    print("target: ratio <= 1.10")


class _TimedWatermarker:
    """The governor's watermarker, timing each embed (the bench's hook into the release stage)."""

    def __init__(self, inner: Any, spent: list[float]) -> None:
        self.inner = inner
        self.algorithm = inner.algorithm
        self.spent = spent

    def embed(self, image: Any, mark_id: int, key: bytes | None = None) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.embed(image, mark_id, key)
        finally:
            self.spent.append(time.perf_counter() - start)

    def detect(self, image: Any, key: bytes | None = None) -> Any:
        return self.inner.detect(image, key)


def _stage_split(governed: Any, request: Any, out_dir: Path, repeats: int) -> dict[str, float]:
    """Median seconds per Governor stage for one request, run stage by stage as `Governor.run` does."""
    governor = governed.governor
    marks: list[float] = []
    signs: list[float] = []
    governor.watermarker = _TimedWatermarker(governor.watermarker, marks)
    credentials = governor.content_credentials
    sign = credentials.sign

    def timed_sign(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return sign(*args, **kwargs)
        finally:
            signs.append(time.perf_counter() - start)

    credentials.sign = timed_sign  # this bench's instance only
    samples: dict[str, list[float]] = {
        name: []
        for name in (
            "policy (admit)",
            "plan",
            "sampling",
            "output checks",
            "watermark",
            "C2PA manifest (sign)",
            "decision, bias, encode, hashes",
            "audit commit + files",
        )
    }
    for run in range(repeats + 1):  # run 0 warms up
        marks.clear()
        signs.clear()
        times = {}
        start = time.perf_counter()
        admitted = governor.admit(request)
        times["policy (admit)"] = time.perf_counter() - start
        start = time.perf_counter()
        job = governor.plan(admitted)
        times["plan"] = time.perf_counter() - start
        start = time.perf_counter()
        sampled = governor.sample([job])
        times["sampling"] = time.perf_counter() - start
        start = time.perf_counter()
        (checked,) = governor.check(sampled)
        times["output checks"] = time.perf_counter() - start
        start = time.perf_counter()
        prepared = governor.release(checked, out_dir)
        release = time.perf_counter() - start
        times["watermark"] = sum(marks)
        times["C2PA manifest (sign)"] = sum(signs)
        times["decision, bias, encode, hashes"] = release - sum(marks) - sum(signs)
        start = time.perf_counter()
        governor.commit(prepared, out_dir)
        times["audit commit + files"] = time.perf_counter() - start
        if run > 0:
            for name, value in times.items():
                samples[name].append(value)
    governor.watermarker = governor.watermarker.inner
    del credentials.sign
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_few_step(args: argparse.Namespace) -> None:
    """LCM (2 steps) and Turbo (1 step) on tiny-sd: governed / raw, then each stage's share."""
    import torch

    from genguard.guard.types import GenerationParams, GenerationRequest

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="genguard-bench-"))
    prompt = "a lighthouse at dusk"
    print(
        f"embedded:tiny-sd  {args.size}x{args.size}  batch {args.batch}  guidance 0  threads {args.threads}  "
        f"repeats {args.repeats}  policy {args.policy}"
    )
    for scheduler, steps in (("lcm", 2), ("turbo", 1)):
        params = GenerationParams(
            width=args.size,
            height=args.size,
            steps=steps,
            num_images=args.batch,
            seed=1234,
            guidance_scale=0.0,
        )
        pipe, governed = _governed_pair("embedded:tiny-sd", args, work, scheduler=scheduler)

        def gov(governed: Any = governed, params: Any = params) -> None:
            governed(GenerationRequest(prompt, params=params), out_dir=work / "out")

        raw_med, gov_med = _ratio(_raw_call(pipe, params, prompt), gov, args.repeats)
        label = f"{scheduler} ({type(pipe.scheduler).__name__}, {steps} step{'s' if steps > 1 else ''})"
        _print_ratio(label, args.batch, raw_med, gov_med)
        split = _stage_split(governed, GenerationRequest(prompt, params=params), work / "out", args.repeats)
        total = sum(split.values())
        for name, seconds in split.items():
            print(f"    {name:<32} {seconds * 1000:8.1f} ms  {seconds / total:6.1%}")
    print("target: ratio <= 1.10")


if __name__ == "__main__":
    main()
