"""Quarantine kept encrypted, the review queue and its decisions, end to end on the tiny pipeline."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from genguard.audit.review import approve, reject, review_queue, show
from genguard.audit.store import AuditStore
from genguard.audit.verify import Verdict, verify_image
from genguard.guard.errors import AuditUnavailableError, BadInputError, ImageInputError, NotFoundError
from genguard.guard.imageio import load_image
from genguard.guard.policy import load_pack
from genguard.guard.policy.pack import PolicyPack
from genguard.guard.provenance import ManifestState, read_manifest
from genguard.guard.quarantine import QuarantineVault, quarantine_key, seal, unseal
from genguard.guard.types import ClassifierScore, GenerationParams, GenerationRequest
from genguard.guard.watermark import detect
from genguard.pipeline.cli import cli
from genguard.pipeline.governed import GenerationResult, GovernedPipeline, load_diffusers_pipeline

torch.set_num_threads(1)


class FixedScores:
    """An ImageClassifier test double: every image scores `score` for `category`."""

    name = "fixed"

    def __init__(self, category: str, score: float) -> None:
        self.category, self.score = category, score

    def classify(self, images: Sequence[np.ndarray]) -> list[tuple[ClassifierScore, ...]]:
        return [(ClassifierScore(self.name, "test:fixed@v1", self.category, self.score),) for _ in images]


@pytest.fixture(scope="module")
def tiny_sd(embedded_cache: Path) -> object:
    return load_diffusers_pipeline("embedded:tiny-sd")


def pack(tmp_path: Path, keep: str = "encrypted") -> PolicyPack:
    data = load_pack("default").canonical_dict()
    data["image_checks"]["quarantine"] = {"keep": keep}
    path = tmp_path / f"pack-{keep}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_pack(path)


def generate(
    tiny_sd: object, url: str, policy: PolicyPack, size: int = 64, n: int = 2, **options: Any
) -> GenerationResult:
    # violence >= 0.7 is quarantined by the default pack
    gp = GovernedPipeline(
        tiny_sd, model_id="embedded:tiny-sd", policy=policy, audit=AuditStore.open(url),
        classifiers=[FixedScores("violence", 0.9)], **options,
    )  # fmt: skip
    params = GenerationParams(width=size, height=size, steps=2, num_images=n, seed=3)
    return gp(GenerationRequest("a quiet harbour", params=params, actor="alice"))


def test_vault_seals_with_aes_gcm_bound_to_the_image(tmp_path: Path, genguard_home: Path) -> None:
    key = quarantine_key()
    key_file = genguard_home / "keys" / "quarantine.key"
    assert len(key) == 32 and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert quarantine_key() == key  # created once
    blob = seal(b"png bytes", key, "g1", 0)
    assert b"png bytes" not in blob and unseal(blob, key, "g1", 0) == b"png bytes"
    with pytest.raises(ImageInputError, match="altered, moved from another image"):
        unseal(blob, key, "g1", 1)  # another image's name
    with pytest.raises(ImageInputError, match="altered"):
        unseal(blob[:-1] + bytes([blob[-1] ^ 1]), key, "g1", 0)
    with pytest.raises(BadInputError, match="generation_id"):
        QuarantineVault(tmp_path).path("../escape", 0)


def test_quarantined_images_are_kept_encrypted_and_queued(
    tiny_sd: object, sqlite_url: str, tmp_path: Path
) -> None:
    result = generate(tiny_sd, sqlite_url, pack(tmp_path))
    assert not result.released and [w.status for w in result.withheld] == ["quarantined", "quarantined"]
    vault = QuarantineVault()
    for withheld in result.withheld:
        blob = vault.path(result.generation_id, withheld.index).read_bytes()
        assert blob.startswith(b"GGQ1") and b"IHDR" not in blob  # encrypted, not a PNG
        png = vault.load_png(result.generation_id, withheld.index)
        assert hashlib.sha256(png).hexdigest() == withheld.sha256  # the very image recorded
    store = AuditStore.open(sqlite_url)
    detail = store.get_generation(result.generation_id)
    assert detail is not None and detail.extra["quarantine"] == {"keep": "encrypted", "kept": [0, 1]}
    assert detail.extra["bias"]["label"] == "perceived"
    queue = review_queue(store)
    assert [item.review_id for item in queue] == [f"{result.generation_id}:0", f"{result.generation_id}:1"]
    item = queue[0]
    assert item.kept and item.actor == "alice" and item.prompt == "a quiet harbour"
    assert item.flagged == (("violence", 0.7),) and item.scores[0].model_id == "test:fixed@v1"


def test_approve_releases_a_watermarked_file_after_its_record(
    tiny_sd: object, sqlite_url: str, tmp_path: Path
) -> None:
    result = generate(tiny_sd, sqlite_url, pack(tmp_path), size=512, n=1)
    store = AuditStore.open(sqlite_url)
    review_id = f"{result.generation_id}:0"
    outcome = approve(
        store, review_id, reviewer="rita", reason="harbour, no violence", out_dir=tmp_path / "out"
    )
    written = Path(str(outcome.decision.path))
    assert (
        written.exists()
        and hashlib.sha256(written.read_bytes()).hexdigest() == outcome.decision.released_sha256
    )
    assert detect(load_image(written).rgb).mark_id == result.withheld[0].mark_id
    manifest = read_manifest(written.read_bytes(), "image/png")  # signed like any released image
    assert manifest.state is ManifestState.TRUSTED, manifest.codes
    assert (manifest.generation_id, manifest.image_index) == (result.generation_id, 0)
    assert manifest.mark_id == result.withheld[0].mark_id
    report = verify_image(written.read_bytes(), store=store, record=False)
    assert report.verdict is Verdict.VERIFIED_ORIGINAL, report.summary
    decided = show(store, review_id)
    assert decided.decision is not None and decided.decision.reviewer == "rita"
    assert decided.decision.reason == "harbour, no violence" and decided.decision.decision == "approved"
    assert review_queue(store) == [] and not decided.kept  # the encrypted copy is gone once released
    detail = store.get_generation(result.generation_id)
    assert detail is not None
    events = [e for e in detail.events if e.event_type == "review.approved"]
    assert events[0].payload["reviewer"] == "rita" and events[0].payload["image_index"] == 0
    assert store.verify_chain().ok
    with pytest.raises(BadInputError, match="already approved by rita"):
        approve(store, review_id, reviewer="sam", out_dir=tmp_path / "again")


def test_reject_needs_a_reason_and_deletes_the_copy(tiny_sd: object, sqlite_url: str, tmp_path: Path) -> None:
    result = generate(tiny_sd, sqlite_url, pack(tmp_path))
    store = AuditStore.open(sqlite_url)
    review_id = f"{result.generation_id}:1"
    with pytest.raises(BadInputError, match="reason: expected why"):
        reject(store, review_id, reviewer="rita", reason="  ")
    with pytest.raises(BadInputError, match="reviewer: expected a name"):
        reject(store, review_id, reviewer="", reason="gore")
    outcome = reject(store, review_id, reviewer="rita", reason="gore in the water")
    assert outcome.decision.decision == "rejected" and outcome.decision.released_sha256 is None
    assert not QuarantineVault().path(result.generation_id, 1).exists()
    assert [item.index for item in review_queue(store)] == [0]


def test_not_kept_images_cannot_be_released(tiny_sd: object, sqlite_url: str, tmp_path: Path) -> None:
    result = generate(tiny_sd, sqlite_url, pack(tmp_path, keep="none"), n=1)
    store = AuditStore.open(sqlite_url)
    [item] = review_queue(store)
    assert not item.kept and not QuarantineVault().path(result.generation_id, 0).exists()
    with pytest.raises(NotFoundError, match="expected an encrypted copy"):
        approve(store, item.review_id, reviewer="rita", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert review_queue(store)[0].review_id == f"{result.generation_id}:0"  # still waiting: nothing recorded


def test_unknown_and_malformed_review_ids(sqlite_url: str) -> None:
    store = AuditStore.open(sqlite_url)
    with pytest.raises(BadInputError, match="expected GENERATION_ID:INDEX"):
        show(store, "not an id")
    with pytest.raises(NotFoundError, match="found none recorded"):
        show(store, "abc123:0")


def test_cli_review_commands(tiny_sd: object, sqlite_url: str, tmp_path: Path) -> None:
    result = generate(tiny_sd, sqlite_url, pack(tmp_path))
    runner = CliRunner()
    first, second = (f"{result.generation_id}:{i}" for i in (0, 1))
    listed = runner.invoke(cli, ["review", "list", "--db", sqlite_url])
    assert listed.exit_code == 0 and first in listed.output and "violence>=0.7" in listed.output
    shown = runner.invoke(cli, ["review", "show", first, "--db", sqlite_url])
    assert shown.exit_code == 0 and "a quiet harbour" in shown.output and "waiting" in shown.output
    out = tmp_path / "released"
    approved = runner.invoke(
        cli, ["review", "approve", first, "--db", sqlite_url, "--reviewer", "rita", "--out", str(out)]
    )
    assert approved.exit_code == 0, approved.output
    assert (out / f"{result.generation_id}-0.png").exists()
    no_reason = runner.invoke(cli, ["review", "reject", second, "--db", sqlite_url])
    assert no_reason.exit_code != 0 and "--reason" in no_reason.output
    rejected = runner.invoke(
        cli, ["review", "reject", second, "--db", sqlite_url, "--reason", "unsure"], env={"USER": "sam"}
    )
    assert rejected.exit_code == 0 and "by sam" in rejected.output
    assert "no images waiting" in runner.invoke(cli, ["review", "list", "--db", sqlite_url]).output


def test_no_kept_file_outlives_a_failed_commit(tiny_sd: object, tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite3"
    AuditStore.open(f"sqlite:///{db}")  # create it, then open it read-only: the commit fails
    store = AuditStore.open(f"sqlite:///file:{db}?mode=ro&uri=true", read_only=True)
    gp = GovernedPipeline(
        tiny_sd, model_id="embedded:tiny-sd", policy=pack(tmp_path), audit=store,
        classifiers=[FixedScores("violence", 0.9)],
    )  # fmt: skip
    with pytest.raises(AuditUnavailableError):
        gp(
            GenerationRequest(
                "a quiet harbour", params=GenerationParams(width=64, height=64, steps=2, seed=1)
            )
        )
    folder = QuarantineVault().folder
    assert folder.exists() and list(folder.glob("*.ggq")) == []  # sealed, then removed again


def test_an_approved_image_verifies_cleanly_and_a_leak_is_still_reported(
    tiny_sd: object, sqlite_url: str, tmp_path: Path
) -> None:
    result = generate(tiny_sd, sqlite_url, pack(tmp_path), size=512, n=2)
    store = AuditStore.open(sqlite_url)
    gid = result.generation_id
    leaked = QuarantineVault().load_png(gid, 1)  # copied out of the vault before any review
    outcome = approve(store, f"{gid}:0", reviewer="rita", reason="fine", out_dir=tmp_path / "out")
    written = Path(str(outcome.decision.path))
    assert outcome.decision.released_phash is not None

    report = verify_image(written.read_bytes(), store=store, name=str(written), record=False)
    assert report.verdict is Verdict.VERIFIED_ORIGINAL, report.summary
    assert report.record is not None and report.record.image_status == "approved" and report.record.released
    assert report.record.sha256 == outcome.decision.released_sha256 and report.record.phash_distance == 0
    assert report.record.approval_seq == outcome.decision.seq
    assert [str(ref) for ref in report.hashes.exact] == [f"{gid}/0"]
    assert {"manifest", "watermark", "sha256", "phash"} == {layer.value for layer in report.agreeing}
    assert not any("should not have left" in note or "named" in note for note in report.notes), report.notes
    assert any("approved by rita" in note for note in report.notes)
    shown = CliRunner().invoke(cli, ["verify", str(written), "--db", sqlite_url, "--no-record"])
    assert shown.exit_code == 0, shown.output
    assert f"sha256 matches: {gid}/0" in shown.output and "should not have left" not in shown.output

    leak = verify_image(leaked, store=store, name="leak.png", record=False)
    assert leak.record is not None and leak.record.image == report.record.image.__class__(gid, 1)
    assert leak.record.image_status == "quarantined" and not leak.record.released
    assert any("withheld, it should not have left" in note for note in leak.notes), leak.notes
    # the approved file's bytes do not make the other, still quarantined, image look approved
    assert leak.record.approval_seq is None


@pytest.mark.parametrize(("output_format", "mime_type"), [("jpeg", "image/jpeg"), ("webp", "image/webp")])
def test_approval_releases_in_the_recorded_format_and_signs(
    tiny_sd: object, sqlite_url: str, tmp_path: Path, output_format: str, mime_type: str
) -> None:
    result = generate(tiny_sd, sqlite_url, pack(tmp_path), size=256, n=1, output_format=output_format)
    store = AuditStore.open(sqlite_url)
    outcome = approve(store, f"{result.generation_id}:0", reviewer="rita", out_dir=tmp_path / "out")
    written = Path(str(outcome.decision.path))
    suffix = {"jpeg": ".jpg", "webp": ".webp"}[output_format]
    assert written.name == f"{result.generation_id}-0{suffix}" and written.exists()
    data = written.read_bytes()
    assert hashlib.sha256(data).hexdigest() == outcome.decision.released_sha256
    assert load_image(data).format == {"jpeg": "JPEG", "webp": "WEBP"}[output_format]
    manifest = read_manifest(data, mime_type)  # signed in its own format, not a PNG
    assert manifest.state is ManifestState.TRUSTED, manifest.codes
    assert (manifest.generation_id, manifest.mark_id) == (result.generation_id, result.withheld[0].mark_id)
    report = verify_image(data, store=store, record=False)
    assert report.verdict is Verdict.VERIFIED_ORIGINAL, report.summary


def test_approval_writes_a_sidecar_when_the_generation_did(
    tiny_sd: object, sqlite_url: str, tmp_path: Path
) -> None:
    result = generate(tiny_sd, sqlite_url, pack(tmp_path), size=256, n=1, sidecar=True)
    store = AuditStore.open(sqlite_url)
    outcome = approve(store, f"{result.generation_id}:0", reviewer="rita", out_dir=tmp_path / "out")
    written = Path(str(outcome.decision.path))
    sidecar = written.with_suffix(".c2pa")
    assert written.exists() and sidecar.exists()
    assert read_manifest(written.read_bytes(), "image/png").state is ManifestState.ABSENT
    manifest = read_manifest(written.read_bytes(), "image/png", sidecar=sidecar.read_bytes())
    assert manifest.state is ManifestState.TRUSTED, manifest.codes


class OtherWatermarker:
    """A Watermarker with another algorithm id (marks nothing): approval must refuse it."""

    algorithm = "test.other-mark/v1"

    def embed(self, image: np.ndarray, mark_id: int, key: bytes | None = None) -> np.ndarray:
        return image

    def detect(self, image: object, key: bytes | None = None) -> object:
        raise AssertionError("not used")


def test_approval_refuses_a_watermarker_other_than_the_recorded_one(
    tiny_sd: object, sqlite_url: str, tmp_path: Path
) -> None:
    result = generate(tiny_sd, sqlite_url, pack(tmp_path), n=1)
    store = AuditStore.open(sqlite_url)
    review_id = f"{result.generation_id}:0"
    with pytest.raises(
        BadInputError, match=r"watermarker: expected the algorithm recorded .*test.other-mark/v1"
    ):
        approve(
            store, review_id, reviewer="rita", out_dir=tmp_path / "out",
            watermarker=OtherWatermarker(),  # type: ignore[arg-type]
        )  # fmt: skip
    assert show(store, review_id).decision is None and not (tmp_path / "out").exists()  # nothing decided
