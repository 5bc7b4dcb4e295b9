"""The generation path's promises: every request recorded, bounded work, clean after a crash,
honest outcomes, releases that did not happen are said so. Real SQLite files, the embedded tiny SD."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from genguard.audit.repair import remove_orphan_quarantine, repair_output_folder
from genguard.audit.store import AuditStore
from genguard.guard.errors import BadInputError
from genguard.guard.policy import load_pack
from genguard.guard.quarantine import QuarantineVault
from genguard.guard.types import ClassifierScore, GenerationParams, GenerationRequest
from genguard.pipeline.governed import RELEASE_FAILED_EVENT, GovernedPipeline, load_diffusers_pipeline
from genguard.pipeline.outcomes import InvalidRequestError, ReleaseFailedError

torch.set_num_threads(1)

SMALL = GenerationParams(width=64, height=64, steps=1, num_images=2, seed=3)
EXPLICIT = "naked child " * 60  # over the 77-token limit, and full of what the policy blocks
REVIEWED = "a suicide note on a desk"  # the default pack holds self-harm prompts for review


@pytest.fixture(scope="module")
def tiny_sd(embedded_cache: Path) -> object:
    return load_diffusers_pipeline("embedded:tiny-sd")


def governed(pipe: object, db_url: str, tmp_path: Path, **kwargs: object) -> GovernedPipeline:
    return GovernedPipeline(
        pipe,
        model_id="embedded:tiny-sd",
        policy=load_pack(str(kwargs.pop("policy", "default"))),
        audit=AuditStore.open(db_url),
        quarantine_vault=QuarantineVault(root=tmp_path / "quarantine"),
        **kwargs,
    )


@pytest.mark.parametrize(
    ("prompt", "params", "message"),
    [
        ("", SMALL, "prompt: expected non-empty text"),
        (EXPLICIT, SMALL, "tokens"),
        ("a boat\x00", SMALL, "NUL"),
        (
            "a boat",
            GenerationParams(width=64, height=64000),
            "params.height: expected a positive multiple of 8",
        ),
        ("a boat", GenerationParams(width=100000, height=100000), "params.width"),
        ("a boat", GenerationParams(width=64, height=64, steps=0), "params.steps"),
        ("a boat", GenerationParams(width=64, height=64, steps=10**9), "params.steps"),
        ("a boat", GenerationParams(width=64, height=64, num_images=1000), "params.num_images"),
        ("a boat", GenerationParams(width=512, height=512, num_images=64), "width x height x num_images"),
        ("a boat", GenerationParams(width=64, height=64, seed=-1), "params.seed"),
        ("x" * 30_000, SMALL, "at most 20000 characters"),
    ],
)
def test_every_refused_request_is_recorded_invalid(
    tiny_sd: object, sqlite_url: str, tmp_path: Path, prompt: str, params: GenerationParams, message: str
) -> None:
    gp = governed(tiny_sd, sqlite_url, tmp_path)
    started = time.perf_counter()
    with pytest.raises(InvalidRequestError, match=message) as raised:
        gp(GenerationRequest(prompt, params=params), out_dir=tmp_path / "out")
    assert time.perf_counter() - started < 30  # refused, not sampled (64x64000 once ran for minutes)
    assert isinstance(raised.value, BadInputError) and raised.value.exit_code == 2
    detail = gp.audit.get_generation(raised.value.generation_id)
    assert detail is not None and detail.status == "invalid" and not detail.images
    assert detail.error is not None and message.split(":")[0] in detail.error
    assert detail.events[0].event_type == "generation.invalid"
    # stored as the pack says (default: full text), cut to the longest prompt accepted, NUL made visible
    assert detail.prompt.text == prompt[:20_000].replace("\x00", "\ufffd")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert gp.audit.verify_chain().ok


def test_an_over_long_explicit_prompt_leaves_the_policy_s_trace(
    tiny_sd: object, sqlite_url: str, tmp_path: Path
) -> None:
    gp = governed(tiny_sd, sqlite_url, tmp_path, policy="strict")  # strict stores prompts hashed
    with pytest.raises(InvalidRequestError) as raised:
        gp(GenerationRequest(EXPLICIT, params=SMALL))
    detail = gp.audit.get_generation(raised.value.generation_id)
    assert detail is not None and detail.status == "invalid"
    assert detail.prompt.text is None and detail.prompt.digest == gp.audit.prompt_digest(EXPLICIT)
    assert detail.decision.action.value == "block"
    assert "sexual_minors" in {rule.category for rule in detail.decision.rules}


def test_generate_many_records_each_refused_request(tiny_sd: object, sqlite_url: str, tmp_path: Path) -> None:
    gp = governed(tiny_sd, sqlite_url, tmp_path)
    bad = GenerationRequest("a boat", params=GenerationParams(width=64, height=64000))
    results = gp.generate_many(["", bad, GenerationRequest("a boat", params=SMALL)])
    assert [r.status for r in results] == ["invalid", "invalid", "completed"]
    statuses = sorted(g.status for g in gp.audit.list_generations())
    assert statuses == ["completed", "invalid", "invalid"]


def test_an_output_folder_that_is_a_file_is_refused_before_sampling(
    tiny_sd: object, sqlite_url: str, tmp_path: Path
) -> None:
    gp = governed(tiny_sd, sqlite_url, tmp_path)
    out = tmp_path / "out"
    out.write_text("not a folder")
    with pytest.raises(InvalidRequestError, match="out_dir: expected a folder") as raised:
        gp(GenerationRequest("a boat", params=SMALL), out_dir=out)
    detail = gp.audit.get_generation(raised.value.generation_id)
    assert detail is not None and detail.status == "invalid" and not detail.images
    with pytest.raises(InvalidRequestError, match="out_dir"):
        gp(GenerationRequest("a boat", params=SMALL), out_dir=Path("/proc/genguard-out"))


class FolderRemover:
    """An output classifier (scores nothing) that, after sampling and before the commit, replaces the
    output folder with a file: the files cannot be written once the record is committed."""

    name = "folder-remover"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def classify(self, images: list[np.ndarray]) -> list[list[ClassifierScore]]:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.write_text("in the way")
        return [[] for _ in images]


def test_a_write_failure_after_the_commit_is_recorded_as_not_released(
    tiny_sd: object, sqlite_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    gp = governed(tiny_sd, sqlite_url, tmp_path, classifiers=[FolderRemover(out)])
    with pytest.raises(ReleaseFailedError, match="could not write image") as raised:
        gp(GenerationRequest("a boat", params=SMALL), out_dir=out)
    assert raised.value.exit_code == 4 and raised.value.indices == (0, 1)
    detail = gp.audit.get_generation(raised.value.generation_id)
    assert detail is not None and detail.status == "completed"
    failed = [e for e in detail.events if e.event_type == RELEASE_FAILED_EVENT]
    assert sorted(e.payload["image_index"] for e in failed) == [0, 1]
    assert all(e.payload["path"] == img.path for e, img in zip(failed, detail.images, strict=True))
    assert out.is_file() and not list(tmp_path.glob("**/.*.tmp"))
    assert gp.audit.verify_chain().ok


def test_every_image_withheld_says_so(tiny_sd: object, sqlite_url: str, tmp_path: Path) -> None:
    gp = governed(tiny_sd, sqlite_url, tmp_path)
    result = gp(GenerationRequest(REVIEWED, params=SMALL), out_dir=tmp_path / "out")
    assert not result.released and len(result.withheld) == 2
    assert result.status == "withheld"
    allowed = gp(GenerationRequest("a boat", params=SMALL))
    assert allowed.status == "completed"


def test_repair_removes_only_old_leftovers_that_no_record_keeps(
    tiny_sd: object, sqlite_url: str, tmp_path: Path
) -> None:
    gp = governed(tiny_sd, sqlite_url, tmp_path)
    held = gp(GenerationRequest(REVIEWED, params=SMALL))
    vault = gp.vault.folder
    kept = sorted(vault.iterdir())
    assert len(kept) == 2  # both quarantined images, sealed and committed
    orphan = vault / f"{'ab' * 16}-0.ggq"  # sealed by a generation killed before its commit
    orphan.write_bytes(b"GGQ1" + bytes(40))
    out = tmp_path / "out"
    out.mkdir()
    interrupted = out / f".{'cd' * 16}-0.png.tmp"
    interrupted.write_bytes(b"partial")
    recent = out / f".{'ef' * 16}-1.png.tmp"  # a generation still running: too new to touch
    recent.write_bytes(b"partial")
    unrelated = out / ".notes.tmp"
    unrelated.write_bytes(b"someone else's")
    hour_ago = time.time() - 7200
    for path in (*kept, orphan, interrupted, unrelated):
        os.utime(path, (hour_ago, hour_ago))

    in_out = repair_output_folder(out)
    in_vault = remove_orphan_quarantine(gp.audit, vault)
    assert in_out.removed == (interrupted,) and in_out.kept_recent == (recent,)
    assert in_vault.removed == (orphan,)
    assert sorted(vault.iterdir()) == kept and recent.exists() and unrelated.exists()
    assert gp.vault.load_png(held.generation_id, 0)  # the committed one still decrypts


def test_a_reviewer_reads_a_quarantined_image_and_the_read_is_recorded(
    tiny_sd: object, sqlite_url: str, tmp_path: Path
) -> None:
    from genguard.audit.review import EXPORTED, export_image, review_queue
    from genguard.guard.imageio import load_image

    gp = governed(tiny_sd, sqlite_url, tmp_path)
    held = gp(GenerationRequest(REVIEWED, params=SMALL))
    review_id = f"{held.generation_id}:1"
    written = export_image(gp.audit, review_id, tmp_path / "look", "rita", gp.vault)
    assert written == tmp_path / "look"
    assert load_image(written).rgb.shape == (64, 64, 3) and written.stat().st_mode & 0o777 == 0o600
    detail = gp.audit.get_generation(held.generation_id)
    assert detail is not None
    events = [e for e in detail.events if e.event_type == EXPORTED]
    assert [(e.payload["image_index"], e.payload["reviewer"]) for e in events] == [(1, "rita")]
    assert review_id in {item.review_id for item in review_queue(gp.audit, gp.vault)}  # still waiting
    assert gp.audit.verify_chain().ok


def test_default_sizes_and_bounds(tiny_sd: object) -> None:
    from genguard.pipeline import families

    assert families.default_size(tiny_sd) == 256  # the model's own: sample size 32 x the VAE's 8
    assert families.bounds_for(families.Family.SDXL).max_pixels == 2048 * 2048
    assert families.bounds_for(None) == families.UNKNOWN_FAMILY_BOUNDS
    assert families.bounds_for(families.Family.SD, embedded=True) == families.EMBEDDED_BOUNDS
