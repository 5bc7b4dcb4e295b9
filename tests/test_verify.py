"""`verify` on real photographs: real pixel watermarks, real c2pa signing with chains made here, real SQLite.

Each case releases photographs the way the pipeline does (watermark, encode, sign, record the signed
bytes' sha256 and the pixels' phash), then changes a copy the way the world does and checks the verdict
and the evidence of every layer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from genguard.audit.records import GenerationRecord, ImageRecord
from genguard.audit.store import AuditStore
from genguard.audit.verify import (
    Layer,
    UnreadableImage,
    Verdict,
    VerificationNotRecorded,
    VerificationReport,
    image_files,
    verify_image,
    verify_images,
)
from genguard.guard.errors import ImageInputError
from genguard.guard.imageio import encode_image
from genguard.guard.phash import perceptual_hash
from genguard.guard.provenance import ContentCredentials, LocalKeySigner, ManifestFacts, ManifestState
from genguard.guard.provenance.content_credentials import MIME_TYPES
from genguard.guard.provenance.keys import create_development_chain
from genguard.guard.types import (
    GenerationRequest,
    ImageAction,
    ImageVerdict,
    PolicyRef,
    PromptAction,
    PromptDecision,
    PromptStorage,
)
from genguard.guard.watermark.pixel import ALGORITHM, embed
from tests._photos import photographs

KEY = bytes(range(32))
POLICY = PolicyRef("default", "1.0.0", hashlib.sha256(b"default pack").hexdigest())
VERDICT = ImageVerdict(ImageAction.RELEASE, ())
Pixels = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Org:
    """A signing organisation: its credentials and the root that makes them trusted."""

    credentials: ContentCredentials
    anchors: bytes


def make_org(name: str, not_after: dt.datetime | None = None) -> Org:
    chain = create_development_chain(organisation=name, not_after=not_after)
    return Org(ContentCredentials(LocalKeySigner(chain.signer_key_pem, chain.chain_pem)), chain.root_pem)


@pytest.fixture(scope="module")
def ours() -> Org:
    return make_org("genguard test org")


@pytest.fixture(scope="module")
def photos() -> dict[str, Pixels]:
    return photographs(512, ("astronaut", "coffee", "chelsea", "rocket"))


@pytest.fixture
def store(sqlite_url: str) -> AuditStore:
    return AuditStore.open(sqlite_url)


def release(
    store: AuditStore,
    org: Org,
    pixels: Pixels,
    generation_id: str,
    mark_id: int,
    fmt: str = "png",
    sidecar: Path | None = None,
) -> bytes:
    """What the pipeline does for one released image: mark, encode, sign, record; the bytes that leave
    (with `sidecar`, the manifest is written there and the image left unsigned)."""
    marked = embed(pixels, mark_id, KEY)
    facts = ManifestFacts(
        generation_id, 0, POLICY, VERDICT, "embedded:tiny-sd", "StableDiffusionPipeline", mark_id, ALGORITHM
    )
    encoded = encode_image(marked, fmt)  # type: ignore[arg-type]
    signed = org.credentials.sign(encoded, MIME_TYPES[fmt], facts, embed=sidecar is None)
    if sidecar is not None:
        sidecar.write_bytes(signed.manifest)
    image = ImageRecord(
        index=0,
        sha256=hashlib.sha256(signed.data).hexdigest(),
        phash=perceptual_hash(marked),
        width=marked.shape[1],
        height=marked.shape[0],
        verdict=VERDICT,
        status="released",
        path=f"out/{generation_id}.{fmt}",
        mark_id=mark_id,
        manifest=signed.manifest,
    )
    decision = PromptDecision(PromptAction.ALLOW, "a photograph", "a photograph", (), (), POLICY)
    store.record_generation(
        GenerationRecord(
            generation_id=generation_id,
            request=GenerationRequest("a photograph"),
            decision=decision,
            prompt_storage=PromptStorage.FULL,
            status="completed",
            model_id="embedded:tiny-sd",
            pipeline_class="StableDiffusionPipeline",
            seed=1,
            images=(image,),
        )
    )
    return signed.data


def check(
    data: bytes, store: AuditStore | None, org: Org, name: str = "image", record: bool = True
) -> VerificationReport:
    return verify_image(data, store=store, name=name, trust_anchors_pem=org.anchors, key=KEY, record=record)


def decode(data: bytes) -> Pixels:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, whole chunk) for each chunk of a PNG file."""
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append((data[at + 4 : at + 8], data[at : at + 12 + length]))
        at += 12 + length
    return chunks


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_manifest_chunk(signed: bytes, png: bytes) -> bytes:
    """`png` carrying `signed`'s C2PA chunk where c2pa put it: pixels edited under an untouched manifest."""
    source = png_chunks(signed)
    position = next(i for i, (kind, _) in enumerate(source) if kind == b"caBX")
    target = png_chunks(png)
    return (
        png[:8]
        + b"".join(c for _, c in target[:position])
        + source[position][1]
        + b"".join(c for _, c in target[position:])
    )


# ----------------------------------------------------------------------------------- the verdicts


def test_signed_original_is_verified_and_the_verification_recorded(
    store: AuditStore, ours: Org, photos: dict[str, Pixels]
) -> None:
    data = release(store, ours, photos["astronaut"], "gen-a", mark_id=0xA11CE)
    report = check(data, store, ours)

    assert report.verdict is Verdict.VERIFIED_ORIGINAL, report.summary
    assert report.manifest.state is ManifestState.TRUSTED and report.manifest.generation_id == "gen-a"
    assert report.watermark is not None and report.watermark.mark_id == 0xA11CE
    assert [str(ref) for ref in report.hashes.exact] == ["gen-a/0"]
    assert report.hashes.similar[0].distance == 0
    assert report.record is not None and report.record.released and report.record.policy == POLICY
    assert set(report.agreeing) == set(Layer) and not report.disagreements

    detail = store.get_generation("gen-a")
    assert detail is not None
    events = [e for e in detail.events if e.event_type == "verify.performed"]
    assert len(events) == 1 and events[0].seq == report.event_seq
    assert events[0].payload["verdict"] == "verified-original"
    assert events[0].payload["sha256"] == hashlib.sha256(data).hexdigest()
    assert events[0].payload["watermark"] == "0x00000000000a11ce"
    assert "image" not in json.dumps(events[0].payload)  # neither the name nor the pixels
    lean = store.get_generation("gen-a", with_events=False)  # what verify reads: events grow per verification
    assert lean is not None and lean.events == () and lean.images == detail.images
    assert store.verify_chain().ok

    unrecorded = check(data, store, ours, record=False)
    assert unrecorded.event_seq is None and unrecorded.verdict is Verdict.VERIFIED_ORIGINAL
    detail = store.get_generation("gen-a")
    assert detail is not None and sum(e.event_type == "verify.performed" for e in detail.events) == 1


def test_pixels_edited_under_the_manifest_are_ours_altered(
    store: AuditStore, ours: Org, photos: dict[str, Pixels]
) -> None:
    data = release(store, ours, photos["coffee"], "gen-b", mark_id=0xB0B)
    edited = decode(data).copy()
    cv2.rectangle(edited, (200, 200), (260, 240), (255, 0, 0), thickness=-1)  # paint over a region
    forged = with_manifest_chunk(data, encode_image(edited))

    report = check(forged, store, ours)
    assert report.manifest.state is ManifestState.INVALID
    assert "assertion.dataHash.mismatch" in report.manifest.codes
    assert report.verdict is Verdict.OURS_ALTERED, report.summary
    assert report.record is not None and report.record.image.generation_id == "gen-b"
    assert {Layer.MANIFEST, Layer.WATERMARK} <= set(report.record.found_by)
    assert "dataHash.mismatch" in report.summary


def test_manifest_stripped_by_resaving_is_found_by_the_watermark(
    store: AuditStore, ours: Org, photos: dict[str, Pixels]
) -> None:
    data = release(store, ours, photos["chelsea"], "gen-c", mark_id=0xC0FFEE)
    for fmt in ("png", "jpeg"):
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).save(buffer, format=fmt.upper(), quality=90)  # what platforms do
        report = check(buffer.getvalue(), store, ours)
        assert report.manifest.state is ManifestState.ABSENT
        assert report.verdict is Verdict.OURS_METADATA_STRIPPED, (fmt, report.summary)
        assert report.record is not None and report.record.image.generation_id == "gen-c"
        assert Layer.WATERMARK in report.agreeing and Layer.SHA256 not in report.agreeing


def test_jpeg_reencode_and_resize_still_find_the_generation(
    store: AuditStore, ours: Org, photos: dict[str, Pixels]
) -> None:
    data = release(store, ours, photos["rocket"], "gen-d", mark_id=0xD00D)
    smaller = np.asarray(cv2.resize(decode(data), (384, 384), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    report = check(encode_image(smaller, "jpeg", 80), store, ours)

    assert report.verdict is Verdict.OURS_ALTERED, report.summary
    assert report.record is not None and report.record.image.generation_id == "gen-d"
    assert {Layer.WATERMARK, Layer.PHASH} <= set(report.agreeing)
    assert "size 384x384, recorded 512x512" in report.summary


def test_signer_from_a_foreign_ca_is_valid_but_not_ours(
    store: AuditStore, ours: Org, photos: dict[str, Pixels]
) -> None:
    foreign = make_org("someone else")
    facts = ManifestFacts("their-7", 0, POLICY, VERDICT, "their-model", "TheirPipeline", None, None)
    theirs = foreign.credentials.sign(encode_image(photos["astronaut"]), "image/png", facts).data
    report = check(theirs, store, ours)
    assert report.manifest.state is ManifestState.VALID
    assert "signingCredential.untrusted" in report.manifest.codes
    assert report.verdict is Verdict.FOREIGN_SIGNED and report.record is None

    # Our image re-signed by them (claiming our generation): ours, but not the file we released.
    data = release(store, ours, photos["coffee"], "gen-e", mark_id=0xE)
    facts = ManifestFacts("gen-e", 0, POLICY, VERDICT, "m", "p", 0xE, ALGORITHM)
    resigned = foreign.credentials.sign(encode_image(decode(data)), "image/png", facts).data
    report = check(resigned, store, ours)
    assert report.manifest.state is ManifestState.VALID
    assert report.verdict is Verdict.OURS_ALTERED and "not a configured trust anchor" in report.summary


def test_a_claim_contradicting_the_watermark_is_a_conflict(
    store: AuditStore, ours: Org, photos: dict[str, Pixels]
) -> None:
    release(store, ours, photos["astronaut"], "gen-f", mark_id=0xF)
    data = release(store, ours, photos["chelsea"], "gen-g", mark_id=0x6)
    forger = make_org("forger")
    facts = ManifestFacts("gen-f", 0, POLICY, VERDICT, "m", "p", None, None)  # claims the other generation
    forged = forger.credentials.sign(encode_image(decode(data)), "image/png", facts).data

    report = check(forged, store, ours)
    assert report.verdict is Verdict.CONFLICT and report.record is None
    assert report.summary.startswith("layers disagree")
    assert "gen-f/0" in report.summary and "gen-g/0" in report.summary

    facts = ManifestFacts(
        "gen-never", 3, POLICY, VERDICT, "m", "p", None, None
    )  # a generation nobody recorded
    forged = forger.credentials.sign(encode_image(decode(data)), "image/png", facts).data
    report = check(forged, store, ours)
    assert report.verdict is Verdict.CONFLICT
    assert "the manifest claims gen-never/3 (not recorded)" in report.summary


def test_postgres_store(postgres_url: str, ours: Org, photos: dict[str, Pixels]) -> None:
    with AuditStore.open(postgres_url) as store:
        data = release(store, ours, photos["coffee"], "gen-pg", mark_id=0x9E)
        stripped = io.BytesIO()
        Image.open(io.BytesIO(data)).save(stripped, format="JPEG", quality=85)
        report = check(stripped.getvalue(), store, ours)
        assert report.verdict is Verdict.OURS_METADATA_STRIPPED, report.summary
        assert report.record is not None and report.record.image.generation_id == "gen-pg"
        detail = store.get_generation("gen-pg")
        assert detail is not None and detail.events[-1].event_type == "verify.performed"
        assert store.verify_chain().ok


def test_expired_certificate(store: AuditStore, ours: Org, photos: dict[str, Pixels]) -> None:
    now = dt.datetime.now(dt.UTC)
    short_lived = make_org("short lived", not_after=now + dt.timedelta(seconds=2))
    data = release(store, short_lived, photos["rocket"], "gen-h", mark_id=0x4)
    # c2pa checks validity in whole seconds against a certificate time rounded to the second: keep clear of the edge
    time.sleep(max(0.0, (now + dt.timedelta(seconds=4) - dt.datetime.now(dt.UTC)).total_seconds()))

    report = verify_image(data, store=store, trust_anchors_pem=short_lived.anchors, key=KEY)
    assert report.manifest.state is ManifestState.INVALID
    assert "signingCredential.expired" in report.manifest.codes
    # The bytes are exactly the recorded file: ours, proven by the database, not by the credentials.
    assert report.verdict is Verdict.OURS_ORIGINAL, report.summary
    assert report.record is not None and set(report.agreeing) == set(Layer)


def test_a_foreign_photograph_is_unknown(store: AuditStore, ours: Org, photos: dict[str, Pixels]) -> None:
    release(store, ours, photos["astronaut"], "gen-i", mark_id=0x1)
    report = check(encode_image(photos["coffee"], "jpeg"), store, ours)
    assert report.verdict is Verdict.UNKNOWN and report.record is None
    assert report.watermark is not None and not report.watermark.marked
    assert not report.hashes.exact and not report.hashes.similar
    detail_events = [e for e in store.get_generation("gen-i").events if e.event_type == "verify.performed"]  # type: ignore[union-attr]
    assert not detail_events and report.event_seq is not None  # recorded, tied to no generation


def test_a_corrupt_manifest_is_reported_not_raised(
    store: AuditStore, ours: Org, photos: dict[str, Pixels]
) -> None:
    data = release(store, ours, photos["chelsea"], "gen-j", mark_id=0x7)
    chunks = png_chunks(data)
    position = next(i for i, (kind, _) in enumerate(chunks) if kind == b"caBX")
    body = bytearray(chunks[position][1][8:-4])
    body[60:360] = bytes(b ^ 0x55 for b in body[60:360])  # garbage inside the manifest store, valid PNG chunk
    corrupt = data[:8] + b"".join(c for _, c in chunks[:position]) + png_chunk(b"caBX", bytes(body))
    corrupt += b"".join(c for _, c in chunks[position + 1 :])

    report = check(corrupt, store, ours)
    assert report.manifest.state is ManifestState.INVALID and report.manifest.error
    assert any("manifest could not be read" in note for note in report.notes)
    assert report.verdict is Verdict.OURS_ALTERED  # our pixels, found by the watermark; the file was changed
    assert report.record is not None and report.record.image.generation_id == "gen-j"


def test_watermark_destroyed_near_copy_is_found_by_phash(
    store: AuditStore, ours: Org, photos: dict[str, Pixels]
) -> None:
    data = release(store, ours, photos["coffee"], "gen-k", mark_id=0x8)
    blurred = np.asarray(
        cv2.GaussianBlur(decode(data), (0, 0), 5), dtype=np.uint8
    )  # kills the mark, not the look
    report = check(encode_image(blurred, "jpeg"), store, ours)
    assert report.watermark is not None and not report.watermark.marked
    assert report.verdict is Verdict.OURS_NEAR_COPY, report.summary
    assert report.record is not None and report.record.found_by == (Layer.PHASH,)


def test_a_regenerated_copy_names_the_layer_that_linked_it(
    store: AuditStore, ours: Org, photos: dict[str, Pixels]
) -> None:
    """A regeneration-style copy (bench/regeneration.py's quarter size, JPEG 30, upscale): the pixel mark
    is gone, the perceptual hash still links it, and the report says so in words and in its JSON."""
    data = release(store, ours, photos["chelsea"], "gen-regen", mark_id=0x9E6)
    pixels = decode(data)
    small = cv2.resize(pixels, (128, 128), interpolation=cv2.INTER_AREA)
    buffer = io.BytesIO()
    Image.fromarray(small).save(buffer, format="JPEG", quality=30)
    regenerated = cv2.resize(decode(buffer.getvalue()), (512, 512), interpolation=cv2.INTER_CUBIC)
    report = check(encode_image(np.asarray(regenerated, dtype=np.uint8), "png"), store, ours)
    assert report.watermark is not None and not report.watermark.marked  # the pixel mark did not survive
    assert report.verdict is Verdict.OURS_NEAR_COPY, report.summary
    assert report.record is not None and report.record.found_by == (Layer.PHASH,)
    assert report.record.image.generation_id == "gen-regen"
    assert "found by phash" in report.summary
    assert report.to_json()["record"]["found_by"] == ["phash"]


def test_our_mark_without_a_record(store: AuditStore, ours: Org, photos: dict[str, Pixels]) -> None:
    report = check(encode_image(embed(photos["rocket"], 0x5EC, KEY)), store, ours)
    assert report.verdict is Verdict.OURS_NO_RECORD and report.record is None
    without_db = check(encode_image(embed(photos["rocket"], 0x5EC, KEY)), None, ours)
    assert without_db.verdict is Verdict.OURS_NO_RECORD and "no audit database consulted" in without_db.notes


def test_an_unwritable_database_fails_closed_with_the_report(
    tmp_path: Path, ours: Org, photos: dict[str, Pixels]
) -> None:
    db = tmp_path / "audit.sqlite3"
    with AuditStore.open(f"sqlite:///{db}") as writer:
        data = release(writer, ours, photos["astronaut"], "gen-l", mark_id=0x9)
    reader = AuditStore.open(f"sqlite:///file:{db}?mode=ro&uri=true", read_only=True)
    with pytest.raises(VerificationNotRecorded) as caught:
        check(data, reader, ours)
    assert caught.value.exit_code == 4 and "could not be recorded" in str(caught.value)
    assert caught.value.report.verdict is Verdict.VERIFIED_ORIGINAL
    assert check(data, reader, ours, record=False).verdict is Verdict.VERIFIED_ORIGINAL


def test_unreadable_inputs_are_named_and_the_others_verified(
    store: AuditStore, ours: Org, photos: dict[str, Pixels], tmp_path: Path
) -> None:
    with pytest.raises(ImageInputError, match="broken.png: truncated or corrupt"):
        check(encode_image(photos["coffee"])[:5000], store, ours, name="broken.png")
    header = struct.pack(">IIBBBBB", 10_000, 10_000, 8, 2, 0, 0, 0)  # a 100-megapixel PNG, 4 bytes of pixels
    bomb = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", bytes(4))
    with pytest.raises(ImageInputError, match="bomb.png: expected at most 50000000 pixels"):
        check(bomb, store, ours, name="bomb.png")
    tiny = check(encode_image(photos["coffee"][:32, :32].copy()), store, ours)
    assert tiny.watermark is None and tiny.verdict is Verdict.UNKNOWN
    assert any("no watermark can be read" in note for note in tiny.notes)
    good = tmp_path / "good.png"  # its manifest in the sidecar good.c2pa, as `generate --sidecar` writes it
    good.write_bytes(
        release(store, ours, photos["coffee"], "gen-m", mark_id=0xA, sidecar=tmp_path / "good.c2pa")
    )
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths = [tmp_path / "bad.png", good]
    outcomes = list(verify_images(paths, store=store, trust_anchors_pem=ours.anchors, key=KEY))
    assert isinstance(outcomes[0], UnreadableImage) and "bad.png" in outcomes[0].error
    assert isinstance(outcomes[1], VerificationReport), outcomes[1]
    assert outcomes[1].manifest.state is ManifestState.TRUSTED
    assert outcomes[1].verdict is Verdict.VERIFIED_ORIGINAL


# ------------------------------------------------------------------------------------- the command


def genguard(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from genguard.pipeline.cli import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_walks_folders_reports_json_and_exits_by_verdict(
    tmp_path: Path, ours: Org, photos: dict[str, Pixels]
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    with AuditStore.open(url) as store:
        original = release(store, ours, photos["astronaut"], "gen-n", mark_id=0xB)
    (folder / "original.png").write_bytes(original)
    Image.open(io.BytesIO(original)).save(folder / "sub" / "stripped.jpg", quality=90)
    (folder / "sub" / "corrupt.png").write_bytes(original[:3000])
    (folder / ".hidden.png").write_bytes(b"skipped")
    (folder / "notes.txt").write_text("skipped")
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(ours.anchors)
    env = dict(os.environ, GENGUARD_WATERMARK_KEY=KEY.hex(), GENGUARD_DB=url, OMP_NUM_THREADS="1")
    assert image_files([folder]) == [
        folder / "original.png",
        folder / "sub" / "corrupt.png",
        folder / "sub" / "stripped.jpg",
    ]

    proc = genguard(["verify", str(folder), "--json", "--trust-anchors", str(anchors)], env)
    assert proc.returncode == 2, proc.stderr  # one unreadable file; the others are still reported
    reports = {Path(r["name"]).name: r for r in map(json.loads, proc.stdout.splitlines())}  # JSON lines
    assert reports["original.png"]["verdict"] == "verified-original"
    assert reports["stripped.jpg"]["verdict"] == "ours-metadata-stripped"
    assert reports["stripped.jpg"]["record"]["generation_id"] == "gen-n"
    assert "corrupt.png" in reports["corrupt.png"]["error"]

    proc = genguard(["verify", str(folder / "original.png"), "--trust-anchors", str(anchors)], env)
    assert proc.returncode == 0, proc.stderr
    assert "verified-original" in proc.stdout and "record     gen-n/0 released" in proc.stdout

    proc = genguard(["verify", str(folder / "sub" / "stripped.jpg"), "--no-record"], env)
    assert proc.returncode == 1 and "ours-metadata-stripped" in proc.stdout
    with AuditStore.open(url) as store:
        detail = store.get_generation("gen-n")
    assert detail is not None
    assert sum(e.event_type == "verify.performed" for e in detail.events) == 3  # --no-record added none

    read_only = f"sqlite:///file:{tmp_path / 'audit.sqlite3'}?mode=ro&uri=true"
    proc = genguard(["verify", str(folder / "original.png"), "--db", read_only], env)
    assert proc.returncode == 4 and "unavailable" in proc.stderr  # cannot record: fail closed


def test_verify_does_not_import_torch() -> None:
    code = (
        "import sys, genguard.audit.verify, genguard.pipeline.cli_verify; "
        "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; assert not bad, bad"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_a_generated_image_verifies_end_to_end(sqlite_url: str, embedded_cache: Path, tmp_path: Path) -> None:
    from genguard.guard.types import GenerationParams
    from genguard.pipeline.governed import GovernedPipeline

    pipe = GovernedPipeline.from_pretrained("embedded:tiny-sd", policy="default", audit=sqlite_url)
    params = GenerationParams(width=512, height=512, steps=2, num_images=1, seed=3)
    result = pipe(GenerationRequest("a lighthouse at dusk", params=params), out_dir=tmp_path)
    (image,) = result.released
    assert image.path is not None

    (report,) = verify_images([image.path], store=pipe.audit)
    assert isinstance(report, VerificationReport)
    assert report.verdict is Verdict.VERIFIED_ORIGINAL, report.summary
    assert report.record is not None and report.record.image.generation_id == result.generation_id
    assert set(report.agreeing) == set(Layer)
