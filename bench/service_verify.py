"""A bounded load test of `genguard serve` on loopback: public verify and generation jobs.

    python bench/service_verify.py [--clients 16] [--seconds 20] [--jobs 6] [--job-size 512] [--steps 4]
                                   [--repeats 3] [--profile 40]

A real `genguard serve` subprocess (SQLite, the embedded tiny-sd model, one worker) and C httpx clients:

1. Generation: one warm-up job, then `--jobs` jobs (512², `--steps` steps, one image each) submitted by the
   C clients at once: jobs per second, and each job's time in the worker (started -> finished). Their
   released files (signed, marked 512² PNGs) are the marked images of step 3.
2. The governed/raw ratio: in this process, the Python API (`GovernedPipeline`) and the raw diffusers call
   on the same pipeline, same size, steps and seed, interleaved `--repeats` times; the service's job time
   over the same raw median is its ratio. Both should agree within noise.
3. Public verify: C clients post 512² PNGs for `--seconds` (half marked, half unmarked photographs from
   scikit-image): requests per second, p50 / p99 latency, by kind; every answer must be 200.
4. The audit chain is verified afterwards, and where a verify request's time goes is profiled in process
   (`--profile` requests through the same app with cProfile: multipart parse, decode, manifest, watermark,
   lookups, the recorded event, waiting for a slot).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def photos(side: int = 512) -> list[bytes]:
    """Unmarked photographs, 512x512 RGB PNGs."""
    from skimage import data as skdata

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        image = Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((side, side))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def client(timeout: float = 60) -> httpx.Client:
    """An httpx client with TCP_NODELAY, as curl and browsers set it: without it, the request's headers
    and body go out as two writes and the second waits for the server's delayed ACK (40 ms on Linux
    loopback), a client artefact that would dominate every upload's latency."""
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(timeout=timeout, transport=transport)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--job-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", type=int, default=40)
    args = parser.parse_args()

    from genguard.audit.service_store import ServiceStore
    from genguard.audit.store import AuditStore

    work = Path(tempfile.mkdtemp(prefix="genguard-service-bench-"))
    db_url = f"sqlite:///{work / 'audit.sqlite3'}"
    from genguard.audit import tenant_spaces

    with ServiceStore.open(db_url) as store:
        tenant = tenant_spaces.create_tenant(store, db_url, "bench")
        key = store.issue_key("bench", "generator")
    headers = {"Authorization": f"Bearer {key.secret}"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GENGUARD_HOME": str(work / "home")}
    command = [
        sys.executable,
        "-m",
        "genguard",
        "serve",
        "--db",
        db_url,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    command += ["--no-dev-keys", "--files", str(work / "files"), "--verify-burst", "1000000"]
    command += ["--verify-rate", "1000000"]
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        run(args, url, headers, work, db_url)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)
    with AuditStore.open(db_url, read_only=True) as audit:
        chain = audit.verify_chain()
    print(f"shared audit chain after the run: ok={chain.ok}, {chain.entries_checked} entries checked")
    with tenant_spaces.open_tenant_store(db_url, tenant.id, read_only=True) as audit:
        chain = audit.verify_chain()
    print(f"tenant audit chain after the run: ok={chain.ok}, {chain.entries_checked} entries checked")


def run(args: Any, url: str, headers: dict[str, str], work: Path, db_url: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the server did not start; see {work / 'serve.log'}")
        time.sleep(0.2)

    # -- 2 (first, while the service is idle): the Python API's governed/raw ratio -------------------
    api_raw, api_gov = python_api_ratio(args, work)

    # -- 1: generation jobs ---------------------------------------------------------------------------
    size = f"{args.job_size}x{args.job_size}"
    body = {"prompt": "a lighthouse at dusk", "n": 1, "size": size, "steps": args.steps, "seed": 1234}

    def job(_: int) -> dict[str, Any]:
        with client(600) as http:
            accepted = http.post(f"{url}/v1/generations", json=body, headers=headers)
            accepted.raise_for_status()
            while True:
                done: dict[str, Any] = http.get(f"{accepted.json()['url']}?wait=60", headers=headers).json()
                if done["status"] not in ("queued", "running"):
                    return done

    def in_worker(done: dict[str, Any]) -> float:
        return _time(done["finished_at"]) - _time(done["started_at"])

    job(0)  # warm: the worker loads the model on its first job
    # One job at a time, one client: the job's time in the worker for the governed/raw ratio (with 16
    # clients polling ?wait= in the same process, their polling would be measured too).
    alone = [in_worker(job(0)) for _ in range(args.repeats)]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        jobs = list(pool.map(job, range(args.jobs)))
    wall = time.perf_counter() - started
    failed = [j for j in jobs if j["status"] != "done"]
    busy = statistics.median(in_worker(j) for j in jobs if j["started_at"] and j["finished_at"])
    service_job = statistics.median(alone)
    print(
        f"generation jobs ({size}, {args.steps} steps, 1 image, 1 worker, {args.clients} clients): "
        f"{args.jobs} jobs in {wall:.1f} s = {args.jobs / wall:.3f} jobs/s; in the worker median "
        f"{busy:.2f} s; not done: {len(failed)}"
    )
    print(
        f"governed/raw: Python API {api_gov / api_raw:.3f} (governed {api_gov:.2f} s, raw {api_raw:.2f} s); "
        f"service job {service_job / api_raw:.3f} (one job at a time: {service_job:.2f} s in the worker, "
        f"median of {args.repeats}, over the same raw)"
    )

    # -- 3: public verify under load --------------------------------------------------------------------
    marked = []
    with client() as http:
        for j in jobs:
            for image in j["released"]:
                marked.append(http.get(image["url"], headers=headers).content)
    unmarked = photos()
    bodies = [("marked", data) for data in marked] + [("photo", data) for data in unmarked]
    results: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + args.seconds

    def client_loop(number: int) -> None:
        turn = number
        with client() as http:
            while time.monotonic() < stop_at:
                kind = "marked" if turn % 2 == 0 else "photo"
                pool_ = [b for b in bodies if b[0] == kind]
                data = pool_[turn // 2 % len(pool_)][1]
                turn += 1
                begun = time.perf_counter()
                answer = http.post(
                    f"{url}/v1/verify",
                    files={"image": ("i.png", data, "image/png")},
                    headers={"X-Request-ID": f"load-{kind}-{number}-{turn}"},
                )
                spent = time.perf_counter() - begun
                with lock:
                    results.append((kind, answer.status_code, spent))

    with client() as warm:
        for _, data in bodies[:2]:
            warm.post(f"{url}/v1/verify", files={"image": ("i.png", data, "image/png")}, timeout=60)
    began = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    errors = [status for _, status, _ in results if status != 200]
    latencies = [spent for _, _, spent in results]
    print(
        f"public verify, 512x512 PNG, {args.clients} clients, {wall:.1f} s: {len(results)} requests, "
        f"{len(results) / wall:.1f} req/s, p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, errors {len(errors)}"
    )
    for kind in ("marked", "photo"):
        mine = [spent for k, _, spent in results if k == kind]
        if mine:
            print(
                f"  {kind}: {len(mine)} requests, p50 {percentile(mine, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(mine, 0.99) * 1000:.0f} ms"
            )
    if args.profile:
        profile_verify(url, db_url, work, bodies, args.profile)
    server_side(work / "serve.log")


def server_side(log: Path) -> None:
    """From the server's own log lines (same requests): its time per request, split into the wait for a
    verify slot, the verification (`verify_image_in_spaces` with its recorded event) and the rest of the
    service (body, multipart parse, header check, thread hand-off, response, middleware, log line)."""
    import json

    rows: dict[str, list[tuple[float, float, float]]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        rid = str(entry.get("request_id", ""))
        if (
            entry.get("path") != "/v1/verify"
            or "work_ms" not in entry
            or not rid.startswith(("load-", "one-"))
        ):
            continue
        group = "-".join(rid.split("-")[:2])
        rows.setdefault(group, []).append((entry["duration_ms"], entry["slot_wait_ms"], entry["work_ms"]))
    for group in sorted(rows):
        mine = rows[group]
        total = statistics.median(r[0] for r in mine)
        wait = statistics.median(r[1] for r in mine)
        work = statistics.median(r[2] for r in mine)
        rest = statistics.median(r[0] - r[1] - r[2] for r in mine)
        print(
            f"server side, {group} ({len(mine)} requests, medians): {total:.1f} ms = slot wait {wait:.1f} + "
            f"verification {work:.1f} + service rest {rest:.1f} ms ({rest / total * 100:.1f} %)"
        )


def _time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def python_api_ratio(args: Any, work: Path) -> tuple[float, float]:
    """Median raw diffusers call and median governed call (Python API), same pipeline object."""
    import torch

    from genguard.guard.types import GenerationParams, GenerationRequest
    from genguard.pipeline import families
    from genguard.pipeline.governed import GovernedPipeline

    governed = GovernedPipeline.from_pretrained(
        "embedded:tiny-sd", audit=f"sqlite:///{work / 'api.sqlite3'}", device="cpu"
    )
    pipe, side = governed.pipe, args.job_size
    params = GenerationParams(width=side, height=side, steps=args.steps, num_images=1, seed=1234)

    def raw() -> None:
        """The pipeline call the Governor's sample stage makes (same keyword arguments, one thread)."""
        noise = families.initial_noise(pipe, 1, side, side, torch.Generator("cpu").manual_seed(1234))
        kwargs = families.call_kwargs(
            governed.governor.family,
            prompt="a lighthouse at dusk",
            negative_prompt="",
            height=side,
            width=side,
            steps=args.steps,
            guidance_scale=params.guidance_scale,
            latents=noise,
            num_images=1,
        )
        before = torch.get_num_threads()
        torch.set_num_threads(1)  # as the Governor samples an embedded model on the CPU
        try:
            with torch.inference_mode():
                pipe(**kwargs)
        finally:
            torch.set_num_threads(before)  # the governed call's other stages run as the service's do

    def gov() -> None:
        governed(GenerationRequest("a lighthouse at dusk", params=params), out_dir=work / "api-out")

    raw()
    gov()
    raws: list[float] = []
    govs: list[float] = []
    for _ in range(args.repeats):
        for fn, times in ((raw, raws), (gov, govs)):
            begun = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begun)
    return statistics.median(raws), statistics.median(govs)


def profile_verify(url: str, db_url: str, work: Path, bodies: list[tuple[str, bytes]], count: int) -> None:
    """Where a verify request's time goes: one client against the idle server (the request's latency by
    kind), then in this process on the same database and keys: the multipart parse and
    `verify_image_in_spaces` over the service's spaces under cProfile, grouped into its parts. What is left of the latency is HTTP, routing, the event loop
    and the thread hand-off."""
    import asyncio

    from starlette.requests import Request

    from genguard.audit import tenant_spaces
    from genguard.audit.service_store import ServiceStore
    from genguard.audit.store import AuditStore
    from genguard.audit.verify import VerifySpace, verify_image_in_spaces
    from genguard.guard.config import watermark_key

    os.environ["GENGUARD_HOME"] = str(work / "home")  # the service's keys: the same watermark key
    latency: dict[str, list[float]] = {"marked": [], "photo": []}
    with client() as http:
        for n in range(count):
            kind, data = bodies[n % len(bodies)]
            begun = time.perf_counter()
            http.post(
                f"{url}/v1/verify",
                files={"image": ("i.png", data, "image/png")},
                headers={"X-Request-ID": f"one-{kind}-{n}"},
            ).raise_for_status()
            latency[kind].append(time.perf_counter() - begun)

    def parse(data: bytes) -> float:
        encoded = httpx.Request("POST", "http://x/", files={"image": ("i.png", data, "image/png")})
        body = encoded.read()
        scope = {
            "type": "http",
            "method": "POST",
            "headers": [(k.lower().encode(), v.encode()) for k, v in encoded.headers.items()],
            "path": "/",
            "query_string": b"",
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def go() -> None:
            form = await Request(scope, receive).form(max_files=1, max_fields=4)
            await form.close()

        begun = time.perf_counter()
        asyncio.run(go())
        return time.perf_counter() - begun

    parts = {
        "decode": ("imageio.py", "load_image"),
        "manifest (c2pa)": ("content_credentials.py", "read_manifest"),
        "watermark": ("verify.py", "_read_watermark"),
        "perceptual hash": ("phash.py", "perceptual_hash"),
        "lookups": ("verify.py", "run"),
        "recorded event": ("store.py", "append_event"),
        "verify_image_in_spaces (all)": ("verify.py", "verify_image_in_spaces"),
    }
    with ServiceStore.open(db_url) as store:
        (tenant,) = store.list_tenants()
    with AuditStore.open(db_url) as audit, tenant_spaces.open_tenant_store(db_url, tenant.id) as own:
        spaces = [VerifySpace(audit, watermark_key()), VerifySpace(own, watermark_key())]  # as the service
        for kind in ("marked", "photo"):
            mine = [data for k, data in bodies if k == kind]
            runs = max(1, count // 2)
            parsing = statistics.median(parse(mine[n % len(mine)]) for n in range(runs))
            verify_image_in_spaces(mine[0], spaces, name="warm")
            profiler = cProfile.Profile()
            profiler.enable()
            for n in range(runs):
                verify_image_in_spaces(mine[n % len(mine)], spaces, name="upload")
            profiler.disable()
            found: dict[str, float] = {}
            stats = pstats.Stats(profiler)
            for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
                for part, (file_end, name) in parts.items():
                    if filename.endswith(file_end) and function == name:
                        found[part] = found.get(part, 0.0) + row[3] / runs
            total = statistics.median(latency[kind])
            print(
                f"one client, {kind}: request {total * 1000:.1f} ms median over {len(latency[kind])}; in "
                f"process (cProfile on, {runs} runs): multipart parse {parsing * 1000:.2f} ms"
            )
            for part in parts:
                if part in found:
                    print(
                        f"  {part:20s} {found[part] * 1000:7.1f} ms  ({found[part] / total * 100:5.1f} % of the request)"
                    )
            rest = total - parsing - found.get("verify_image_in_spaces (all)", 0.0)
            print(
                f"  {'HTTP, routing, rest':20s} {rest * 1000:7.1f} ms  (cProfile inflates the parts a little)"
            )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
