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
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
