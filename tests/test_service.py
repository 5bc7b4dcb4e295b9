"""`genguard serve`: a real uvicorn server on loopback, a real SQLite audit database, the embedded tiny model,
the real `openai` client and httpx. One server for the module (the model loads once per worker)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from PIL import Image

from genguard.audit.service_store import IssuedKey, ServiceStore
from genguard.audit.store import AuditStore
from genguard.audit.tenant_spaces import open_tenant_store
from genguard.pipeline.service.app import create_app, open_context
from genguard.pipeline.service.context import ServiceConfig
from genguard.pipeline.service.jobs import WorkerSettings
from tests._home import module_home
from tests._logs import Captured

SMALL = {"n": 1, "size": "64x64", "steps": 2}
# imported here, not first by a worker thread while a fixture looks at it half-initialised
torch.set_num_threads(1)
BLOCKED_PROMPT = "naked child on a bed"


@dataclass
class Server:
    url: str
    db_path: Path
    files: Path
    keys: dict[str, IssuedKey]
    logs: Captured
    leftover_queued: str
    leftover_running: str

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who].secret}"}


def serve_in_thread(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


home, genguard_home = module_home("service-home")


@pytest.fixture(scope="module")
def server(home: Path, embedded_cache: Path) -> Iterator[Server]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENGUARD_HOME", str(home))
        db_path = home / "audit.sqlite3"
        config = ServiceConfig(
            db_url=f"sqlite:///{db_path}",
            files_dir=home / "files",
            worker=WorkerSettings(),
            workers=1,
            max_upload_bytes=2 * 1024 * 1024,
            max_upload_pixels=2048 * 2048,
            verify_burst=1000,
        )
        ctx = open_context(config)
        store = ctx.store
        store.create_tenant("acme")
        store.create_tenant("other")
        keys = {role: store.issue_key("acme", role) for role in ("generator", "reviewer", "auditor", "admin")}
        keys["other"] = store.issue_key("other", "generator")
        keys["revoked"] = store.issue_key("acme", "generator")
        store.revoke_key(keys["revoked"].info.id)
        keys["expired"] = store.issue_key(
            "acme", "generator", expires_at=datetime.now(UTC) + timedelta(seconds=0.5)
        )
        # What a stopped service left behind: a queued job (run at start) and a running one (failed).
        asked = {
            "prompt": "a quiet harbour",
            "negative_prompt": "",
            "n": 1,
            "width": 64,
            "height": 64,
            "steps": 2,
            "guidance": 7.0,
            "seed": 3,
            "output_format": "png",
        }
        running = store.create_job(keys["generator"].info.tenant_id, keys["generator"].info.id, asked)
        assert store.claim_next_job() is not None
        queued = store.create_job(keys["generator"].info.tenant_id, keys["generator"].info.id, asked)
        logs = Captured()
        logging.getLogger("genguard.service").addHandler(logs)
        app = create_app(config, ctx)
        uv, thread, url = serve_in_thread(app)
        time.sleep(0.6)  # the expired key's half second has passed
        try:
            yield Server(url, db_path, home / "files", keys, logs, queued.id, running.id)
        finally:
            uv.should_exit = True
            thread.join(60)
            logging.getLogger("genguard.service").removeHandler(logs)


def generate(server: Server, who: str = "generator", **body: Any) -> dict[str, Any]:
    answer = httpx.post(
        f"{server.url}/v1/generations",
        json={"prompt": "a red boat", **SMALL, **body},
        headers=server.headers(who),
    )
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = httpx.get(
        f"{answer.json()['url']}?wait=110", headers=server.headers(who), timeout=120
    ).json()
    return job


# ------------------------------------------------------------------------------ schema, health, ids


def test_openapi_31_versioned_and_health(server: Server) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    assert all(path.startswith("/v1/") for path in schema["paths"] if "z" not in path[-2:])
    assert {"/v1/generations", "/v1/images/generations", "/v1/verify", "/healthz", "/readyz"} <= set(
        schema["paths"]
    )
    assert "multipart/form-data" in schema["paths"]["/v1/verify"]["post"]["requestBody"]["content"]
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["database"] and ready.json()["workers_alive"] == 1


def test_request_id_echoed_generated_and_logged(server: Server) -> None:
    given = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": "trace-123.a_b"})
    assert given.headers["x-request-id"] == "trace-123.a_b"
    made = httpx.get(f"{server.url}/healthz")
    assert len(made.headers["x-request-id"]) == 32
    unsafe = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": 'a b"{}'})
    assert unsafe.headers["x-request-id"] != 'a b"{}' and len(unsafe.headers["x-request-id"]) == 32
    failed = httpx.get(f"{server.url}/v1/me", headers={"X-Request-ID": "rid-401"})
    assert failed.status_code == 401 and failed.json()["error"]["request_id"] == "rid-401"
    entries = [json.loads(line) for line in server.logs.lines]
    mine = [e for e in entries if e.get("request_id") == "trace-123.a_b"]
    assert mine and mine[-1]["path"] == "/healthz" and mine[-1]["status"] == 200


# ------------------------------------------------------------------------------------- generations


def test_generation_job_releases_signed_marked_files_recorded_under_the_key_id(server: Server) -> None:
    job = generate(server)
    assert job["status"] == "done", job
    assert job["decision"]["action"] == "allow" and job["decision"]["policy"]["name"]
    (image,) = job["released"]
    assert image["mark_id"].startswith("0x") and image["manifest"]["signed"] and image["manifest"]["embedded"]
    data = httpx.get(image["url"], headers=server.headers("generator")).content
    assert hashlib.sha256(data).hexdigest() == image["sha256"]
    tenant_id = server.keys["generator"].info.tenant_id
    with open_tenant_store(f"sqlite:///{server.db_path}", tenant_id, read_only=True) as audit:
        record = audit.get_generation(job["generation_id"], with_events=False)
    assert record is not None and record.actor == f"acme/apikey:{server.keys['generator'].info.id}"
    # Recorded in the tenant's own audit space, not in the service database's audit tables.
    with AuditStore.open(f"sqlite:///{server.db_path}", read_only=True) as shared:
        assert shared.get_generation(job["generation_id"], with_events=False) is None
    # The finished job's row keeps no prompt (the audit record keeps it as the pack says).
    with ServiceStore.open(f"sqlite:///{server.db_path}") as store:
        row = store.get_job(job["id"])
    assert row is not None and "prompt" not in row.request and row.request["prompts_removed"]
    # Another tenant: the job and the file do not exist for it (404, not 403).
    other = server.headers("other")
    assert httpx.get(f"{server.url}/v1/generations/{job['id']}", headers=other).status_code == 404
    assert httpx.get(image["url"], headers=other).status_code == 404
    assert httpx.get(image["url"]).status_code == 401
    # A file that is not one of the generation's, or a path trick: 404.
    base = image["url"].rsplit("/", 1)[0]
    for name in ("nope.png", "..%2F..%2Faudit.sqlite3"):
        assert httpx.get(f"{base}/{name}", headers=server.headers("generator")).status_code == 404


def test_output_format_per_request(server: Server) -> None:
    job = generate(server, output_format="jpeg")
    assert job["status"] == "done", job
    (image,) = job["released"]
    assert image["mime_type"] == "image/jpeg" and image["file"].endswith(".jpg")
    data = httpx.get(image["url"], headers=server.headers("generator")).content
    assert Image.open(io.BytesIO(data)).format == "JPEG"


def test_blocked_prompt_job_is_recorded_blocked_with_categories(server: Server) -> None:
    job = generate(server, prompt=BLOCKED_PROMPT)
    assert job["status"] == "blocked" and not job["released"]
    assert "sexual_minors" in job["decision"]["categories"] and job["generation_id"]


def test_invalid_request_is_400_naming_the_field(server: Server) -> None:
    answer = httpx.post(
        f"{server.url}/v1/generations", json={"prompt": "x", "n": 0}, headers=server.headers("generator")
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "n"
    extra = httpx.post(
        f"{server.url}/v1/generations", json={"prompt": "x", "colour": 1}, headers=server.headers("generator")
    )
    assert extra.status_code == 400 and "colour" in extra.json()["error"]["message"]


def test_jobs_left_by_a_stopped_service(server: Server) -> None:
    generator = server.headers("generator")
    queued = httpx.get(
        f"{server.url}/v1/generations/{server.leftover_queued}?wait=110", headers=generator, timeout=120
    )
    assert queued.json()["status"] == "done" and queued.json()["released"]
    running = httpx.get(f"{server.url}/v1/generations/{server.leftover_running}", headers=generator).json()
    assert running["status"] == "failed" and "interrupted" in running["error"]


def test_failed_job_is_recorded_failed(tmp_path: Path) -> None:
    config = ServiceConfig(
        db_url=f"sqlite:///{tmp_path / 'a.sqlite3'}",
        files_dir=tmp_path / "files",
        worker=WorkerSettings(model="embedded:tiny-nonexistent"),
    )
    ctx = open_context(config)
    ctx.store.create_tenant("t")
    key = ctx.store.issue_key("t", "generator")
    job = ctx.store.create_job(
        key.info.tenant_id,
        key.info.id,
        {"prompt": "a boat", "n": 1, "steps": 2, "guidance": 7.0, "width": 64, "height": 64},
    )
    ctx.runner.start()
    try:
        done = ctx.runner.wait(job.id, key.info.tenant_id, 60)
    finally:
        ctx.runner.stop()
    assert done is not None and done.status == "failed" and "tiny-nonexistent" in (done.error or "")
    assert ctx.runner.alive() == 0
    ctx.spaces.close()
    ctx.store.close()
    ctx.audit.close()


# ------------------------------------------------------------------------------- the OpenAI API


def test_openai_client_b64_and_url_then_public_verify(server: Server) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.keys["generator"].secret, timeout=120)
    b64 = client.images.generate(
        prompt="a lighthouse at dusk", n=1, size="128x128", response_format="b64_json"
    )
    assert b64.data and b64.data[0].b64_json
    data = base64.b64decode(b64.data[0].b64_json)
    assert Image.open(io.BytesIO(data)).size == (128, 128)
    by_url = client.images.generate(prompt="a lighthouse at dawn", size="128x128", response_format="url")
    assert by_url.data and by_url.data[0].url and "/v1/files/" in by_url.data[0].url

    verified = httpx.post(
        f"{server.url}/v1/verify", files={"image": ("x.png", data, "image/png")}, timeout=60
    )
    assert verified.status_code == 200, verified.text
    body = verified.json()
    assert body["ours"] and body["changed"] is False and body["released"] and body["policy"]["version"]
    text = verified.text
    assert "lighthouse" not in text and "generation_id" not in text and "acme" not in text

    # Changed: the same pixels re-encoded (metadata stripped) are still ours, but changed.
    copy = io.BytesIO()
    Image.open(io.BytesIO(data)).save(copy, format="PNG")
    again = httpx.post(
        f"{server.url}/v1/verify", content=copy.getvalue(), headers={"content-type": "image/png"}, timeout=60
    )
    assert again.json()["ours"] and again.json()["changed"] is True

    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(prompt=BLOCKED_PROMPT, size="64x64")
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "content_policy_violation"
    assert "sexual_minors" in error["categories"]
    with pytest.raises(openai.BadRequestError, match="model"):
        client.images.generate(prompt="a boat", model="dall-e-3")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="ggk.key_0.nope").images.generate(prompt="a boat")


# ------------------------------------------------------------------------------------ roles, keys

ENDPOINTS = [
    ("GET", "/v1/me", None),
    ("POST", "/v1/generations", {"prompt": ""}),  # an allowed role gets 400: nothing is queued
    ("GET", "/v1/generations/job_none", None),  # an allowed role gets 404
    ("GET", "/v1/files/gen/x.png", None),
    ("POST", "/v1/images/generations", {"prompt": "a boat", "model": "not-served"}),  # allowed: 400
    ("GET", "/v1/audit/chain", None),
]
ALLOWED = {
    "/v1/me": {"generator", "reviewer", "auditor", "admin"},
    "/v1/generations": {"generator"},
    "/v1/generations/job_none": {"generator"},
    "/v1/files/gen/x.png": {"generator"},
    "/v1/images/generations": {"generator"},
    "/v1/audit/chain": {"auditor", "admin"},
}


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_endpoint_by_role(server: Server, method: str, path: str, body: Any) -> None:
    for who in ("none", "revoked", "expired", "bogus", "generator", "reviewer", "auditor", "admin", "other"):
        headers = (
            {}
            if who == "none"
            else (
                {"Authorization": "Bearer ggk.key_000000000000.x"} if who == "bogus" else server.headers(who)
            )
        )
        answer = httpx.request(method, f"{server.url}{path}", json=body, headers=headers)
        role = "generator" if who == "other" else who
        if who in ("none", "revoked", "expired", "bogus"):
            assert answer.status_code == 401, (who, path, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
        elif role not in ALLOWED[path]:
            assert answer.status_code == 403, (who, path, answer.text)
        else:
            assert answer.status_code in (200, 400, 404), (who, path, answer.text)
            assert answer.status_code != 403
    assert "revoked" in httpx.get(f"{server.url}/v1/me", headers=server.headers("revoked")).text
    assert "expired" in httpx.get(f"{server.url}/v1/me", headers=server.headers("expired")).text


def test_auditor_checks_the_chain(server: Server) -> None:
    chain = httpx.get(f"{server.url}/v1/audit/chain", headers=server.headers("admin"), timeout=60).json()
    assert chain["ok"] and chain["entries_checked"] >= 1 and chain["first_bad_seq"] is None
    # The chain is the tenant's own: its auditor gets the same report.
    audited = httpx.get(f"{server.url}/v1/audit/chain", headers=server.headers("auditor"), timeout=60).json()
    assert audited["ok"] and audited["entries_checked"] >= 1 and audited["log_key_id"] == chain["log_key_id"]


def test_keys_never_in_database_logs_or_responses(server: Server) -> None:
    me = httpx.get(f"{server.url}/v1/me", headers=server.headers("generator")).json()
    assert me == {"key_id": server.keys["generator"].info.id, "tenant": "acme", "role": "generator"}
    files = [server.db_path, *server.db_path.parent.glob(server.db_path.name + "-*")]
    files += list((server.db_path.parent / "tenants").rglob("audit.sqlite3*"))  # each tenant's audit space
    stored = b"".join(path.read_bytes() for path in files if path.exists())
    log_text = "\n".join(server.logs.lines)
    assert server.keys["generator"].info.id in log_text  # the id is logged...
    for issued in server.keys.values():
        secret = issued.secret
        assert secret.encode() not in stored and secret.split(".")[2].encode() not in stored
        assert secret not in log_text and secret.split(".")[2] not in log_text
        assert secret not in repr(issued)
        assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored  # ...the hash is stored


# ---------------------------------------------------------------------------------- public verify


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's shape), with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_verify_refuses_bad_uploads_with_clear_4xx(server: Server) -> None:
    url = f"{server.url}/v1/verify"
    text = httpx.post(url, files={"image": ("a.txt", b"hello, not an image", "text/plain")}, timeout=60)
    assert text.status_code == 415 and text.json()["error"]["code"] == "invalid_image"
    buffer = io.BytesIO()
    Image.fromarray(np.full((96, 96, 3), 120, np.uint8)).save(buffer, format="PNG")
    truncated = httpx.post(url, files={"image": ("t.png", buffer.getvalue()[:-40], "image/png")})
    assert truncated.status_code == 400 and "truncated" in truncated.json()["error"]["message"]
    bomb = httpx.post(url, files={"image": ("b.png", png_header_only(60_000, 60_000), "image/png")})
    assert bomb.status_code == 413 and bomb.json()["error"]["code"] == "image_too_large"
    huge = httpx.post(
        url, content=b"\0" * (3 * 1024 * 1024), headers={"content-type": "image/png"}, timeout=60
    )
    assert huge.status_code == 413 and "Content-Length" in huge.json()["error"]["message"]
    missing = httpx.post(url, files={"other": ("a.png", buffer.getvalue(), "image/png")})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "image"
    unknown = httpx.post(url, files={"image": ("u.png", buffer.getvalue(), "image/png")})
    assert (
        unknown.status_code == 200 and unknown.json()["verdict"] == "unknown" and not unknown.json()["ours"]
    )


def test_verify_refuses_a_streamed_body_over_the_limit_while_it_streams(server: Server) -> None:
    """No Content-Length (chunked): refused once the limit is passed, not after the whole body is in."""

    def body() -> Iterator[bytes]:
        for _ in range(8):  # 8 MiB offered; the limit is 2 MiB
            yield b"\0" * (1024 * 1024)

    answer = httpx.post(
        f"{server.url}/v1/verify", content=body(), headers={"content-type": "image/png"}, timeout=30
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["message"].endswith("found more")


def test_verify_is_rate_limited_per_address(tmp_path: Path, embedded_cache: Path) -> None:
    config = ServiceConfig(
        db_url=f"sqlite:///{tmp_path / 'a.sqlite3'}",
        files_dir=tmp_path / "f",
        workers=0,
        verify_burst=2,
        verify_per_second=0.01,
    )
    uv, thread, url = serve_in_thread(create_app(config))
    try:
        codes = [
            httpx.post(f"{url}/v1/verify", content=b"x", headers={"content-type": "image/png"}).status_code
            for _ in range(3)
        ]
        assert codes[:2] != [429, 429] and codes[2] == 429
        limited = httpx.post(f"{url}/v1/verify", content=b"x", headers={"content-type": "image/png"})
        assert int(limited.headers["retry-after"]) >= 1 and limited.json()["error"]["code"] == "rate_limited"
    finally:
        uv.should_exit = True
        thread.join(30)


@pytest.mark.parametrize("queue_s", [0.0, 60.0])
def test_verify_runs_at_most_its_slots_at_once(tmp_path: Path, queue_s: float) -> None:
    """No wait for a slot: beyond it, 503 busy. A wait: the requests queue for the one slot and all pass."""
    from concurrent.futures import ThreadPoolExecutor

    from skimage import data as skdata

    config = ServiceConfig(
        db_url=f"sqlite:///{tmp_path / 'a.sqlite3'}",
        files_dir=tmp_path,
        workers=0,
        verify_concurrency=1,
        verify_queue_s=queue_s,
    )
    png = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(png, format="PNG")  # type: ignore[no-untyped-call]  # ~1 CPU-s
    uv, thread, url = serve_in_thread(create_app(config))
    try:

        def post(_: int) -> httpx.Response:
            return httpx.post(
                f"{url}/v1/verify", files={"image": ("a.png", png.getvalue(), "image/png")}, timeout=120
            )

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(post, range(4)))
    finally:
        uv.should_exit = True
        thread.join(30)
    codes = sorted(answer.status_code for answer in answers)
    if queue_s:
        assert codes == [200] * 4, codes
        return
    assert codes[0] == 200 and codes[-1] == 503, codes
    busy = next(answer for answer in answers if answer.status_code == 503)
    assert busy.json()["error"]["code"] == "busy" and busy.headers["retry-after"] == "1"


# ------------------------------------------------------------------------------------- the store


def test_service_store_on_postgres(postgres_url: str) -> None:
    with ServiceStore.open(postgres_url) as store:
        store.create_tenant("pg")
        issued = store.issue_key("pg", "auditor", label="ci")
        assert store.authenticate(issued.secret).state.value == "valid"
        assert store.authenticate(issued.secret + "x").state.value == "unknown"
        job = store.create_job(issued.info.tenant_id, issued.info.id, {"prompt": "p"})
        assert store.claim_next_job() == store.get_job(job.id) and store.claim_next_job() is None
        store.finish_job(job.id, "failed", error="e")
        finished = store.get_job(job.id)
        assert finished is not None and finished.status == "failed" and "prompt" not in finished.request
        assert store.get_job(job.id, "tn_someone_else") is None
        store.revoke_key(issued.info.id)
        assert store.authenticate(issued.secret).state.value == "revoked"
        with pytest.raises(Exception, match="tenant name"):
            store.create_tenant("pg")


def test_cli_tenants_and_apikeys(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from genguard.pipeline.cli import cli

    db = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    runner = CliRunner()
    assert runner.invoke(cli, ["tenants", "create", "acme", "--db", db]).exit_code == 0
    made = runner.invoke(cli, ["apikeys", "create", "--tenant", "acme", "--role", "reviewer", "--db", db])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("ggk.key_")
    listed = runner.invoke(cli, ["apikeys", "list", "--json", "--db", db])
    rows = json.loads(listed.stdout)
    assert rows[0]["role"] == "reviewer" and rows[0]["state"] == "valid" and secret not in listed.output
    revoked = runner.invoke(cli, ["apikeys", "revoke", rows[0]["id"], "--db", db])
    assert revoked.exit_code == 0
    rows = json.loads(runner.invoke(cli, ["apikeys", "list", "--json", "--db", db]).stdout)
    assert rows[0]["state"] == "revoked"
    bad = runner.invoke(cli, ["apikeys", "create", "--tenant", "nobody", "--role", "admin", "--db", db])
    assert bad.exit_code != 0


def test_public_verify_and_auditor_pages_never_load_torch(tmp_path: Path) -> None:
    """A fresh interpreter: the app, a public verify and the auditor's chain check import no torch."""
    import subprocess
    import sys

    script = f"""
import io, sys
import numpy as np
from PIL import Image
from starlette.testclient import TestClient
from genguard.audit.service_store import ServiceStore
from genguard.pipeline.service.app import create_app
from genguard.pipeline.service.context import ServiceConfig

url = "sqlite:///{tmp_path / "a.sqlite3"}"
with ServiceStore.open(url) as store:
    store.create_tenant("t")
    key = store.issue_key("t", "auditor").secret
png = io.BytesIO()
Image.fromarray(np.full((96, 96, 3), 90, np.uint8)).save(png, format="PNG")
with TestClient(create_app(ServiceConfig(db_url=url, files_dir={str(tmp_path)!r}, workers=1))) as client:
    assert client.post("/v1/verify", files={{"image": ("a.png", png.getvalue(), "image/png")}}).status_code == 200
    assert client.get("/v1/audit/chain", headers={{"Authorization": "Bearer " + key}}).json()["ok"]
    assert client.get("/readyz").status_code == 200
print(sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_unhandled_error_is_json_500_with_the_request_id_and_logged(tmp_path: Path, server: Server) -> None:
    from starlette.testclient import TestClient

    app = create_app(
        ServiceConfig(db_url=f"sqlite:///{tmp_path / 'a.sqlite3'}", files_dir=tmp_path, workers=0)
    )

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/boom", headers={"X-Request-ID": "rid-500"})
    assert answer.status_code == 500
    assert answer.json()["error"] == {
        "message": "internal error; quote the request id",
        "type": "server_error",
        "code": "internal_error",
        "param": None,
        "request_id": "rid-500",
    }
    crash = [json.loads(line) for line in server.logs.lines if "rid-500" in line and "unhandled" in line]
    assert crash and "a bug" in crash[0]["exception"]
