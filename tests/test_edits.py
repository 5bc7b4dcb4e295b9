"""Governed edits (img2img, inpainting) of real photographs on the embedded tiny models: the input's
checks, the pack's `edits:` decisions, provenance in and out, storage, and the record of every attempt."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import c2pa
import numpy as np
import pytest
import torch

from genguard.audit.store import AuditStore
from genguard.guard.errors import BlockedError
from genguard.guard.imageio import encode_image, load_image
from genguard.guard.input_image import EDIT_CATEGORY
from genguard.guard.policy import PolicyPack, load_pack
from genguard.guard.policy.schema import EditsSpec, FaceEditSpec
from genguard.guard.provenance import ManifestState, read_manifest
from genguard.guard.provenance.content_credentials import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    GOVERNANCE_LABEL,
)
from genguard.guard.provenance.keys import create_development_chain
from genguard.guard.quarantine import MAGIC
from genguard.guard.types import GenerationParams, GenerationRequest, PromptAction
from genguard.pipeline.edit_input import LATENT_MARK_NOTE, InputStore
from genguard.pipeline.governed import GovernedPipeline, load_diffusers_pipeline
from genguard.pipeline.outcomes import InvalidRequestError
from tests._photos import photographs

torch.set_num_threads(1)

SIDE = 256  # the astronaut's face is found from about 200 px up (a tenth of the short side at least)
PARAMS = GenerationParams(width=SIDE, height=SIDE, steps=4, num_images=1, seed=11)
PROMPT = "a portrait in a garden"


@pytest.fixture(scope="module")
def tiny_sd(embedded_cache: Path) -> Any:
    return load_diffusers_pipeline("embedded:tiny-sd")


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return photographs(SIDE, ("astronaut", "coffee"))


@pytest.fixture(scope="module")
def astronaut_png(photos: dict[str, np.ndarray]) -> bytes:
    return encode_image(photos["astronaut"], "png")


def mask_png(rows: slice, cols: slice = slice(None), side: int = SIDE) -> bytes:
    mask = np.zeros((side, side), np.uint8)
    mask[rows, cols] = 255
    return encode_image(mask, "png")


BELOW_FACE = mask_png(slice(200, SIDE))  # the astronaut's face is at about (88, 33, 49, 49)
OVER_FACE = mask_png(slice(20, 100), slice(70, 150))


def pack_with(edits: EditsSpec, base: str = "default") -> PolicyPack:
    pack = load_pack(base)
    return PolicyPack.from_spec(pack.spec.model_copy(update={"edits": edits}))


def governed(pipe: Any, db_url: str, pack: PolicyPack | None = None, **kwargs: Any) -> GovernedPipeline:
    return GovernedPipeline(
        pipe,
        model_id="embedded:tiny-sd",
        policy=pack if pack is not None else load_pack("default"),
        audit=AuditStore.open(db_url),
        **kwargs,
    )


def edit_record(gp: GovernedPipeline, generation_id: str) -> tuple[Any, dict[str, Any]]:
    detail = gp.audit.get_generation(generation_id)
    assert detail is not None
    return detail, detail.extra["edit"]


def only_generation(gp: GovernedPipeline) -> Any:
    (summary,) = gp.audit.list_generations(10)
    detail = gp.audit.get_generation(summary.generation_id)
    assert detail is not None
    return detail


def active_manifest(data: bytes) -> dict[str, Any]:
    context = c2pa.Context.from_dict({"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}})
    with c2pa.Reader("image/png", io.BytesIO(data), None, context) as reader:
        manifest: dict[str, Any] = reader.get_active_manifest()
    return manifest


# -- the pack decides what edits of pictures of real people need ----------------------------------


@pytest.mark.parametrize(
    ("real_people", "consent", "expected"),
    [
        ("allow", None, "released"),
        ("consent", "attestation-2026-0042", "released"),
        ("consent", None, "blocked"),
        ("review", "attestation-2026-0042", "withheld"),
        ("block", "attestation-2026-0042", "blocked"),
    ],
)
def test_inpainting_the_astronaut_away_from_her_face_follows_real_people(
    tiny_sd: Any, sqlite_url: str, astronaut_png: bytes, real_people: str, consent: str | None, expected: str
) -> None:
    pack = pack_with(
        EditsSpec(real_people=real_people, face_edit=FaceEditSpec(threshold=0.05, action="block"))
    )
    gp = governed(tiny_sd, sqlite_url, pack)
    request = GenerationRequest(
        PROMPT, params=PARAMS, init_image=astronaut_png, mask=BELOW_FACE, consent=consent
    )
    if expected == "blocked":
        with pytest.raises(BlockedError, match="deceptive_real_people/edit/edits.real_people"):
            gp(request)
        detail = only_generation(gp)
        assert detail.status == "blocked" and not detail.images
    else:
        result = gp(request)
        assert (len(result.released), len(result.withheld)) == ((1, 0) if expected == "released" else (0, 1))
        detail = only_generation(gp)
        assert detail.status == "completed"
    edit = detail.extra["edit"]
    assert edit["mode"] == "inpaint" and edit["photograph"] is True and edit["faces"]
    assert edit["face_area_share"] == 0.0  # the mask leaves the face alone: face_edit did not apply
    assert edit["mask_area_share"] == pytest.approx(56 / SIDE)
    assert edit["consent"] == consent
    rules = edit["decision"]["rules"]
    assert rules == (
        ["edits.real_people.consent_missing"]
        if real_people == "consent" and consent is None
        else ["edits.real_people"]
    )
    category = {c.category: c for c in detail.decision.categories}[EDIT_CATEGORY]
    assert category.action.value == edit["decision"]["action"]


def test_an_edit_over_the_face_is_its_own_category_and_decision(
    tiny_sd: Any, sqlite_url: str, astronaut_png: bytes
) -> None:
    # default pack: consent given, but the mask covers the face -> held for review
    gp = governed(tiny_sd, sqlite_url)
    result = gp(
        GenerationRequest(PROMPT, params=PARAMS, init_image=astronaut_png, mask=OVER_FACE, consent="c-1")
    )
    assert not result.released and result.withheld[0].status == "quarantined"
    assert "deceptive_real_people" in result.withheld[0].reason
    assert result.decision.action is PromptAction.REVIEW
    detail, edit = edit_record(gp, result.generation_id)
    assert edit["face_area_share"] > 0.5 and edit["decision"]["rules"] == [
        "edits.real_people",
        "edits.face_edit",
    ]
    # the strict pack blocks it; img2img changes every pixel, the face too
    strict = governed(tiny_sd, sqlite_url, load_pack("strict"))
    with pytest.raises(BlockedError, match="edits.face_edit"):
        strict(GenerationRequest(PROMPT, params=PARAMS, init_image=astronaut_png, consent="c-1"))
    blocked = [g for g in strict.audit.list_generations(10) if g.status == "blocked"]
    detail = strict.audit.get_generation(blocked[0].generation_id)
    assert detail is not None and detail.extra["edit"]["mode"] == "img2img"
    assert detail.extra["edit"]["face_area_share"] == 1.0
    assert detail.extra["edit"]["input"]["stored"] is None  # a blocked edit keeps only the hash


def test_a_photograph_without_faces_needs_nothing(
    tiny_sd: Any, sqlite_url: str, photos: dict[str, np.ndarray]
) -> None:
    gp = governed(tiny_sd, sqlite_url)
    coffee = encode_image(photos["coffee"], "png")
    result = gp(GenerationRequest(PROMPT, params=PARAMS, init_image=coffee, strength=0.5))
    assert len(result.released) == 1 and result.decision.action is PromptAction.ALLOW
    _, edit = edit_record(gp, result.generation_id)
    assert edit["faces"] == [] and edit["decision"]["rules"] == [] and edit["strength"] == 0.5


# -- the output says it was edited ------------------------------------------------------------------


def test_the_output_manifest_says_edited_with_the_input_as_ingredient(
    tiny_sd: Any, sqlite_url: str, astronaut_png: bytes, tmp_path: Path
) -> None:
    gp = governed(tiny_sd, sqlite_url, pack_with(EditsSpec(real_people="allow")))
    result = gp(
        GenerationRequest(PROMPT, params=PARAMS, init_image=astronaut_png, mask=BELOW_FACE), out_dir=tmp_path
    )
    (image,) = result.released
    reading = read_manifest(image.data, "image/png")
    assert reading.state in (ManifestState.TRUSTED, ManifestState.VALID)
    assert "c2pa.created" not in reading.actions and reading.actions[:2] == ("c2pa.opened", "c2pa.edited")
    assert reading.digital_source_type == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    assert reading.ingredients == 1 and reading.generation_id == result.generation_id
    manifest = active_manifest(image.data)
    governance = next(a["data"] for a in manifest["assertions"] if a["label"] == GOVERNANCE_LABEL)
    _, edit = edit_record(gp, result.generation_id)
    assert governance["edit"]["mask_area_share"] == pytest.approx(edit["mask_area_share"])
    assert governance["edit"]["input"]["sha256"] == edit["input"]["sha256"]
    (ingredient,) = manifest["ingredients"]
    assert ingredient["relationship"] == "parentOf" and ingredient["format"] == "image/png"
    assert "thumbnail" not in ingredient  # no preview of the input travels with the output
    # pixel mark only: the record lists no latent watermark and keeps no nonce
    detail = gp.audit.get_generation(result.generation_id)
    assert detail is not None and detail.images[0].latent_nonce is None
    assert detail.extra["watermarks"] == [gp.watermarker.algorithm]
    assert edit["latent_mark"] == LATENT_MARK_NOTE
    assert gp.watermarker.detect(image.pixels).mark_id == image.mark_id
    # the input never leaves: the written file is the output alone
    written = (tmp_path / f"{result.generation_id}-0.png").read_bytes()
    assert written == image.data and astronaut_png not in written


def sign_foreign(png: bytes, source_type: str) -> bytes:
    """A camera-style manifest signed by another organisation's generated chain."""
    chain = create_development_chain(organisation="Foreign Camera Co")
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain.chain_pem, chain.signer_key_pem, None))
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    definition = {
        "claim_generator_info": [{"name": "camera", "version": "1"}],
        "title": "photo",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": source_type}]},
            }
        ],
    }
    builder = c2pa.Builder(json.dumps(definition), context)
    out = io.BytesIO()
    try:
        builder.sign(signer, "image/png", io.BytesIO(png), out)
    finally:
        builder.close()
        signer.close()
    return out.getvalue()


def test_a_foreign_manifest_is_carried_as_the_ingredient_and_recorded(
    tiny_sd: Any, sqlite_url: str, astronaut_png: bytes
) -> None:
    # an untrusted manifest claiming the picture is AI-made does not make it "not a photograph"
    signed = sign_foreign(
        astronaut_png, "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    )
    gp = governed(tiny_sd, sqlite_url)
    with pytest.raises(BlockedError, match="consent_missing"):
        gp(GenerationRequest(PROMPT, params=PARAMS, init_image=signed, mask=BELOW_FACE))
    detail = only_generation(gp)
    credentials = detail.extra["edit"]["credentials"]
    assert credentials["state"] == "valid" and credentials["issuer"] == "Foreign Camera Co"
    assert credentials["codes"] == ["signingCredential.untrusted"]
    assert detail.extra["edit"]["photograph"] is True
    # with consent it is released, and the output's ingredient carries the foreign manifest's state
    result = gp(GenerationRequest(PROMPT, params=PARAMS, init_image=signed, mask=BELOW_FACE, consent="c-2"))
    (ingredient,) = active_manifest(result.released[0].data)["ingredients"]
    assert ingredient["active_manifest"].startswith("urn:c2pa:")
    failures = ingredient["validation_results"]["activeManifest"]["failure"]
    assert [f["code"] for f in failures] == ["signingCredential.untrusted"]
    _, edit = edit_record(gp, result.generation_id)
    assert edit["credentials"]["state"] == "valid"


def test_an_input_carrying_our_mark_is_linked_to_its_generation(tiny_sd: Any, sqlite_url: str) -> None:
    gp = governed(tiny_sd, sqlite_url)
    first = gp(GenerationRequest("a small boat on the sea", params=PARAMS))
    ours = first.released[0]
    result = gp(GenerationRequest(PROMPT, params=PARAMS, init_image=ours.data, strength=0.5))
    _, edit = edit_record(gp, result.generation_id)
    assert edit["source"] == {
        "mark_id": f"0x{ours.mark_id:016x}",
        "generation_id": first.generation_id,
        "image_index": 0,
    }
    assert edit["photograph"] is False and edit["credentials"]["state"] in ("trusted", "valid")
    # re-encoded (a different file), the link is made by the watermark alone
    recoded = encode_image(load_image(ours.data).rgb, "jpeg")
    again = gp(GenerationRequest(PROMPT, params=PARAMS, init_image=recoded, strength=0.5))
    _, edit = edit_record(gp, again.generation_id)
    assert edit["source"]["generation_id"] == first.generation_id
    assert edit["credentials"]["state"] == "absent" and edit["input"]["mime_type"] == "image/jpeg"


# -- bad input: a clear error naming the field, recorded as invalid --------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header (IHDR with its CRC) claiming a huge size, with almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)  # a few bytes: a decoder would inflate them to gigabytes
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("image", "mask", "message"),
    [
        ("truncated", None, "init_image: truncated or corrupt image data"),
        ("not-an-image", None, "init_image: expected an image file, found an unrecognised format"),
        ("huge", None, "init_image: expected at most 16777216 pixels, found 5000x5000"),
        ("astronaut", "small", "mask: expected the input image's size 256x256, found 128x128"),
        ("astronaut", "empty", "mask: expected some pixels"),
        ("bmp", None, "init_image: expected a PNG, JPEG, WEBP image, found BMP"),
        (None, "below", "init_image: expected the image to edit"),
    ],
)
def test_bad_inputs_are_refused_before_sampling_and_recorded(
    tiny_sd: Any, sqlite_url: str, astronaut_png: bytes, image: str | None, mask: str | None, message: str
) -> None:
    from PIL import Image

    bmp = io.BytesIO()
    Image.new("RGB", (64, 64)).save(bmp, format="BMP")
    images = {
        "truncated": astronaut_png[: len(astronaut_png) // 2],
        "not-an-image": b"this is not an image at all",
        "huge": png_claiming(5000, 5000),
        "astronaut": astronaut_png,
        "bmp": bmp.getvalue(),
    }
    masks = {"small": mask_png(slice(0, 10), side=128), "empty": mask_png(slice(0, 0)), "below": BELOW_FACE}
    gp = governed(tiny_sd, sqlite_url)
    request = GenerationRequest(
        PROMPT,
        params=PARAMS,
        init_image=images[image] if image else None,
        mask=masks[mask] if mask else None,
        consent="c-3",
    )
    with pytest.raises(InvalidRequestError, match=message.replace("(", r"\(")) as refused:
        gp(request)
    assert "Traceback" not in str(refused.value)
    detail = only_generation(gp)
    assert detail.status == "invalid" and message.split(":")[0] in (detail.error or "")
    assert detail.extra["edit"]["mode"] == ("inpaint" if mask else "img2img")
    assert detail.extra["edit"]["consent"] == "c-3"
    if image:
        assert len(detail.extra["edit"]["input"]["sha256"]) == 64


def test_strength_too_small_for_the_steps_is_refused(
    tiny_sd: Any, sqlite_url: str, astronaut_png: bytes
) -> None:
    gp = governed(tiny_sd, sqlite_url)
    for strength, text in (
        (0.1, "steps x strength of at least 1"),
        (1.5, r"strength: expected a number in \(0, 1\]"),
    ):
        with pytest.raises(InvalidRequestError, match=text):
            gp(GenerationRequest(PROMPT, params=PARAMS, init_image=astronaut_png, strength=strength))
    assert [g.status for g in gp.audit.list_generations(10)] == ["invalid", "invalid"]


# -- the input is stored as the pack says, never in clear next to the output -----------------------


@pytest.mark.parametrize("storage", ["hash", "encrypted", "kept"])
def test_the_input_is_stored_as_the_pack_says(
    tiny_sd: Any, sqlite_url: str, astronaut_png: bytes, tmp_path: Path, storage: str
) -> None:
    store = InputStore(tmp_path / "inputs")
    gp = governed(
        tiny_sd,
        sqlite_url,
        pack_with(EditsSpec(real_people="allow", input_storage=storage)),
        input_store=store,
    )
    result = gp(GenerationRequest(PROMPT, params=PARAMS, init_image=astronaut_png, mask=BELOW_FACE))
    _, edit = edit_record(gp, result.generation_id)
    assert edit["input"]["storage"] == storage
    files = sorted(p for p in (tmp_path / "inputs").glob("*")) if (tmp_path / "inputs").exists() else []
    if storage == "hash":
        assert edit["input"]["stored"] is None and files == []
        return
    (stored,) = files
    assert stored.name == edit["input"]["stored"]
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    raw = stored.read_bytes()
    if storage == "encrypted":
        assert raw.startswith(MAGIC) and astronaut_png[100:200] not in raw
    else:
        assert raw == astronaut_png
    assert store.load(result.generation_id, stored.name) == astronaut_png


# -- the other families -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["embedded:tiny-sdxl", "embedded:tiny-sd3", "embedded:tiny-flux"])
def test_other_families_edit_through_the_governed_path(
    name: str, sqlite_url: str, embedded_cache: Path, photos: dict[str, np.ndarray]
) -> None:
    gp = GovernedPipeline.from_pretrained(name, audit=sqlite_url)
    coffee = encode_image(photos["coffee"][:64, :64], "png")
    params = GenerationParams(width=64, height=64, steps=2, num_images=1, seed=3)
    mask = mask_png(slice(0, 32), side=64)
    for request in (
        GenerationRequest("a cup", params=params, init_image=coffee, strength=1.0),
        GenerationRequest("a cup", params=params, init_image=coffee, mask=mask),
    ):
        result = gp(request)
        assert len(result.released) == 1 and result.released[0].pixels.shape == (64, 64, 3)
        assert read_manifest(result.released[0].data, "image/png").actions[1] == "c2pa.edited"
    modes = {
        g.extra["edit"]["mode"]
        for g in (gp.audit.get_generation(s.generation_id) for s in gp.audit.list_generations(5))
        if g
    }
    assert modes == {"img2img", "inpaint"}


# -- the command line --------------------------------------------------------------------------------


def test_generate_image_mask_consent_from_the_command_line(
    tmp_path: Path, embedded_cache: Path, astronaut_png: bytes
) -> None:
    env = dict(os.environ)
    env.update(
        GENGUARD_HOME=str(tmp_path / "home"),
        GENGUARD_CACHE=str(embedded_cache),
        GENGUARD_DB=f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    (tmp_path / "in.png").write_bytes(astronaut_png)
    (tmp_path / "mask.png").write_bytes(BELOW_FACE)
    (tmp_path / "broken.png").write_bytes(astronaut_png[:300])

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "genguard.pipeline.cli", "generate", PROMPT, "--out", str(tmp_path / "out"), *args],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    done = run("--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), "--steps", "4",
               "--consent", "attestation-7", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "completed" and len(out["released"]) == 1
    written = load_image(Path(out["released"][0]["path"]))
    assert written.size == (SIDE, SIDE)  # the input's size
    broken = run("--image", str(tmp_path / "broken.png"))
    assert broken.returncode == 2 and "init_image: truncated or corrupt image data" in broken.stderr
    assert "Traceback" not in broken.stderr
    store = AuditStore.open(env["GENGUARD_DB"])
    assert sorted(g.status for g in store.list_generations(10)) == ["completed", "invalid"]


def test_generate_many_samples_an_edit_beside_text_requests(
    tiny_sd: Any, sqlite_url: str, photos: dict[str, np.ndarray]
) -> None:
    gp = governed(tiny_sd, sqlite_url)
    coffee = encode_image(photos["coffee"], "png")
    requests = [
        GenerationRequest("a lighthouse at dusk", params=PARAMS),
        GenerationRequest(PROMPT, params=PARAMS, init_image=coffee, strength=0.5),
        GenerationRequest("a small boat on the sea", params=PARAMS),
    ]
    results = gp.generate_many(requests, batch_size=8, workers=2)
    assert [len(r.released) for r in results] == [1, 1, 1]  # type: ignore[union-attr]
    extras = [gp.audit.get_generation(r.generation_id).extra for r in results]  # type: ignore[union-attr]
    assert ["edit" in extra for extra in extras] == [False, True, False]
    assert extras[1]["edit"]["mode"] == "img2img"
    # the text requests keep their latent mark, the edit has the pixel mark only
    assert [len(extra["watermarks"]) for extra in extras] == [2, 1, 2]


@pytest.mark.parametrize("storage", ["encrypted", "hash"])
def test_approving_a_held_face_edit_releases_it_as_an_edit(
    tiny_sd: Any, sqlite_url: str, astronaut_png: bytes, tmp_path: Path, storage: str
) -> None:
    from genguard.audit.review import approve

    store = InputStore(tmp_path / "inputs")
    pack = pack_with(EditsSpec(input_storage=storage))  # face edits held for review, as in the default pack
    gp = governed(tiny_sd, sqlite_url, pack, input_store=store)
    result = gp(GenerationRequest(PROMPT, params=PARAMS, init_image=astronaut_png, consent="c-9"))
    assert not result.released and result.withheld[0].status == "quarantined"
    approve(
        gp.audit, f"{result.generation_id}:0", reviewer="rita", out_dir=tmp_path / "out", input_store=store
    )
    (released_path,) = (tmp_path / "out").iterdir()
    released = released_path.read_bytes()
    reading = read_manifest(released, "image/png")
    assert reading.actions[:2] == ("c2pa.opened", "c2pa.edited") and reading.ingredients == 1
    assert reading.digital_source_type == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    (ingredient,) = active_manifest(released)["ingredients"]
    _, edit = edit_record(gp, result.generation_id)
    if storage == "hash":  # named by its recorded hash alone
        assert ingredient["instance_id"] == f"sha256:{edit['input']['sha256']}"
    else:  # read back from the sealed copy, as at generation
        assert (
            ingredient["format"] == "image/png"
            and ingredient["instance_id"] != f"sha256:{edit['input']['sha256']}"
        )


def test_a_pack_without_edits_keeps_its_digest_and_gets_the_defaults() -> None:
    shipped = load_pack("default")
    without = PolicyPack.from_spec(shipped.spec.model_copy(update={"edits": None}))
    assert "edits" not in without.canonical_dict() and "edits" in shipped.canonical_dict()
    assert without.digest != shipped.digest
    # its canonical form (what the digest covers) has no `edits` key, as before the section existed
    data = without.canonical_dict()
    again = PolicyPack.from_spec(type(shipped.spec).model_validate(data))
    assert again.digest == without.digest and without.edits == EditsSpec()
    assert load_pack("strict").edits.face_edit.action == "block"
