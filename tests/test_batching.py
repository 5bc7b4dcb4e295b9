"""generate_many (batched sampling, governance overlapped in a bounded worker pool) and the GPU path's choices.

Real tiny pipelines, real SQLite files, real signing; test doubles only through the Watermarker and
ImageClassifier seams.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from genguard.audit.store import AuditStore
from genguard.guard.errors import AuditUnavailableError, BadInputError, BlockedError
from genguard.guard.policy import load_pack
from genguard.guard.types import ClassifierScore, GenerationParams, GenerationRequest
from genguard.pipeline.accel import Precision, accelerate, choose_precision, load_accelerated, uses_sdpa
from genguard.pipeline.batching import FailedGeneration
from genguard.pipeline.families import Family
from genguard.pipeline.governed import GenerationResult, GovernedPipeline, load_diffusers_pipeline

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
SMALL = GenerationParams(width=64, height=64, steps=2, num_images=1, seed=11)
BLOCKED_PROMPT = "naked child on a bed"


class PassThroughWatermarker:
    """Leaves pixels alone, so that batched and single sampling can be compared pixel for pixel."""

    algorithm = "test.pass-through"

    def embed(self, image: np.ndarray, mark_id: int, key: bytes | None = None) -> np.ndarray:
        return image

    def detect(self, image: np.ndarray, key: bytes | None = None) -> object:
        raise NotImplementedError


class FailingOnCallWatermarker(PassThroughWatermarker):
    """Raises on its n-th embed (1-based): a worker failing for exactly one request."""

    def __init__(self, failing_call: int) -> None:
        self.failing_call = failing_call
        self.calls = 0
        self._lock = threading.Lock()

    def embed(self, image: np.ndarray, mark_id: int, key: bytes | None = None) -> np.ndarray:
        with self._lock:
            self.calls += 1
            call = self.calls
        if call == self.failing_call:
            raise RuntimeError("watermark embedder crashed")
        return image


class GatedWatermarker(PassThroughWatermarker):
    """Blocks every embed until the gate opens: a worker slower than the sampler."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def embed(self, image: np.ndarray, mark_id: int, key: bytes | None = None) -> np.ndarray:
        if not self.gate.wait(timeout=120):
            raise TimeoutError("gate never opened")
        return image


class RendezvousWatermarker(PassThroughWatermarker):
    """Each embed waits until `parties` embeds are under way at once (or times out and raises)."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=30)

    def embed(self, image: np.ndarray, mark_id: int, key: bytes | None = None) -> np.ndarray:
        self.barrier.wait()
        return image


class CountingClassifier:
    """Scores nothing; remembers the size of every batch it was given (one call per pipeline call)."""

    name = "counting"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def classify(self, images: Sequence[np.ndarray]) -> list[tuple[ClassifierScore, ...]]:
        self.batches.append(len(images))
        return [() for _ in images]


@pytest.fixture(scope="module")
def tiny_sd(embedded_cache: Path) -> object:
    return load_diffusers_pipeline("embedded:tiny-sd")


def governed(pipe: object, db_url: str, **kwargs: object) -> GovernedPipeline:
    options: dict[str, Any] = {"watermarker": PassThroughWatermarker(), "latent_watermark": False}
    options.update(kwargs)
    return GovernedPipeline(
        pipe,
        model_id="embedded:tiny-sd",
        policy=load_pack("default"),
        audit=AuditStore.open(db_url),
        **options,
    )


def request(prompt: str, **params: object) -> GenerationRequest:
    return GenerationRequest(prompt, params=replace(SMALL, **params))  # type: ignore[arg-type]


def commit_seq(gp: GovernedPipeline, generation_id: str) -> int:
    detail = gp.audit.get_generation(generation_id)
    assert detail is not None
    return min(event.seq for event in detail.events)


def test_an_image_sampled_in_a_batch_equals_it_sampled_alone(tiny_sd: object, sqlite_url: str) -> None:
    counting = CountingClassifier()
    gp = governed(tiny_sd, sqlite_url, classifiers=[counting])
    requests = [
        request("a red boat", seed=1, num_images=2),
        request("a lighthouse at dusk", seed=2),
        GenerationRequest("a bowl of fruit", negative_prompt="blurry", params=replace(SMALL, seed=3)),
    ]
    batched = gp.generate_many(requests, batch_size=8)
    assert counting.batches == [4]  # one pipeline call for the three requests
    for req, result in zip(requests, batched, strict=True):
        assert isinstance(result, GenerationResult)
        alone = gp(req)
        assert [img.index for img in result.released] == [img.index for img in alone.released]
        for mine, single in zip(result.released, alone.released, strict=True):
            # batched kernels may round differently on the CPU: equal within a grey level or two
            difference = np.abs(mine.pixels.astype(np.int16) - single.pixels.astype(np.int16))
            assert difference.max() <= 2 and difference.mean() < 0.05


@pytest.mark.parametrize("name", ["embedded:tiny-sdxl", "embedded:tiny-sd3", "embedded:tiny-flux"])
def test_other_families_sample_requests_together(name: str, sqlite_url: str, embedded_cache: Path) -> None:
    counting = CountingClassifier()
    gp = GovernedPipeline.from_pretrained(
        name,
        audit=sqlite_url,
        classifiers=[counting],
        watermarker=PassThroughWatermarker(),  # type: ignore[arg-type]
    )
    gp.latent_watermark = False
    requests = [request("a red boat", seed=4), request("a mountain lake", seed=5, num_images=2)]
    batched = gp.generate_many(requests)
    assert counting.batches == [3]
    for req, result in zip(requests, batched, strict=True):
        assert isinstance(result, GenerationResult)
        for mine, single in zip(result.released, gp(req).released, strict=True):
            difference = np.abs(mine.pixels.astype(np.int16) - single.pixels.astype(np.int16))
            assert difference.max() <= 2 and difference.mean() < 0.05


def test_results_and_records_keep_request_order_blocked_and_invalid_included(
    tiny_sd: object, sqlite_url: str, tmp_path: Path
) -> None:
    counting = CountingClassifier()
    gp = governed(tiny_sd, sqlite_url, classifiers=[counting])
    requests: list[GenerationRequest | str] = [
        request("a red boat"),
        request(BLOCKED_PROMPT),
        request("a small house", width=128),  # another size: sampled in another call
        "",  # invalid: refused before sampling, recorded as invalid
        request("a mountain lake", num_images=2),
        request("a lighthouse at dusk"),
    ]
    results = gp.generate_many(requests, out_dir=tmp_path / "out", batch_size=2, workers=2)
    assert [type(r).__name__ for r in results] == [
        "GenerationResult",
        "FailedGeneration",
        "GenerationResult",
        "FailedGeneration",
        "GenerationResult",
        "GenerationResult",
    ]
    blocked, invalid = results[1], results[3]
    assert isinstance(blocked, FailedGeneration) and blocked.status == "blocked"
    assert isinstance(blocked.error, BlockedError) and "sexual_minors" in str(blocked.error)
    assert isinstance(invalid, FailedGeneration) and invalid.status == "invalid"
    assert isinstance(invalid.error, BadInputError) and invalid.generation_id is not None
    refused = gp.audit.get_generation(invalid.generation_id)
    assert refused is not None and refused.status == "invalid" and not refused.images
    assert refused.error is not None and "prompt: expected non-empty text" in refused.error
    assert sorted(counting.batches) == [1, 1, 1, 2]  # 64 px: (boat), (lake x2), (lighthouse); 128 px: (house)
    recorded = [r for r in results if r.generation_id is not None]
    assert len(recorded) == len(requests)  # every request, the invalid one included
    seqs = [commit_seq(gp, r.generation_id) for r in recorded]  # type: ignore[arg-type]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    detail = gp.audit.get_generation(blocked.generation_id)  # type: ignore[arg-type]
    assert detail is not None and detail.status == "blocked" and not detail.images
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    expected = sorted(img.path.name for r in results if isinstance(r, GenerationResult) for img in r.released)  # type: ignore[union-attr]
    assert files == expected and len(files) == 5
    assert gp.audit.verify_chain().ok


def test_a_failing_worker_fails_only_its_request(tiny_sd: object, sqlite_url: str, tmp_path: Path) -> None:
    # one worker: embeds run in request order, so the third embed belongs to the third request
    gp = governed(tiny_sd, sqlite_url, watermarker=FailingOnCallWatermarker(failing_call=3))
    prompts = ["a red boat", "a small house", "a mountain lake", "a lighthouse", "a bowl of fruit"]
    out = tmp_path / "out"
    results = gp.generate_many([request(p) for p in prompts], out_dir=out, batch_size=2, workers=1)
    assert [isinstance(r, GenerationResult) for r in results] == [True, True, False, True, True]
    failed = results[2]
    assert isinstance(failed, FailedGeneration) and failed.status == "failed"
    assert "watermark embedder crashed" in str(failed.error)
    detail = gp.audit.get_generation(failed.generation_id)  # type: ignore[arg-type]
    assert detail is not None and detail.status == "failed" and detail.error is not None
    assert "watermark embedder crashed" in detail.error and not detail.images
    seqs = [commit_seq(gp, r.generation_id) for r in results]  # type: ignore[arg-type]
    assert seqs == sorted(seqs)
    assert len(list(out.iterdir())) == 4 and not list(out.glob(f"{failed.generation_id}*"))


def test_a_slow_worker_blocks_the_sampler_and_nothing_leaves_before_its_commit(
    tiny_sd: object, sqlite_url: str, tmp_path: Path
) -> None:
    gated = GatedWatermarker()
    gp = governed(tiny_sd, sqlite_url, watermarker=gated)
    out = tmp_path / "out"
    requests = [request(f"a boat number {i}", seed=i) for i in range(8)]
    sampled: list[int] = []
    outcome: list[object] = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            gp.generate_many(
                requests,
                out_dir=out,
                batch_size=1,
                workers=1,
                queue_size=1,
                progress=lambda done, total: sampled.append(done),
            )
        )
    )
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while len(sampled) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # ample time for the sampler to run ahead if nothing held it
        # one batch in the (stuck) worker, one in the queue, one in the sampler's hands: then it waits
        assert sampled == [1, 2, 3]
        assert gp.audit.list_generations(limit=100) == []
        assert not out.exists() or list(out.iterdir()) == []
    finally:
        gated.gate.set()
        runner.join(timeout=300)
    (results,) = outcome
    assert isinstance(results, list) and all(isinstance(r, GenerationResult) for r in results)
    assert sampled == list(range(1, 9)) and len(list(out.iterdir())) == 8


def test_database_down_fails_closed(tiny_sd: object, postgres_url: str, tmp_path: Path) -> None:
    import psycopg

    from tests.conftest import PG_HOST, PG_MAINTENANCE_DB, PG_PORT, PG_USER

    gp = governed(tiny_sd, postgres_url)
    # the server stays up, the database goes away under the open store: every commit now fails
    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_MAINTENANCE_DB, autocommit=True
    ) as admin:
        admin.execute(f'DROP DATABASE "{postgres_url.rsplit("/", 1)[1]}" WITH (FORCE)')
    threads_before = threading.active_count()
    out = tmp_path / "out"
    requests = [request("a red boat"), request(BLOCKED_PROMPT), request("a house", num_images=2)]
    with pytest.raises(AuditUnavailableError):
        gp.generate_many(requests, out_dir=out, batch_size=1)
    assert not out.exists() or list(out.iterdir()) == []
    assert threading.active_count() == threads_before  # workers, committer and noise thread all ended


def test_bad_batch_options_are_named(tiny_sd: object, sqlite_url: str) -> None:
    gp = governed(tiny_sd, sqlite_url)
    for name in ("batch_size", "workers", "queue_size"):
        with pytest.raises(BadInputError, match=name):
            gp.generate_many([request("a red boat")], **{name: 0})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("family", "device", "requested", "expected"),
    [
        (Family.SD, "cuda", None, Precision.FP16),
        (Family.SDXL, "cuda:1", None, Precision.FP16),
        (Family.SD3, "cuda", None, Precision.BF16),
        (Family.FLUX, "cuda", None, Precision.BF16),
        (Family.FLUX, "cpu", None, Precision.FP32),
        (Family.SD, "cpu", "bf16", Precision.BF16),
        (Family.SDXL, "cuda", "fp32", Precision.FP32),
    ],
)
def test_precision_per_family(
    family: Family, device: str, requested: str | None, expected: Precision
) -> None:
    assert choose_precision(family, device, requested) is expected


def test_unknown_precision_and_missing_gpu_are_named() -> None:
    with pytest.raises(BadInputError, match="dtype.*'half'"):
        choose_precision(Family.SD, "cuda", "half")
    if not torch.cuda.is_available():
        with pytest.raises(BadInputError, match="device.*cuda"):
            load_accelerated("embedded:tiny-sd", device="cuda")


def test_bf16_pipeline_on_the_cpu_is_governed(sqlite_url: str, embedded_cache: Path) -> None:
    gp = GovernedPipeline.from_pretrained(
        "embedded:tiny-sd",
        audit=sqlite_url,
        dtype="bf16",
        watermarker=PassThroughWatermarker(),  # type: ignore[arg-type]
    )
    assert gp.pipe.dtype == torch.bfloat16 and gp.pipe.text_encoder.dtype == torch.bfloat16
    assert gp.acceleration is not None and gp.acceleration.precision is Precision.BF16
    assert uses_sdpa(gp.acceleration)
    result = gp(request("a red boat", num_images=2))
    assert len(result.released) == 2 and result.released[0].pixels.dtype == np.uint8


def test_classic_attention_is_switched_to_sdpa_and_compile_traces(tiny_sd: object, sqlite_url: str) -> None:
    from diffusers.models.attention_processor import AttnProcessor

    pipe = load_diffusers_pipeline("embedded:tiny-sd")
    pipe.unet.set_attn_processor(AttnProcessor())
    reference = governed(tiny_sd, sqlite_url)(request("a red boat"))
    # "eager" runs TorchDynamo's graph capture without code generation: the option's plumbing,
    # cheap enough for a CPU test; inductor is what the GPU path uses
    acceleration = accelerate(pipe, compile=True, compile_backend="eager")
    assert uses_sdpa(acceleration) and acceleration.compiled
    compiled = governed(pipe, sqlite_url)(request("a red boat"))
    assert np.array_equal(compiled.released[0].pixels, reference.released[0].pixels)


def test_one_batch_is_governed_by_all_workers_at_once(tiny_sd: object, sqlite_url: str) -> None:
    # a single batch of 3 requests: governed one after another, the barrier of 3 would never fill
    gp = governed(tiny_sd, sqlite_url, watermarker=RendezvousWatermarker(3))
    requests = [request(f"a boat number {i}", seed=i) for i in range(3)]
    results = gp.generate_many(requests, batch_size=3, workers=3)
    assert all(isinstance(r, GenerationResult) and len(r.released) == 1 for r in results), results
    # and in request order, as always
    assert [commit_seq(gp, r.generation_id) for r in results] == sorted(
        commit_seq(gp, r.generation_id) for r in results
    )


def test_vae_slicing_decodes_a_batch_alike(tiny_sd: object, sqlite_url: str) -> None:
    # on by default on CUDA only; here asked for, to check that a sliced decode gives the same images
    reference = governed(tiny_sd, sqlite_url)(request("a red boat", num_images=2))
    pipe = load_diffusers_pipeline("embedded:tiny-sd")
    assert not accelerate(pipe).vae_sliced and not pipe.vae.use_slicing
    acceleration = accelerate(pipe, vae_slicing=True)
    assert acceleration.vae_sliced and pipe.vae.use_slicing
    sliced = governed(pipe, sqlite_url)(request("a red boat", num_images=2))
    for ours, theirs in zip(sliced.released, reference.released, strict=True):
        difference = np.abs(ours.pixels.astype(int) - theirs.pixels.astype(int))
        assert difference.max() <= 1, difference.max()


def test_gpu_throughput_bench_runs_on_the_cpu(tmp_path: Path, embedded_cache: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu_throughput.py"),
            *("--device", "cpu", "--quick", "--without-semantic"),
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**__import__("os").environ, "GENGUARD_HOME": str(tmp_path / "home")},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = completed.stdout
    for needed in (
        "raw images/s",
        "governed images/s",
        "governed/raw",
        "policy pack default_without_semantic",
    ):
        assert needed in out, out
    ratios = [
        float(line.split("governed/raw")[1].split()[0]) for line in out.splitlines() if "governed/raw" in line
    ]
    assert ratios and all(r > 0 for r in ratios)
