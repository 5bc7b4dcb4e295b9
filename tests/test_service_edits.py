"""Edits (img2img, inpainting) and few-step samplers through the service: a real uvicorn server on
loopback, a real SQLite audit database, the embedded tiny model in one worker, scikit-image's astronaut
(a real photograph of a real person), httpx and the real `openai` client."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import torch
import yaml
from starlette.testclient import TestClient

from genguard.audit.service_store import IssuedKey, ServiceStore
from genguard.audit.tenant_spaces import open_tenant_store
from genguard.guard.errors import ImageInputError
from genguard.guard.imageio import encode_image
from genguard.guard.input_image import EDIT_CATEGORY
from genguard.guard.policy import load_pack
from genguard.guard.provenance import ManifestState, read_manifest
from genguard.pipeline.service.app import create_app, open_context
from genguard.pipeline.service.context import ServiceConfig
from genguard.pipeline.service.jobs import WorkerSettings
from tests._home import module_home
from tests._logs import Captured
from tests._photos import photographs
from tests.test_service import png_header_only, serve_in_thread

torch.set_num_threads(1)

SIDE = 256  # the astronaut's face is found from about 200 px up
STEPS = {"steps": 4, "seed": 11}
PROMPT = "a portrait in a garden"
MAX_UPLOAD = 1024 * 1024


@dataclass
class Server:
    url: str
    home: Path
    db_url: str
    key: IssuedKey
    other: IssuedKey
    ctx: Any

    def headers(self, who: str = "generator") -> dict[str, str]:
        key = self.key if who == "generator" else self.other
        return {"Authorization": f"Bearer {key.secret}"}


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return photographs(SIDE, ("astronaut", "coffee"))


@pytest.fixture(scope="module")
def astronaut(photos: dict[str, np.ndarray]) -> bytes:
    return encode_image(photos["astronaut"], "png")


def mask_png(rows: slice, side: int = SIDE) -> bytes:
    mask = np.zeros((side, side), np.uint8)
    mask[rows] = 255
    return encode_image(mask, "png")


BELOW_FACE = mask_png(slice(200, SIDE))  # the astronaut's face is at about (88, 33, 49, 49)


home, genguard_home = module_home("edits-home")


def config(home: Path, workers: int = 1) -> ServiceConfig:
    return ServiceConfig(
        db_url=f"sqlite:///{home / 'audit.sqlite3'}",
        files_dir=home / "files",
        worker=WorkerSettings(),
        workers=workers,
        max_upload_bytes=MAX_UPLOAD,
        max_upload_pixels=1024 * 1024,
        verify_burst=1000,
    )


@pytest.fixture(scope="module")
def server(home: Path, embedded_cache: Path) -> Iterator[Server]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENGUARD_HOME", str(home))
        settings = config(home)
        ctx = open_context(settings)
        ctx.store.create_tenant("acme")
        ctx.store.create_tenant("other")
        key = ctx.store.issue_key("acme", "generator")
        other = ctx.store.issue_key("other", "generator")
        logs = Captured()
        logging.getLogger("genguard.service").addHandler(logs)
        uv, thread, url = serve_in_thread(create_app(settings, ctx))
        try:
            yield Server(url, home, str(settings.db_url), key, other, ctx)
        finally:
            uv.should_exit = True
            thread.join(60)
            logging.getLogger("genguard.service").removeHandler(logs)


def submit(server: Server, request: dict[str, Any], image: bytes | None, mask: bytes | None = None) -> Any:
    files: dict[str, Any] = {"request": (None, json.dumps(request), "application/json")}
    if image is not None:
        files["image"] = ("in.png", image, "image/png")
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    return httpx.post(f"{server.url}/v1/generations", files=files, headers=server.headers(), timeout=60)


def finished(server: Server, accepted: httpx.Response) -> dict[str, Any]:
    assert accepted.status_code == 202, accepted.text
    job: dict[str, Any] = httpx.get(
        f"{accepted.json()['url']}?wait=110", headers=server.headers(), timeout=120
    ).json()
    return job


def record_of(server: Server, generation_id: str) -> Any:
    """The generation's record, in the generator's tenant's own audit space."""
    with open_tenant_store(server.db_url, server.key.info.tenant_id, read_only=True) as audit:
        detail = audit.get_generation(generation_id, with_events=False)
    assert detail is not None
    return detail


def job_row(server: Server, job_id: str) -> Any:
    with ServiceStore.open(server.db_url) as store:
        row = store.get_job(job_id)
        inputs = store.job_inputs(job_id)
    assert row is not None
    return row, inputs


def count_job_inputs(db_file: Path) -> int:
    with sqlite3.connect(db_file) as conn:
        return int(conn.execute("SELECT count(*) FROM job_inputs").fetchone()[0])


# -- the pack's decisions on edits of a real photograph, through the service -----------------------


def test_an_edit_of_a_real_person_without_consent_is_blocked_with_its_category(
    server: Server, astronaut: bytes
) -> None:
    job = finished(server, submit(server, {"prompt": PROMPT, **STEPS}, astronaut))
    assert job["status"] == "blocked" and not job["released"], job
    assert EDIT_CATEGORY in job["decision"]["categories"] and job["decision"]["action"] == "block"
    assert job["edit"] == {
        "edited": True,
        "mode": "img2img",
        "strength": 0.75,
        "mask_area_share": 1.0,
        "input_sha256": hashlib.sha256(astronaut).hexdigest(),
        "mask_sha256": None,
        "consent": None,
    }
    edit = record_of(server, job["generation_id"]).extra["edit"]
    assert edit["decision"]["consent_missing"] and edit["input"]["sha256"] == job["edit"]["input_sha256"]
    row, inputs = job_row(server, job["id"])
    assert inputs == {} and row.request["edit"]["image"]["size_bytes"] == len(astronaut)


def test_inpainting_with_consent_is_released_and_its_manifest_says_edited(
    server: Server, astronaut: bytes
) -> None:
    request = {"prompt": PROMPT, "consent": "attestation-2026-0042", **STEPS}
    job = finished(server, submit(server, request, astronaut, BELOW_FACE))
    assert job["status"] == "done", job
    assert EDIT_CATEGORY in job["decision"]["categories"] and job["decision"]["action"] == "allow"
    (image,) = job["released"]
    data = httpx.get(image["url"], headers=server.headers()).content
    assert hashlib.sha256(data).hexdigest() == image["sha256"] and astronaut not in data
    reading = read_manifest(data, "image/png")
    assert reading.state in (ManifestState.TRUSTED, ManifestState.VALID)
    assert "c2pa.edited" in reading.actions and "c2pa.created" not in reading.actions
    assert reading.ingredients == 1 and reading.generation_id == job["generation_id"]
    edit = record_of(server, job["generation_id"]).extra["edit"]
    assert edit["mode"] == "inpaint" and edit["consent"] == "attestation-2026-0042"
    assert job["edit"]["mode"] == "inpaint" and job["edit"]["strength"] == 1.0
    assert job["edit"]["mask_area_share"] == pytest.approx(56 / SIDE)
    assert job["edit"]["mask_area_share"] == edit["mask_area_share"]
    assert (
        job["edit"]["mask_sha256"] == hashlib.sha256(BELOW_FACE).hexdigest() == edit["input"]["mask_sha256"]
    )
    assert job_row(server, job["id"])[1] == {}
    # another tenant does not see the job
    other = httpx.get(f"{server.url}/v1/generations/{job['id']}", headers=server.headers("other"))
    assert other.status_code == 404


def test_an_edit_over_the_face_with_consent_is_held_for_review(server: Server, astronaut: bytes) -> None:
    # the default pack: img2img changes the face region of a real photograph -> review
    request = {"prompt": PROMPT, "consent": "c-1", "strength": 0.5, **STEPS}
    job = finished(server, submit(server, request, astronaut))
    assert job["status"] == "done" and not job["released"], job
    (held,) = job["withheld"]
    assert held["status"] == "quarantined" and EDIT_CATEGORY in held["reason"]
    assert job["decision"]["action"] == "review" and job["edit"]["strength"] == 0.5


# -- bad input is refused at submit time, naming the field, and nothing is queued ------------------


def truncated_png(astronaut: bytes) -> bytes:
    return astronaut[: len(astronaut) // 2]


def noisy_png(side: int) -> bytes:
    """A PNG over the test server's 1 MiB upload limit (random pixels do not compress)."""
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return encode_image(pixels, "png")


@pytest.mark.parametrize(
    ("case", "status", "param"),
    [
        ("mask_wrong_size", 400, "mask"),
        ("mask_empty", 400, "mask"),
        ("corrupt", 400, "image"),
        ("not_an_image", 415, "image"),
        ("gif", 415, "image"),
        ("oversize_bytes", 413, "image"),
        ("oversize_pixels", 413, "image"),
        ("mask_not_an_image", 415, "mask"),
        ("strength_zero", 400, "strength"),
        ("strength_over_one", 400, "strength"),
        ("unknown_scheduler", 400, "scheduler"),
        ("mask_without_image", 400, "image"),
        ("no_request_part", 400, "request"),
        ("blank_consent", 400, "consent"),
    ],
)
def test_bad_edit_uploads_are_4xx_naming_the_field_and_queue_nothing(
    server: Server, astronaut: bytes, case: str, status: int, param: str
) -> None:
    request: dict[str, Any] = {"prompt": PROMPT, **STEPS}
    image: bytes | None = astronaut
    mask: bytes | None = None
    if case == "mask_wrong_size":
        mask = mask_png(slice(0, 10), side=128)
    elif case == "mask_empty":
        mask = mask_png(slice(0, 0))
    elif case == "corrupt":
        image = truncated_png(astronaut)
    elif case == "not_an_image":
        image = b"%PDF-1.7 not an image at all"
    elif case == "gif":
        buffer = io.BytesIO()
        from PIL import Image

        Image.new("RGB", (64, 64)).save(buffer, format="GIF")
        image = buffer.getvalue()
    elif case == "oversize_bytes":
        image = noisy_png(700)
        assert len(image) > MAX_UPLOAD
    elif case == "oversize_pixels":
        image = png_header_only(5000, 5000)
    elif case == "mask_not_an_image":
        mask = b"GIF? no: plain text"
    elif case == "strength_zero":
        request["strength"] = 0
    elif case == "strength_over_one":
        request["strength"] = 1.5
    elif case == "unknown_scheduler":
        request["scheduler"] = "ddim"
    elif case == "mask_without_image":
        image, mask = None, BELOW_FACE
    elif case == "blank_consent":
        request["consent"] = "   "
    db_file = server.home / "audit.sqlite3"
    with sqlite3.connect(db_file) as conn:
        jobs_before = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    if case == "no_request_part":
        answer = httpx.post(
            f"{server.url}/v1/generations",
            files={"image": ("in.png", astronaut, "image/png")},
            headers=server.headers(),
        )
    else:
        answer = submit(server, request, image, mask)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["message"].startswith(param), error
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == jobs_before


@pytest.mark.parametrize("route", ["generations", "openai"])
def test_an_edit_over_the_tenants_pack_limits_is_413_when_submitted(
    server: Server, astronaut: bytes, tmp_path: Path, route: str
) -> None:
    """The tenant's pack bounds its edit inputs more tightly than the service (256x256 astronaut, pack
    limit 200x200 pixels): refused when submitted, naming the file and the pack's field; nothing queued.
    A changed pack file is read again: one that no longer loads is a 500 that does not show its path;
    at the default limits the same upload is accepted."""
    data = load_pack("default").canonical_dict()
    data["name"] = "tight_edits"
    data["edits"] = {**data.get("edits", {}), "max_input_pixels": 200 * 200}
    pack = tmp_path / f"tight-{route}.yaml"
    pack.write_text(yaml.safe_dump(data))
    tenant = server.ctx.store.create_tenant(f"tight-{route}", policy=str(pack))
    key = server.ctx.store.issue_key(tenant.name, "generator")
    headers = {"Authorization": f"Bearer {key.secret}"}

    def post() -> httpx.Response:
        if route == "openai":
            files = {"image": ("in.png", astronaut, "image/png")}
            form = {"prompt": PROMPT, "consent": "ref-1"}
            return httpx.post(
                f"{server.url}/v1/images/edits", files=files, data=form, headers=headers, timeout=60
            )
        files_ = {
            "request": (None, json.dumps({"prompt": PROMPT, **STEPS}), "application/json"),
            "image": ("in.png", astronaut, "image/png"),
        }
        return httpx.post(f"{server.url}/v1/generations", files=files_, headers=headers, timeout=60)

    db_file = server.home / "audit.sqlite3"
    with sqlite3.connect(db_file) as conn:
        jobs_before = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    answer = post()
    assert answer.status_code == 413, answer.text
    error = answer.json()["error"]
    assert error["param"] == "image"
    assert error["message"] == (
        "image: expected at most 40000 pixels (policy pack 'tight_edits': edits.max_input_pixels), "
        f"found {SIDE}x{SIDE} = {SIDE * SIDE}"
    )
    assert str(tmp_path) not in answer.text  # the pack's path on the server is not shown
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == jobs_before
    pack.write_text("name: [unclosed\n")  # a pack that no longer loads: the service's fault, not the client's
    broken = post()
    assert broken.status_code == 500 and broken.json()["error"]["code"] == "policy_unavailable", broken.text
    assert str(tmp_path) not in broken.text
    del data["edits"]["max_input_pixels"]
    pack.write_text(yaml.safe_dump(data))
    accepted = post()  # queued and governed (the OpenAI route answers with the job's outcome)
    assert accepted.status_code not in (413, 500), accepted.text
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == jobs_before + 1


def test_edit_parameters_without_an_image_and_other_bodies_are_refused(server: Server) -> None:
    url = f"{server.url}/v1/generations"
    for field, value in (("consent", "c-1"), ("strength", 0.5)):
        answer = httpx.post(url, json={"prompt": "a boat", field: value}, headers=server.headers())
        assert answer.status_code == 400 and answer.json()["error"]["param"] == field, answer.text
    text = httpx.post(
        url, content=b"prompt=a boat", headers={**server.headers(), "content-type": "text/plain"}
    )
    assert text.status_code == 415
    unauthenticated = httpx.post(url, files={"request": (None, "{}")})
    assert unauthenticated.status_code == 401


def test_a_body_over_the_limit_is_refused_by_its_content_length(server: Server, astronaut: bytes) -> None:
    big = b"\0" * (3 * MAX_UPLOAD)
    answer = httpx.post(
        f"{server.url}/v1/generations",
        files={"request": (None, json.dumps({"prompt": PROMPT})), "image": ("a.png", big, "image/png")},
        headers=server.headers(),
        timeout=60,
    )
    assert answer.status_code == 413 and "Content-Length" in answer.json()["error"]["message"]


def test_a_streamed_body_over_the_limit_is_refused_while_it_streams(server: Server) -> None:
    """No Content-Length (chunked): refused once the limit is passed, not after the whole body is in."""

    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(8):  # 8 MiB offered; the limit is about 2 MiB
            yield b"\0" * (1024 * 1024)

    answer = httpx.post(
        f"{server.url}/v1/generations",
        content=body(),
        headers={**server.headers(), "content-type": "multipart/form-data; boundary=b"},
        timeout=60,
    )
    assert answer.status_code == 413 and answer.json()["error"]["message"].endswith("found more")


# -- a queued edit survives a restart, sealed; its input is gone once it has run ---------------------


def test_a_queued_edit_survives_a_restart_and_its_input_never_sits_in_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, astronaut: bytes, embedded_cache: Path
) -> None:
    monkeypatch.setenv("GENGUARD_HOME", str(tmp_path))
    stopped = config(tmp_path, workers=0)  # no worker: the job stays queued, as when the service stops
    ctx = open_context(stopped)
    ctx.store.create_tenant("acme")
    key = ctx.store.issue_key("acme", "generator")
    request = {"prompt": PROMPT, "consent": "attestation-7", **STEPS}
    with TestClient(create_app(stopped, ctx)) as client:
        files = {
            "request": (None, json.dumps(request), "application/json"),
            "image": ("in.png", astronaut, "image/png"),
            "mask": ("m.png", BELOW_FACE, "image/png"),
        }
        accepted = client.post(
            "/v1/generations", files=files, headers={"Authorization": f"Bearer {key.secret}"}
        )
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
    # stopped: nothing of the input in clear in the database or any file of the service's folders
    runs = [astronaut[i : i + 48] for i in (len(astronaut) // 3, len(astronaut) // 2, len(astronaut) - 100)]
    everything = b"".join(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())
    assert not any(run in everything for run in runs) and astronaut not in everything
    assert count_job_inputs(tmp_path / "audit.sqlite3") == 2
    with sqlite3.connect(tmp_path / "audit.sqlite3") as conn:
        (asked,) = conn.execute("SELECT request_json FROM jobs WHERE id = ?", (job_id,)).fetchone()
    facts = json.loads(asked)["edit"]
    assert facts["image"]["sha256"] == hashlib.sha256(astronaut).hexdigest()
    assert facts["image"]["size_bytes"] == len(astronaut) and facts["mask"]["width"] == SIDE
    assert len(asked) < 2000  # hashes and sizes, never the bytes

    # restarted, with a worker: the job runs from its sealed input, which then goes
    restarted = open_context(config(tmp_path, workers=1))
    restarted.runner.start()
    try:
        job = restarted.runner.wait(job_id, key.info.tenant_id, 110)
    finally:
        restarted.runner.stop()
    assert job is not None and job.status == "done", job
    assert job.result is not None and len(job.result["released"]) == 1
    assert restarted.store.job_inputs(job_id) == {}
    assert count_job_inputs(tmp_path / "audit.sqlite3") == 0
    detail = restarted.spaces.audit(key.info.tenant_id).get_generation(
        job.generation_id or "", with_events=False
    )
    assert detail is not None and detail.extra["edit"]["consent"] == "attestation-7"
    restarted.spaces.close()
    restarted.store.close()
    restarted.audit.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sealed_inputs_open_for_their_job_only_and_go_with_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, astronaut: bytes, backend: str, request: Any
) -> None:
    monkeypatch.setenv("GENGUARD_HOME", str(tmp_path))
    url = (
        f"sqlite:///{tmp_path / 'a.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with ServiceStore.open(url) as store:
        store.create_tenant("t")
        key = store.issue_key("t", "generator")
        first = store.create_job(
            key.info.tenant_id, key.info.id, {"prompt": "x"}, {"image": astronaut, "mask": BELOW_FACE}
        )
        second = store.create_job(key.info.tenant_id, key.info.id, {"prompt": "y"}, {"image": b"other"})
        assert store.job_inputs(first.id) == {"image": astronaut, "mask": BELOW_FACE}
        with engine.begin() as conn:
            rows = conn.execute(sa.text("SELECT job_id, part, sealed, sha256 FROM job_inputs")).all()
            assert len(rows) == 3 and not any(astronaut[1000:1064] in bytes(row.sealed) for row in rows)
            (sealed,) = [row.sealed for row in rows if row.job_id == first.id and row.part == "image"]
            # a sealed part moved onto another job, or onto the other part, does not open
            conn.execute(
                sa.text("UPDATE job_inputs SET sealed = :s WHERE job_id = :j"), {"s": sealed, "j": second.id}
            )
            conn.execute(
                sa.text("UPDATE job_inputs SET sealed = :s WHERE job_id = :j AND part = 'mask'"),
                {"s": sealed, "j": first.id},
            )
        with pytest.raises(ImageInputError, match=f"job input {second.id}/image"):
            store.job_inputs(second.id)
        with pytest.raises(ImageInputError, match=f"job input {first.id}/mask"):
            store.job_inputs(first.id)
        store.finish_job(first.id, "failed", error="test")
        assert store.recover_jobs() == 0 and store.claim_next_job() is not None  # the second job runs
        assert store.recover_jobs() == 1  # a restart finds it running: failed, its input goes too
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM job_inputs")).scalar() == 0
    engine.dispose()


# -- few-step samplers -----------------------------------------------------------------------------


def test_scheduler_lcm_is_recorded_in_the_generation(server: Server) -> None:
    accepted = httpx.post(
        f"{server.url}/v1/generations",
        json={"prompt": "a red boat", "size": "64x64", "steps": 2, "guidance": 1.0, "scheduler": "lcm"},
        headers=server.headers(),
    )
    job = finished(server, accepted)
    assert job["status"] == "done" and job["scheduler"] == "lcm" and job["edit"] is None, job
    sampler = record_of(server, job["generation_id"]).extra["sampler"]
    assert sampler["scheduler"] == "LCMScheduler" and sampler["steps"] == 2


def test_an_edit_with_the_turbo_sampler_and_one_pipeline_per_sampler(
    server: Server, photos: dict[str, np.ndarray]
) -> None:
    coffee = encode_image(photos["coffee"], "png")  # no face: nothing to consent to
    request = {"prompt": "a cup", "steps": 2, "guidance": 0.0, "scheduler": "turbo", "size": "128x128"}
    job = finished(server, submit(server, request, coffee))
    assert job["status"] == "done" and job["released"] and job["scheduler"] == "turbo", job
    assert job["edit"]["mode"] == "img2img"
    sampler = record_of(server, job["generation_id"]).extra["sampler"]
    assert sampler["scheduler"] == "EulerAncestralDiscreteScheduler"
    loaded = server.ctx.runner.models_loaded
    again = finished(server, submit(server, {**request, "seed": 5}, coffee))
    assert again["status"] == "done" and server.ctx.runner.models_loaded == loaded


# -- OpenAI's images/edits, with the real openai client ----------------------------------------------


def openai_mask(rows: slice) -> bytes:
    """OpenAI's convention: fully transparent pixels are the area to edit."""
    rgba = np.full((SIDE, SIDE, 4), 255, np.uint8)
    rgba[rows, :, 3] = 0
    return encode_image(rgba, "png")


def test_openai_client_edits_with_the_openai_mask_convention(
    server: Server, astronaut: bytes, photos: dict[str, np.ndarray]
) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key.secret, timeout=120)
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.edit(image=("a.png", astronaut, "image/png"), prompt=PROMPT, n=1)
    body = refused.value.body
    assert isinstance(body, dict) and body["code"] == "content_policy_violation"
    assert EDIT_CATEGORY in body["categories"] and body["param"] == "image"

    edited = client.images.edit(
        image=("a.png", astronaut, "image/png"),
        mask=("m.png", openai_mask(slice(200, SIDE)), "image/png"),
        prompt=PROMPT,
        response_format="b64_json",
        extra_body={"consent": "attestation-9"},
    )
    assert edited.data and edited.data[0].b64_json
    import base64

    data = base64.b64decode(edited.data[0].b64_json)
    reading = read_manifest(data, "image/png")
    assert "c2pa.edited" in reading.actions and reading.ingredients == 1
    edit = record_of(server, reading.generation_id or "").extra["edit"]
    # transparent rows 200.. became the repainted region
    assert edit["mode"] == "inpaint" and edit["mask_area_share"] == pytest.approx(56 / SIDE)

    coffee = encode_image(photos["coffee"], "png")  # no face: nothing to consent to
    by_url = client.images.edit(image=("c.png", coffee, "image/png"), prompt="a cup", size="128x128")
    assert by_url.data and by_url.data[0].url and "/v1/files/" in by_url.data[0].url

    with pytest.raises(openai.BadRequestError, match="mask"):
        client.images.edit(
            image=("a.png", astronaut, "image/png"), mask=("m.png", BELOW_FACE, "image/png"), prompt=PROMPT
        )
    with pytest.raises(openai.BadRequestError, match="model"):
        client.images.edit(image=("c.png", coffee, "image/png"), prompt="a cup", model="dall-e-2")
    with pytest.raises(openai.BadRequestError, match="quality"):  # an OpenAI field not served here
        client.images.edit(image=("c.png", coffee, "image/png"), prompt="a cup", quality="high")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="ggk.key_0.nope").images.edit(
            image=("c.png", coffee, "image/png"), prompt="a cup"
        )
