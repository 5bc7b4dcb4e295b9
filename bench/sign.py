"""Content Credentials bench: milliseconds per sign and per read at 512x512, on one core.

    python bench/sign.py [--repeats 200] [--tsa-repeats 50]

Signs real photographs (scikit-image/scikit-learn) encoded as PNG, JPEG and WebP with a freshly
generated development chain: the native local-key signer and the KMS-style callback signer, then
reads and validates each signed file. Target: signing <= 5 ms per image. Prints the median and p95
of wall time and the median CPU time of the calling thread (c2pa signs and reads in it, single-threaded),
which stays meaningful on a loaded machine where wall time includes waiting for a core.

Then the same local-key signing with an RFC 3161 timestamp from a TSA on loopback (tests/_tsa.py:
OpenSSL `ts -reply` behind an HTTP handler, one process per query), beside signing without one:
the difference is the TSA round trip (a real TSA adds its network latency and queueing on top);
and with a CAWG X.509 identity assertion (the signing key doubles as the identity key here).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from genguard.guard.imageio import encode_image
from genguard.guard.provenance import (
    CallbackSigner,
    ContentCredentials,
    LocalKeySigner,
    ManifestFacts,
    ManifestState,
    Signer,
    read_manifest,
)
from genguard.guard.provenance.content_credentials import MIME_TYPES
from genguard.guard.provenance.identity import IdentityConfig
from genguard.guard.provenance.keys import create_development_chain
from genguard.guard.provenance.tsa import TsaConfig
from genguard.guard.types import ClassifierScore, ImageAction, ImageVerdict, PolicyRef
from genguard.guard.watermark import ALGORITHM
from tests._photos import photographs
from tests._tsa import local_tsa


def facts(index: int) -> ManifestFacts:
    return ManifestFacts(
        generation_id=hashlib.sha256(str(index).encode()).hexdigest()[:32],
        image_index=index,
        policy=PolicyRef("default", "1", hashlib.sha256(b"pack").hexdigest()),
        verdict=ImageVerdict(ImageAction.RELEASE, (ClassifierScore("nudenet", "320n", "sexual", 0.02),)),
        model_id="embedded:tiny-sd",
        pipeline_class="StableDiffusionPipeline",
        mark_id=(index + 1) * 7919,
        watermark_algorithm=ALGORITHM,
    )


def clock() -> tuple[float, float]:
    """(wall, CPU time of this thread), to subtract with `since`."""
    return time.perf_counter(), time.thread_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - start[0], time.thread_time() - start[1]


def summary(samples: list[tuple[float, float]]) -> str:
    walls = sorted(wall for wall, _ in samples)
    p95 = walls[min(len(walls) - 1, int(0.95 * len(walls)))]
    cpu = statistics.median(cpu for _, cpu in samples)
    return f"wall median {statistics.median(walls) * 1000:6.2f} ms  p95 {p95 * 1000:6.2f} ms  cpu median {cpu * 1000:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--tsa-repeats", type=int, default=50, help="signatures per row with a timestamp")
    args = parser.parse_args()
    chain = create_development_chain()
    key = serialization.load_pem_private_key(chain.signer_key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signers: dict[str, Signer] = {
        "local key (native)": LocalKeySigner(chain.signer_key_pem, chain.chain_pem),
        "callback (KMS seam)": CallbackSigner(
            lambda data: key.sign(data, ec.ECDSA(hashes.SHA256())), chain.chain_pem
        ),
    }
    photos = list(photographs(512).values())
    print(f"512x512, {len(photos)} photographs, {args.repeats} signatures per row, one thread")
    for fmt, mime in MIME_TYPES.items():
        files = [encode_image(photo, fmt) for photo in photos]  # type: ignore[arg-type]
        for label, signer in signers.items():
            credentials = ContentCredentials(signer)
            signed, sign_times = [], []
            for i in range(args.repeats):
                start = clock()
                signed.append(credentials.sign(files[i % len(files)], mime, facts(i)).data)
                sign_times.append(since(start))
            print(f"sign {fmt:4} {label:20} {summary(sign_times)}")
            credentials.close()
        read_times = []
        for data in signed:
            start = clock()
            reading = read_manifest(data, mime, trust_anchors_pem=chain.root_pem)
            read_times.append(since(start))
            assert reading.state is ManifestState.TRUSTED, reading
        print(f"read {fmt:4} {'validate, trusted':20} {summary(read_times)}")
        print(f"     {fmt:4} mean file size {statistics.mean(len(f) for f in files) / 1000:.0f} kB")
    bench_timestamps(chain.signer_key_pem, chain.chain_pem, chain.root_pem, photos, args.tsa_repeats)


def bench_timestamps(
    key_pem: bytes, chain_pem: bytes, root_pem: bytes, photos: list[Any], repeats: int
) -> None:
    files = [encode_image(photo, "png") for photo in photos]
    signer = LocalKeySigner(key_pem, chain_pem)
    with local_tsa() as tsa:
        rows = {
            "png no timestamp": ContentCredentials(signer),
            "png RFC 3161 (loopback)": ContentCredentials(signer, tsa=TsaConfig(tsa.url)),
            "png CAWG identity": ContentCredentials(
                signer, identity=IdentityConfig.from_pem(key_pem, chain_pem)
            ),
        }
        for label, credentials in rows.items():
            times, last = [], b""
            for i in range(repeats):
                start = clock()
                last = credentials.sign(files[i % len(files)], "image/png", facts(i)).data
                times.append(since(start))
            reading = read_manifest(last, "image/png", trust_anchors_pem=root_pem + tsa.root_pem)
            assert reading.state is ManifestState.TRUSTED, reading
            print(f"sign {label:25} {summary(times)}  (timestamped: {reading.timestamped})")
            credentials.close()
        print(f"     TSA answered {len(tsa.requests)} queries")


if __name__ == "__main__":
    main()
