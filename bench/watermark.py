"""Pixel watermark bench: quality, robustness per attack, false positives and speed, on real photographs.

    python bench/watermark.py [--quick] [--sizes 512,1024,256] [--record FILE]
    python bench/watermark.py --geometry [--sizes 512] [--keys 1] [--photos china,flower,...] [--pipeline-images 2]
    python bench/watermark.py --tilts [--sizes 512,1024] [--keys 1] [--photos china,flower,...]
    python bench/watermark.py --fp-trials 10000 [--workers 2]
    python bench/watermark.py --speed [--sizes 256,512,1024] [--keys 3] [--photos ...]

`--record FILE` also writes genguard's exact-read shares per attack, dated, for
`genguard report compliance` (audit.compliance; default file: GENGUARD_HOME/bench/watermark-robustness.json).
--geometry: the geometric families (`attacks.GEOMETRIC_ATTACKS`: rotations, symmetries, straightening,
stretches, crops, layouts, tilts), the detection speed of marked and unmarked images (CPU time, one
thread), and unmarked trials under those edits.
--tilts: the same for perspective tilts (`attacks.TILT_ATTACKS`: corners moved by 2-5 % of the side,
five seeds each, some with a rotation or saved as JPEG 85), with exact ids per tilt size, and unmarked
photographs under tilts.
--fp-trials N: N unmarked trials, each a fresh key and a random edit of a random unmarked photograph
(scikit-image and scikit-learn: the bench's 11 and more), its long side drawn from 128 to 768 px (edits may stretch it up to 2x): as is,
random tiles, crops, rotations, stretches, flips, JPEG, blur, noise, tone changes and chains of two;
prints how many read as marked and the time they took.
--speed: CPU time (one thread) of embedding, of detecting the marked image and of detecting the
unmarked photograph (which pays the whole search), median and max, per size.

Side by side with invisible-watermark's dwtDct and dwtDctSvd when that package is installed
(`pip install --no-deps invisible-watermark PyWavelets`; never a genguard dependency).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attacks import (
    ATTACKS,
    GEOMETRIC_ATTACKS,
    TILT_ATTACKS,
    Attack,
    blur,
    brightness,
    chain,
    contrast,
    crop,
    jpeg,
    noise,
    perspective,
    quarter_turns,
    rotate,
    stretch,
    vflip,
)

from genguard.guard.watermark import pixel
from tests._photos import photographs

cv2.setNumThreads(1)

Embed = Callable[[np.ndarray, int, bytes], np.ndarray]
Read = Callable[[np.ndarray, bytes], int | None]


def genguard_scheme() -> tuple[Embed, Read, int]:
    return (
        (lambda image, mark, key: pixel.embed(image, mark, key)),
        (lambda image, key: pixel.detect(image, key).mark_id),
        64,
    )


def anchor_schemes() -> dict[str, tuple[Embed, Read, int]]:
    try:
        from imwatermark import WatermarkDecoder, WatermarkEncoder
    except ImportError:
        print(
            "invisible-watermark not installed: anchors skipped (pip install --no-deps invisible-watermark PyWavelets)"
        )
        return {}
    schemes = {}
    for method in ("dwtDct", "dwtDctSvd"):

        def embed(image: np.ndarray, mark: int, key: bytes, method: str = method) -> np.ndarray:
            encoder = WatermarkEncoder()
            encoder.set_watermark("bytes", (mark >> 32).to_bytes(4, "big"))
            bgr = encoder.encode(np.ascontiguousarray(image[..., ::-1]), method)
            return np.ascontiguousarray(bgr[..., ::-1])

        def read(image: np.ndarray, key: bytes, method: str = method) -> int | None:
            decoder = WatermarkDecoder("bytes", 32)
            try:
                data = decoder.decode(np.ascontiguousarray(image[..., ::-1]), method)
            except Exception:  # noqa: BLE001 - the anchors raise on images they cannot read
                return None
            return int.from_bytes(data, "big") << 32

        schemes[method] = (embed, read, 32)
    return schemes


def bench_size(
    side: int, scheme_name: str, scheme: tuple[Embed, Read, int], photos: dict, keys: int
) -> dict[str, object]:
    embed, read, _ = scheme
    rng = np.random.default_rng(side)
    geometric_ok = side >= 512
    names = [n for n, (_, geometric) in ATTACKS.items() if geometric_ok or not geometric]
    hits = {n: 0 for n in names}
    misses: dict[str, Counter[str]] = {n: Counter() for n in names}
    trials = 0
    psnrs, ssims, t_embed, t_detect, cpu_embed, cpu_detect = [], [], [], [], [], []
    for photo, image in photos.items():
        for _ in range(keys):
            key, mark = rng.bytes(32), int(rng.integers(0, 2**63)) << 1 | int(rng.integers(0, 2))
            if scheme_name != "genguard":
                mark &= 0xFFFFFFFF << 32
            start, cpu = time.perf_counter(), time.process_time()
            out = embed(image, mark, key)
            t_embed.append(time.perf_counter() - start)
            cpu_embed.append(time.process_time() - cpu)
            psnrs.append(peak_signal_noise_ratio(image, out))
            ssims.append(structural_similarity(image, out, channel_axis=2, data_range=255))
            trials += 1
            for name in names:
                attacked = ATTACKS[name][0](out)
                start, cpu = time.perf_counter(), time.process_time()
                found = read(attacked, key)
                t_detect.append(time.perf_counter() - start)
                cpu_detect.append(time.process_time() - cpu)
                hits[name] += found == mark
                misses[name][photo] += found != mark
    print(
        f"\n[{scheme_name} @ {side}px] {len(photos)} photos x {keys} keys/ids = {trials}; "
        f"PSNR min {min(psnrs):.2f} mean {np.mean(psnrs):.2f} dB; SSIM min {min(ssims):.4f} mean {np.mean(ssims):.4f}; "
        f"embed {1000 * np.median(t_embed):.1f} ms median {1000 * np.percentile(t_embed, 95):.1f} ms p95, "
        f"detect {1000 * np.median(t_detect):.1f} ms median, "
        f"{1000 * np.percentile(t_detect, 95):.0f} ms p95, {1000 * max(t_detect):.0f} ms max (1 thread, wall); "
        f"CPU embed {1000 * np.median(cpu_embed):.1f} ms, detect {1000 * np.median(cpu_detect):.1f} ms median "
        f"(load average {os.getloadavg()[0]:.1f})"
    )
    for name in names:
        missed = ", ".join(f"{photo} x{count}" for photo, count in misses[name].most_common() if count)
        print(
            f"  {name:20s} exact id {100 * hits[name] / trials:6.1f}%"
            + (f"  (missed: {missed})" if missed else "")
        )
    exact = {name: hits[name] / trials for name in names}
    return {"trials": trials, "psnr_min_db": float(min(psnrs)), "exact_read": exact}


def false_positives(side: int, photos: dict, keys: int) -> None:
    rng = np.random.default_rng(99)
    variants = [lambda x: x, crop(0.8), jpeg(75), crop(0.6)]
    trials = marked = 0
    for image in photos.values():
        for _ in range(keys):
            key = rng.bytes(32)
            for variant in variants:
                trials += 1
                marked += pixel.detect(variant(image), key).marked
    bound = pixel._MAX_DECODES * pixel._LIST_SIZE * 2.0**-32
    print(
        f"\n[false positives @ {side}px] unmarked photos x keys x (as is, crop 80%, JPEG 75, crop 60%): "
        f"{marked}/{trials} read 'marked'; code bound per detection <= {bound:.1e}"
    )


def geometry(
    side: int, photos: dict[str, np.ndarray], keys: int, families: dict[str, Attack] = GEOMETRIC_ATTACKS
) -> None:
    """Exact ids under the geometric families, and the speed of marked and unmarked detection."""
    rng = np.random.default_rng(20 + side)
    hits: Counter[str] = Counter()
    misses: dict[str, list[str]] = {name: [] for name in families}
    embed_cpu: list[float] = []
    marked_cpu: list[float] = []
    unmarked_cpu: list[float] = []
    attacked_cpu: list[float] = []
    trials = 0
    for photo, image in photos.items():
        for _ in range(keys):
            key, mark = rng.bytes(32), int(rng.integers(0, 2**63))
            cpu = time.process_time()
            out = pixel.embed(image, mark, key)
            embed_cpu.append(time.process_time() - cpu)
            for copy, times in ((out, marked_cpu), (image, unmarked_cpu)):
                cpu = time.process_time()
                pixel.detect(copy, key)
                times.append(time.process_time() - cpu)
            trials += 1
            for name, attack in families.items():
                attacked = attack(out)
                cpu = time.process_time()
                found = pixel.detect(attacked, key).mark_id
                attacked_cpu.append(time.process_time() - cpu)
                hits[name] += found == mark
                if found != mark:
                    misses[name].append(photo)

    def ms(values: list[float]) -> str:
        return f"median {1000 * np.median(values):.0f} ms, max {1000 * max(values):.0f} ms"

    print(
        f"\n[geometry @ {side}px] {len(photos)} photos x {keys} keys = {trials}; CPU time, one thread "
        f"(load average {os.getloadavg()[0]:.1f}): embed {ms(embed_cpu)}; detect marked {ms(marked_cpu)}, "
        f"unmarked {ms(unmarked_cpu)}, geometrically edited {ms(attacked_cpu)}"
    )
    for name in families:
        missed = ", ".join(misses[name])
        print(
            f"  {name:22s} exact id {100 * hits[name] / trials:6.1f}%"
            + (f"  (missed: {missed})" if missed else "")
        )
    if families is TILT_ATTACKS:
        groups: dict[str, list[str]] = {}
        for name in families:
            groups.setdefault(name.split("/")[0] if "+" not in name else "combined", []).append(name)
        for group, names in groups.items():
            read = sum(hits[name] for name in names)
            print(f"  {group:22s} {read}/{trials * len(names)} exact ids")


def speed(side: int, photos: dict[str, np.ndarray], keys: int) -> None:
    """CPU time of embed, marked detection and unmarked detection, each photo with `keys` keys."""
    rng = np.random.default_rng(40 + side)
    times: dict[str, list[float]] = {"embed": [], "detect marked": [], "detect unmarked": []}
    pixel.embed(next(iter(photos.values())), 1, rng.bytes(32))  # first-call costs (layout, FFT plans)
    misread = 0
    for image in photos.values():
        for _ in range(keys):
            key, mark = rng.bytes(32), int(rng.integers(0, 2**63))
            cpu = time.process_time()
            out = pixel.embed(image, mark, key)
            times["embed"].append(time.process_time() - cpu)
            for copy, name, expected in ((out, "detect marked", mark), (image, "detect unmarked", None)):
                cpu = time.process_time()
                found = pixel.detect(copy, key).mark_id
                times[name].append(time.process_time() - cpu)
                misread += found != expected
    figures = "; ".join(
        f"{name} median {1000 * np.median(values):.1f} ms, max {1000 * max(values):.1f} ms"
        for name, values in times.items()
    )
    print(
        f"[speed @ {side}px] {len(photos)} photos x {keys} keys, CPU time, one thread (load average "
        f"{os.getloadavg()[0]:.1f}): {figures}; misread {misread}",
        flush=True,
    )


def false_positives_geometric(
    side: int, photos: dict[str, np.ndarray], keys: int, tilts: bool = False
) -> None:
    """Unmarked photos under edits that make the detector search hardest (rotation, stretch; or tilts)."""
    rng = np.random.default_rng(98)
    if tilts:
        variants = [
            perspective(0.02, 7),
            perspective(0.03, 8),
            perspective(0.05, 9),
            chain(rotate(3.0), perspective(0.04, 10)),
        ]
    else:
        variants = [rotate(10.0), rotate(-33.0), stretch(0.8, 1.0), crop(0.5)]
    trials = marked = 0
    for image in photos.values():
        for _ in range(keys):
            key = rng.bytes(32)
            for variant in variants:
                trials += 1
                marked += pixel.detect(variant(image), key).marked
    edits = "tilt 2%, 3%, 5%, rotate 3 + tilt 4%" if tilts else "rotate 10, rotate -33, width 0.8, crop 50%"
    print(
        f"[false positives @ {side}px, geometric] unmarked photos x keys x ({edits}): {marked}/{trials} read 'marked'"
    )


def _unmarked_sources() -> list[np.ndarray]:
    """Unmarked RGB photographs and scans: the bench's 11 (squared, 512 px) and scikit-image's images
    that ship offline, at their own size (the photographs among them once more, uncropped)."""
    from skimage import data

    sources = list(photographs(512).values())
    extra = ("cat", "coins", "page", "text", "brick", "grass", "gravel", "moon", "colorwheel", "logo", "horse",
             "clock", "coffee", "chelsea", "camera", "astronaut", "rocket", "retina", "hubble_deep_field",
             "immunohistochemistry", "cell", "microaneurysms")  # fmt: skip
    for name in extra:
        image = np.asarray(getattr(data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = np.dstack([image] * 3)
        sources.append(np.ascontiguousarray(image[..., :3]))
    return sources


def _fp_edit(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A random unmarked copy: resized to a random size, a random tile or edit, sometimes two."""
    side = int(rng.integers(128, 769))
    h, w = image.shape[:2]
    factor = side / max(h, w)
    out = cv2.resize(image, (max(64, round(w * factor)), max(64, round(h * factor))),
                     interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)  # fmt: skip

    def tile(x: np.ndarray) -> np.ndarray:
        th, tw = int(rng.integers(64, x.shape[0] + 1)), int(rng.integers(64, x.shape[1] + 1))
        top, left = int(rng.integers(0, x.shape[0] - th + 1)), int(rng.integers(0, x.shape[1] - tw + 1))
        return np.ascontiguousarray(x[top : top + th, left : left + tw])

    edits: list[Callable[[np.ndarray], np.ndarray]] = [
        lambda x: x, tile, tile, crop(float(rng.uniform(0.4, 0.95))), rotate(float(rng.uniform(-180, 180))),
        stretch(float(rng.uniform(0.5, 2.0)), float(rng.uniform(0.5, 2.0))), jpeg(int(rng.integers(10, 95))),
        vflip, quarter_turns(int(rng.integers(1, 4))), blur(float(rng.uniform(0.5, 2.5))),
        noise(float(rng.uniform(2, 12)) / 255, seed=int(rng.integers(1 << 30))),
        brightness(float(rng.uniform(0.6, 1.4))), contrast(float(rng.uniform(0.6, 1.4))),
        perspective(float(rng.uniform(0.01, 0.06)), seed=int(rng.integers(1 << 30))),
    ]  # fmt: skip
    for _ in range(int(rng.integers(1, 3))):
        out = edits[int(rng.integers(len(edits)))](out)
        if min(out.shape[:2]) < 64:
            out = cv2.resize(out, (max(64, out.shape[1]), max(64, out.shape[0])))
    return out


def _fp_chunk(args: tuple[int, int]) -> tuple[int, int, float, list[float], list[str]]:
    """Trials [start, start + count) (seeded by their index): (trials, read as marked, CPU seconds, per
    trial CPU seconds, descriptions of any marked read)."""
    start, count = args
    cv2.setNumThreads(1)
    sources = _unmarked_sources()
    marked, times, found = 0, [], []
    for index in range(start, start + count):
        rng = np.random.default_rng([2026, index])
        source = int(rng.integers(len(sources)))
        copy = _fp_edit(rng, sources[source])
        key = rng.bytes(32)
        cpu = time.process_time()
        detection = pixel.detect(copy, key)
        times.append(time.process_time() - cpu)
        if detection.marked:
            marked += 1
            found.append(f"trial {index}: source {source}, {copy.shape}, id {detection.mark_id}")
    return count, marked, sum(times), times, found


def fp_trials(trials: int, workers: int) -> None:
    """`trials` unmarked trials (see the module's docstring), in `workers` processes."""
    chunk = 50
    jobs = [(start, min(chunk, trials - start)) for start in range(0, trials, chunk)]
    wall = time.perf_counter()
    results = []

    def progress(result: tuple[int, int, float, list[float], list[str]]) -> None:
        results.append(result)
        done, marked = sum(r[0] for r in results), sum(r[1] for r in results)
        print(f"  {done} trials, {marked} read as marked, {time.perf_counter() - wall:.0f} s", flush=True)

    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for result in pool.imap_unordered(_fp_chunk, jobs):
                progress(result)
    else:
        for job in jobs:
            progress(_fp_chunk(job))
    wall = time.perf_counter() - wall
    done = sum(r[0] for r in results)
    marked = sum(r[1] for r in results)
    times = [t for r in results for t in r[3]]
    print(
        f"\n[false-positive trials] {done} unmarked trials ({len(_unmarked_sources())} images, long side "
        f"128-768 px, tiles, crops, rotations, stretches, flips, tilts, JPEG, blur, noise, tone; a "
        f"fresh key each): {marked} read as marked; CPU {sum(times):.0f} s in all, per trial median "
        f"{1000 * np.median(times):.0f} ms, p95 {1000 * np.percentile(times, 95):.0f} ms; wall {wall:.0f} s "
        f"with {workers} process(es) (load average {os.getloadavg()[0]:.1f}); code bound per detection "
        f"<= {pixel._MAX_DECODES * pixel._LIST_SIZE * 2.0**-32:.1e}"
    )
    for line in (f for r in results for f in r[4]):
        print("  MARKED:", line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer photos and keys")
    parser.add_argument("--sizes", default="512,1024,256")
    parser.add_argument("--no-anchors", action="store_true")
    parser.add_argument("--keys", type=int, default=3, help="keys (and ids) per photo")
    parser.add_argument("--fp-keys", type=int, default=25, help="keys per unmarked photo and variant")
    parser.add_argument("--record", type=Path, default=None, help="write genguard's figures here (JSON)")
    parser.add_argument("--geometry", action="store_true", help="the geometric families and speed only")
    parser.add_argument("--tilts", action="store_true", help="perspective tilts only")
    parser.add_argument("--photos", default="", help="comma-separated photo names (default: all)")
    parser.add_argument("--fp-trials", type=int, default=0, help="run only this many unmarked trials")
    parser.add_argument("--workers", type=int, default=1, help="processes for --fp-trials")
    parser.add_argument("--speed", action="store_true", help="embed and detection CPU time only")
    parser.add_argument(
        "--pipeline-images",
        type=int,
        default=0,
        help="--geometry: also this many images of each embedded tiny pipeline (tiny-sd, tiny-sdxl)",
    )
    args = parser.parse_args()
    if args.speed:
        chosen_photos = tuple(args.photos.split(",")) if args.photos else None
        for side in [int(s) for s in args.sizes.split(",")]:
            speed(side, photographs(side, chosen_photos), args.keys)
        return
    if args.fp_trials:
        fp_trials(args.fp_trials, args.workers)
        return
    recorded: dict[str, object] = {}
    chosen = tuple(args.photos.split(",")) if args.photos else None
    if args.geometry or args.tilts:
        for side in [int(s) for s in args.sizes.split(",")]:
            photos = photographs(side, chosen)
            if args.pipeline_images:
                from pipeline_images import pipeline_images

                photos.update(pipeline_images(side, per_model=args.pipeline_images))
            geometry(side, photos, args.keys, TILT_ATTACKS if args.tilts else GEOMETRIC_ATTACKS)
            false_positives_geometric(side, photos, args.fp_keys, tilts=args.tilts)
        return
    quick_names = ("astronaut", "camera", "coffee", "rocket")
    keys = 1 if args.quick else args.keys
    schemes = {"genguard": genguard_scheme()}
    if not args.no_anchors:
        schemes.update(anchor_schemes())
    for side in [int(s) for s in args.sizes.split(",")]:
        photos = photographs(side, quick_names if args.quick else chosen)
        for name, scheme in schemes.items():
            figures = bench_size(side, name, scheme, photos, keys)
            if name == "genguard":
                recorded[str(side)] = figures
        false_positives(side, photos, 4 if args.quick else args.fp_keys)
    if args.record is not None:
        import datetime as dt
        import json

        from genguard.audit.compliance import ROBUSTNESS_FORMAT, installed_version

        args.record.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "format": ROBUSTNESS_FORMAT,
            "genguard_version": installed_version(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": "python bench/watermark.py " + " ".join(sys.argv[1:]),
            "sizes": recorded,
        }
        args.record.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"\nrecorded to {args.record}")


if __name__ == "__main__":
    main()
