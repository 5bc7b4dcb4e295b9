"""`genguard audit verify` on a large signed SQLite log: wall time and peak memory.

    python bench/audit_verify.py                       # 10^6 entries (200,000 records of 5 entries)
    python bench/audit_verify.py --entries 100000 --keep /tmp/audit-1e5.sqlite3

The log is built through the real write path (`AuditStore.record_generations`, --batch records per
transaction, log signing on), from the records of bench/audit_write.py with their C2PA manifest left
out (a manifest is covered by its digest either way; 6 KiB each would make the file 5 GB at 10^6).
Automatic checkpoints are off while building (each one re-reads every entry hash; bench/checkpoint.py
measures them). Then `python -m genguard audit verify` runs in a child process on the file, with the
log's public key passed explicitly and an empty checkpoint folder; its wall time and peak resident
memory (getrusage of the child) are printed, with the build rate and the file size.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_write import IMAGES_PER_RECORD, build_record

from genguard.audit import AuditStore
from genguard.audit.log_key import public_key_pem


def build(url: str, entries: int, batch: int) -> tuple[float, int, int]:
    """Write records until the log holds at least `entries` entries; returns (seconds, entries, entries
    written now)."""
    per_record = 1 + IMAGES_PER_RECORD
    records = -(-entries // per_record)
    started = time.perf_counter()
    with AuditStore.open(url, auto_checkpoints=False) as store:
        before = store.reader().head().seq
        done = before // per_record
        for first in range(done, records, batch):
            group = [build_record(i, manifest=None) for i in range(first, min(first + batch, records))]
            store.record_generations(group)
            if (first // batch) % 20 == 0:
                print(f"  built {first + len(group)} of {records} records", file=sys.stderr, flush=True)
        head = store.reader().head().seq
    return time.perf_counter() - started, head, head - before


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1_000_000, help="log entries (default 10^6)")
    parser.add_argument("--batch", type=int, default=1000, help="records per transaction while building")
    parser.add_argument("--keep", type=Path, default=None, help="build into (or reuse) this SQLite file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        if args.keep is not None:  # the log key must outlive the run to verify a kept file again
            home = args.keep.with_name(args.keep.name + ".home")
        os.environ["GENGUARD_HOME"] = str(home)
        path = args.keep if args.keep is not None else Path(folder) / "audit.sqlite3"
        url = f"sqlite:///{path}"
        build_s, head, written = build(url, args.entries, args.batch)
        with AuditStore.open(url, auto_checkpoints=False) as store:
            pem = Path(folder) / "log-key.pem"
            pem.write_text(public_key_pem(store.log_public_key))
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
        command = [
            sys.executable, "-m", "genguard", "audit", "verify", "--db", url,
            "--log-public-key", str(pem), "--checkpoint-dir", str(Path(folder) / "no-checkpoints"),
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(done.stdout.strip())
        if done.returncode != 0:
            raise SystemExit(f"audit verify failed ({done.returncode}): {done.stderr.strip()}")
        built = f"built in {build_s:.0f} s ({head / build_s:.0f} entries/s)" if written else "reused"
        print(
            f"log: {head} entries ({head // (1 + IMAGES_PER_RECORD)} records, {args.batch} per transaction), "
            f"{size / 2**20:.0f} MiB; {built}"
        )
        print(
            f"genguard audit verify: {wall:.1f} s wall ({head / wall:.0f} entries/s, "
            f"{wall / head * 1e6:.0f} us per entry), peak memory {peak_mib:.0f} MiB; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
        )


if __name__ == "__main__":
    main()
