"""Throughput on a GPU: raw diffusers vs genguard's governed `generate_many`, same pipeline, same run.

    python bench/gpu_throughput.py                          # CUDA: SD 1.5 at 512², SDXL at 1024², 25 steps, batch 1, 4, 8
    python bench/gpu_throughput.py --device cpu             # the same flow on embedded:tiny-sd / tiny-sdxl
    python bench/gpu_throughput.py --device cpu --quick     # a smoke run (tests/test_batching.py runs it)
    python bench/gpu_throughput.py --params-only            # parameter counts of the full-size configs

The full-size models are built from their published configs with random weights (sampling costs
the same whatever the weights' values, so nothing is downloaded): SD 1.5 = UNet 860M + VAE 84M +
CLIP ViT-L/14 text encoder 123M; SDXL = UNet 2.6B + VAE 84M + CLIP-L 123M + OpenCLIP bigG 695M.
Their parameter counts are printed next to the published ones.

raw       = per batch, `pipe(prompt=[...], latents=<noise made beforehand>, output_type="np")`:
            text encoding, sampling, VAE decode and the copy to numpy; nothing else.
governed  = `GovernedPipeline.generate_many(requests, batch_size=B, workers=W)` with everything on:
            prompt policy (default pack), an SD safety checker of CLIP ViT-L/14 shape on the same
            device, bias observations, latent watermark noise, pixel watermark, PNG encoding, C2PA
            signing, perceptual hash, the SQLite audit commit and the file writes.
Both make the same number of images (--rounds batches, after one warm-up batch each) from the
same prompts at the same size, alternating --repeats times; the medians are printed. Target (issue 7):
governed/raw >= 0.97 at batch 4 and 8 on a GPU.
"tail" is the governed run's time after its last pipeline call: governing, committing and writing the
last batch, which nothing overlaps. A service that keeps sampling pays it once, not per --rounds
batches, so more rounds give a ratio nearer the steady state; the wall-clock ratio printed includes
it, and "without the tail" is the same run's ratio with the tail taken off the governed time.
OpenCV runs one thread per call (--opencv-threads): the governance workers are the parallelism.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPTS = (
    "a lighthouse at dusk, oil painting",
    "a bowl of fruit on a wooden table, soft light",
    "a mountain lake with pine trees at sunrise",
    "a futuristic city street at night, neon signs, rain",
    "a small boat on a calm sea under a blue sky",
    "a robot reading a book in a cafe, illustration",
    "close up of a flower with drops of water, macro photography",
    "an ancient castle on a hill surrounded by fog",
)

# Published parameter counts (safetensors of runwayml/stable-diffusion-v1-5 and
# stabilityai/stable-diffusion-xl-base-1.0), to check the configs below against.
PUBLISHED = {
    "sd15.unet": 859_520_964,
    "sd15.vae": 83_653_863,
    "sd15.text_encoder": 123_060_480,
    "sdxl.unet": 2_567_463_684,
    "sdxl.vae": 83_653_863,
    "sdxl.text_encoder": 123_060_480,
    "sdxl.text_encoder_2": 694_659_840,
}

_SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
_SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
}
_CLIP_L: dict[str, Any] = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
           "hidden_act": "quick_gelu", "projection_dim": 768}  # fmt: skip
_CLIP_BIG_G: dict[str, Any] = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
               "hidden_act": "gelu", "projection_dim": 1280}  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str  # "sd15" / "sdxl" (full size) or an embedded model
    size: int


def full_size_components(name: str, device: str) -> dict[str, Any]:
    """The components of SD 1.5 or SDXL at full size, random weights, created directly on `device`."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from genguard.pipeline.embedded import _clip_tokenizer  # a CLIP BPE trained in code: no download

    tokenizer = _clip_tokenizer()
    ids: dict[str, Any] = {"vocab_size": 49408, "max_position_embeddings": 77, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        parts: dict[str, Any] = {
            "unet": UNet2DConditionModel(**(_SD15_UNET if name == "sd15" else _SDXL_UNET)),
            "vae": AutoencoderKL(
                **_VAE,
                sample_size=512 if name == "sd15" else 1024,
                scaling_factor=0.18215 if name == "sd15" else 0.13025,
                force_upcast=True,
            ),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**_CLIP_L, **ids)),
        }
        if name == "sdxl":
            parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**_CLIP_BIG_G, **ids))
    parts["scheduler"] = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
    )
    parts["tokenizer"] = tokenizer
    if name == "sdxl":
        parts["tokenizer_2"] = tokenizer
    return parts


def print_parameter_counts(names: list[str], device: str) -> None:
    for name in names:
        parts = full_size_components(name, device)
        for part, module in parts.items():
            if not hasattr(module, "parameters"):
                continue
            count = sum(p.numel() for p in module.parameters())
            published = PUBLISHED[f"{name}.{part}"]
            verdict = "matches" if count == published else f"DIFFERS by {count - published:+,}"
            print(f"  {name}.{part:15s} {count:>14,} parameters; published {published:>14,}: {verdict}")
        del parts


def build_pipeline(case: Case, device: str) -> Any:
    if case.name.startswith("embedded:"):
        from genguard.pipeline.governed import load_diffusers_pipeline

        return load_diffusers_pipeline(case.name, device=device)
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    parts = full_size_components(case.name, device)
    if case.name == "sd15":
        return StableDiffusionPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    return StableDiffusionXLPipeline(**parts, add_watermarker=False)


def build_safety_classifier(work: Path, device: str, full_size: bool) -> Any:
    """diffusers' SD safety checker (CLIP ViT-L/14 vision tower at full size), random weights, saved and
    loaded through genguard's classifier. Its untrained thresholds (1.0) flag nothing, so every image
    takes the full release path (watermark, signing)."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    from genguard.guard.classifiers.sd_safety import StableDiffusionSafetyClassifier

    try:
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor  # type: ignore[assignment]

    if full_size:
        vision = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                  "num_hidden_layers": 24, "image_size": 224, "patch_size": 14}  # fmt: skip
        projection, side = 768, 224
    else:
        vision = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                  "num_hidden_layers": 2, "image_size": 32, "patch_size": 4}  # fmt: skip
        projection, side = 16, 32
    text = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
    torch.manual_seed(1)
    checker = StableDiffusionSafetyChecker(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection)
    )
    path = work / "safety-checker"
    checker.save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    ).save_pretrained(path)
    return StableDiffusionSafetyClassifier(path, device=device)


def peak_gib(device: str) -> str:
    import torch

    if not device.startswith("cuda"):
        return "n/a"
    return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def pack_without_semantic(name: str, work: Path) -> Path:
    """A copy of the shipped pack `name` (with its term files) minus the `semantic:` section.

    The lent GPU machines cannot take the encoder wheel (88 MB, over the carry limit); the prompt policy
    is a per-request cost before sampling either way, so the figures say which pack ran.
    """
    import shutil

    import yaml

    from genguard import policies

    shipped = Path(policies.__file__).parent
    shutil.copytree(shipped / "terms", work / "terms", dirs_exist_ok=True)
    spec = yaml.safe_load((shipped / f"{name}.yaml").read_text(encoding="utf-8"))
    spec.pop("semantic", None)
    spec["name"] = f"{spec['name']}_without_semantic"
    path = work / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def released_count(results: list[Any]) -> int:
    """Images released by a `generate_many` run; stops the bench if any request failed, since a governed
    figure that skipped the release path would flatter genguard."""
    from genguard.pipeline.governed import GenerationResult

    failed = [r for r in results if not isinstance(r, GenerationResult)]
    if failed:
        raise SystemExit(f"{len(failed)} governed request(s) failed, first: {failed[0]}")
    return sum(len(r.released) for r in results)


def run_case(case: Case, args: argparse.Namespace, work: Path, classifier: Any) -> None:
    import torch

    from genguard.audit.store import AuditStore
    from genguard.guard.policy import load_pack
    from genguard.guard.types import GenerationParams, GenerationRequest
    from genguard.pipeline import families
    from genguard.pipeline.accel import accelerate
    from genguard.pipeline.governed import GovernedPipeline

    pipe = build_pipeline(case, args.device)
    pipe.set_progress_bar_config(disable=True)  # raw and governed alike: no per-step output
    acceleration = accelerate(pipe, device=args.device, dtype=args.dtype, compile=args.compile)
    print(
        f"{case.name}: {type(pipe).__name__} on {acceleration.device}, {acceleration.precision.value}, "
        f"attention {'/'.join(acceleration.attention)} (backend {acceleration.attention_backend}), "
        f"channels_last {acceleration.channels_last}, compiled {acceleration.compiled}, "
        f"VAE sliced {acceleration.vae_sliced}",
        flush=True,
    )
    slug = case.name.replace(":", "-")
    governed = GovernedPipeline(
        pipe,
        model_id=case.name,
        policy=load_pack(pack_without_semantic(args.policy, work) if args.without_semantic else args.policy),
        audit=AuditStore.open(f"sqlite:///{work / f'audit-{slug}.sqlite3'}"),
        classifiers=[classifier],
        device=acceleration.device,
    )
    policy = governed.policy.ref
    print(f"{case.name}: policy pack {policy.name} {policy.version} ({policy.digest[:16]})", flush=True)
    size, steps = case.size, args.steps
    for batch in args.batches:
        params = [
            GenerationParams(width=size, height=size, steps=steps, guidance_scale=7.5, num_images=1, seed=i)
            for i in range(batch * (args.rounds + 1))
        ]
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(params))]

        def raw(first: int, batch: int = batch, prompts: list[str] = prompts) -> None:
            noise = torch.cat(
                [
                    families.initial_noise(pipe, 1, size, size, torch.Generator("cpu").manual_seed(first + i))
                    for i in range(batch)
                ]
            ).to(acceleration.device, pipe.dtype)
            with torch.inference_mode():
                pipe(
                    prompt=prompts[first : first + batch],
                    height=size,
                    width=size,
                    num_inference_steps=steps,
                    guidance_scale=7.5,
                    latents=noise,
                    output_type="np",
                )

        requests = [GenerationRequest(p, params=q) for p, q in zip(prompts, params, strict=True)]

        def governed_run(
            workers: int, batch: int = batch, requests: list[GenerationRequest] = requests
        ) -> tuple[int, float]:
            """Images released, and the tail: seconds from the last pipeline call's end to the return."""
            last_sample = [0.0]

            def sampled(done: int, total: int) -> None:
                last_sample[0] = time.perf_counter()

            released = released_count(
                governed.generate_many(
                    requests[batch:],
                    out_dir=work / f"out-{slug}-{batch}",
                    batch_size=batch,
                    workers=workers,
                    queue_size=args.queue_size,
                    progress=sampled,
                )
            )
            return released, time.perf_counter() - last_sample[0]

        # warm-up (allocations, kernel choice, compilation; the classifier and watermark caches)
        raw(0)
        released_count(
            governed.generate_many(requests[:batch], out_dir=work / f"out-{slug}-warm", batch_size=batch)
        )
        images = batch * args.rounds
        for workers in args.workers:
            raw_rates, governed_rates, steady_rates, tails, released = [], [], [], [], 0
            raw_peak = governed_peak = "n/a"
            # raw and governed alternate, so that machine noise (a shared CPU) hits both alike
            for _ in range(args.repeats):
                reset_peak(args.device)
                start = time.perf_counter()
                for round_ in range(1, args.rounds + 1):
                    raw(round_ * batch)
                raw_rates.append(images / (time.perf_counter() - start))
                raw_peak = peak_gib(args.device)
                reset_peak(args.device)
                start = time.perf_counter()
                released, tail = governed_run(workers)
                elapsed = time.perf_counter() - start
                governed_rates.append(images / elapsed)
                steady_rates.append(images / (elapsed - tail))
                tails.append(tail)
                governed_peak = peak_gib(args.device)
            raw_rate, governed_rate = statistics.median(raw_rates), statistics.median(governed_rates)
            print(
                f"  {case.name} {size}x{size} steps {steps} batch {batch} workers {workers}: "
                f"raw images/s {raw_rate:.3f}  governed images/s {governed_rate:.3f}  "
                f"governed/raw {governed_rate / raw_rate:.3f}  "
                f"tail {statistics.median(tails):.2f} s  "
                f"without the tail {statistics.median(steady_rates) / raw_rate:.3f}  "
                f"peak GPU memory raw {raw_peak} / governed {governed_peak}  "
                f"released {released}/{images}  (medians of {args.repeats})",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument(
        "--models", default=None, help="comma list; default sd15,sdxl on CUDA, embedded tiny ones on CPU"
    )
    parser.add_argument("--batches", default=None, help="comma list of batch sizes (default 1,4,8; CPU 4,8)")
    parser.add_argument("--workers", default="4", help="comma list of governance worker counts")
    parser.add_argument("--queue-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="default 25 (CPU: 10)")
    parser.add_argument("--size", type=int, default=None, help="override the per-model size")
    parser.add_argument("--rounds", type=int, default=None, help="timed batches per case (default 6; CPU 2)")
    parser.add_argument("--repeats", type=int, default=None, help="alternating repeats (default 3; quick 1)")
    parser.add_argument("--policy", default="default", help="pack name or YAML path (default: default)")
    parser.add_argument(
        "--without-semantic",
        action="store_true",
        help="run the shipped --policy pack without its semantic layer (a machine without the encoder wheel)",
    )
    parser.add_argument("--dtype", default=None, help="fp16 / bf16 / fp32 (default: per family on CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU runs)")
    parser.add_argument(
        "--opencv-threads",
        type=int,
        default=1,
        help="OpenCV's threads per call (default 1: the governance workers are the parallelism; "
        "-1 leaves OpenCV's default, every core)",
    )
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: 64 px, 2 steps, batch 1 and 2")
    parser.add_argument(
        "--params-only", action="store_true", help="print the full-size parameter counts and stop"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import cv2

    if args.opencv_threads >= 0:
        cv2.setNumThreads(args.opencv_threads)
    work = Path(tempfile.mkdtemp(prefix="genguard-gpu-bench-"))
    os.environ.setdefault("GENGUARD_HOME", str(work / "home"))  # watermark key, development signing keys
    if args.params_only:
        print_parameter_counts(["sd15", "sdxl"], "meta")
        return
    cpu = args.device == "cpu"
    if not cpu and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA GPU here; use --device cpu for the tiny models")
    default_models = "embedded:tiny-sd,embedded:tiny-sdxl" if cpu else "sd15,sdxl"
    names = (args.models or default_models).split(",")
    args.batches = [
        int(b) for b in (args.batches or ("1,2" if args.quick else "4,8" if cpu else "1,4,8")).split(",")
    ]
    args.workers = [int(w) for w in ("1" if args.quick else args.workers).split(",")]
    args.steps = args.steps or (2 if args.quick else 10 if cpu else 25)
    args.rounds = args.rounds or (1 if args.quick else 2 if cpu else 6)
    args.repeats = args.repeats or (1 if args.quick else 3)
    default_size = {"sd15": 512, "sdxl": 1024}
    cases = [Case(n, args.size or (64 if args.quick else default_size.get(n, 256))) for n in names]

    import c2pa
    import diffusers
    import transformers

    device_name = (
        torch.cuda.get_device_name(args.device) if not cpu else f"CPU, {args.threads} torch thread(s)"
    )
    print(
        f"device {device_name}; torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"transformers {transformers.__version__}, c2pa-python {getattr(c2pa, '__version__', '?')}; "
        f"steps {args.steps}, rounds {args.rounds}, repeats {args.repeats}, queue {args.queue_size}, "
        f"OpenCV threads {cv2.getNumThreads()}",
        flush=True,
    )
    if not cpu:
        print_parameter_counts([c.name for c in cases if c.name in default_size], "meta")
    classifier = build_safety_classifier(work, args.device, full_size=not cpu)
    for case in cases:
        run_case(case, args, work, classifier)
        if not cpu:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
