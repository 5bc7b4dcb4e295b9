"""Public verify over HTTP: requests per second and latency with C concurrent clients.

A real uvicorn server on loopback (no model: workers=0), a fresh SQLite audit database, a 512x512 photo
(scikit-image's astronaut) as PNG; every request decodes it, reads its manifest, detects the watermark,
looks up the hashes and appends the chained `verify.performed` event.

    python bench/service_verify.py [--requests 60] [--clients 4]
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn
from PIL import Image
from skimage import data as skdata

from genguard.pipeline.service.app import create_app
from genguard.pipeline.service.context import ServiceConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    config = ServiceConfig(
        db_url=f"sqlite:///{folder / 'audit.sqlite3'}", files_dir=folder, workers=0, verify_burst=10**6
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/verify"
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_config=None, access_log=False))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    png = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(png, format="PNG")  # type: ignore[no-untyped-call]
    body = png.getvalue()

    def one(_: int) -> float:
        started = time.perf_counter()
        answer = httpx.post(url, files={"image": ("a.png", body, "image/png")}, timeout=120)
        answer.raise_for_status()
        return time.perf_counter() - started

    one(0)  # warm: first imports, first database writes
    started = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        latencies = sorted(pool.map(one, range(args.requests)))
    wall = time.perf_counter() - started
    server.should_exit = True
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(
        f"public verify, 512x512 PNG, {args.clients} clients, {args.requests} requests: "
        f"{args.requests / wall:.1f} req/s, p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
