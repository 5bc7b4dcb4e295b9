"""Time to sign a checkpoint over, and to verify one against, a log of --n entries (default 1,000,000).

    python bench/checkpoint.py                  # 1,000,000 leaves in memory, 3 runs
    python bench/checkpoint.py --n 100000 --runs 1 --store 20000

The Merkle part needs no database: the leaves (random 32-byte "entry hashes") are held by an
in-memory stand-in for the store's three reading calls (entry_hashes, log_id, verify_chain), so the
figures are `create_checkpoint` and `verify_against_checkpoint` themselves: the tree over all leaves,
the block roots, Ed25519 signing; then parsing the file, the signature, the tree again, the block
comparison and a consistency proof from the checkpoint (made at 90 % of the log) to the whole log.
Reading the hashes from a database and `verify_chain` come on top: --store N also times both
calls end to end on a fresh SQLite log of N entries (written first, not timed).

--witness-rounds R (default 20): the cosigning round trip with two C2SP tlog-witnesses on loopback
(tests/_witness.py): R times, a few entries are added to a SQLite log, a checkpoint is made and both
witnesses are asked to cosign it (add-checkpoint with a consistency proof); timed per round, the
checkpoint itself included and shown apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genguard.audit.checkpoint import (
    create_checkpoint,
    parse_checkpoint,
    prove_inclusion,
    verify_against_checkpoint,
)
from genguard.audit.merkle import MerkleTree, verify_consistency, verify_inclusion
from genguard.audit.store import ChainVerification


class _LeavesOnly:
    """The reading surface of AuditStore that checkpoints use, over leaves held in memory."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves

    def entry_hashes(self) -> list[bytes]:
        return self.leaves

    def log_id(self) -> str:
        return "bench"

    def verify_chain(self) -> ChainVerification:
        return ChainVerification(True, len(self.leaves), None, None, len(self.leaves))

    def append_event(self, event_type: str, payload: Any, generation_id: str | None = None) -> int:
        return len(self.leaves) + 1


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def bench_memory(n: int, runs: int) -> None:
    leaves = [os.urandom(32) for _ in range(n)]
    old = _LeavesOnly(leaves[: n * 9 // 10])
    store = _LeavesOnly(leaves)
    create, verify, build = [], [], []
    for _ in range(runs):
        start = time.perf_counter()
        tree = MerkleTree(leaves)
        tree.root()
        build.append(_ms(start))
        start = time.perf_counter()
        checkpoint = create_checkpoint(store)  # type: ignore[arg-type]
        create.append(_ms(start))
        earlier = create_checkpoint(old)  # type: ignore[arg-type]
        text = earlier.to_text().encode()
        start = time.perf_counter()
        report = verify_against_checkpoint(store, parse_checkpoint(text))  # type: ignore[arg-type]
        verify.append(_ms(start))
        assert report.ok and report.log_root == checkpoint.root_hash, report.reason
    proofs = 2000
    start = time.perf_counter()
    for i in range(proofs):
        index = (i * 7919) % n
        assert verify_inclusion(leaves[index], index, n, tree.inclusion_proof(index), checkpoint.root_hash)
    per_inclusion = _ms(start) / proofs
    start = time.perf_counter()
    for i in range(proofs):
        old_size = 1 + (i * 7919) % n
        assert verify_consistency(
            old_size, n, tree.root(old_size), checkpoint.root_hash, tree.consistency_proof(old_size)
        )
    per_consistency = _ms(start) / proofs
    print(
        f"leaves {n:,}; checkpoint file {len(checkpoint.to_text()):,} bytes, block size {checkpoint.block_size}"
    )
    print(f"tree + root             median {statistics.median(build):8.0f} ms   best {min(build):8.0f} ms")
    print(f"create_checkpoint       median {statistics.median(create):8.0f} ms   best {min(create):8.0f} ms")
    print(f"verify_against_checkpoint median {statistics.median(verify):8.0f} ms   best {min(verify):8.0f} ms"
          f"   (checkpoint of {earlier.tree_size:,}, consistency proof to {n:,})")  # fmt: skip
    print(
        f"inclusion proof make + verify {per_inclusion * 1000:6.0f} us; consistency {per_consistency * 1000:6.0f} us"
    )


def bench_store(n: int) -> None:
    from genguard.audit import AuditStore
    from genguard.audit.checkpoint import checkpoint_key
    from tests.test_audit_store import make_record

    with tempfile.TemporaryDirectory() as folder:
        os.environ["GENGUARD_HOME"] = folder
        with AuditStore.open(f"sqlite:///{folder}/audit.sqlite3") as store:
            records = [make_record(seed, images=4) for seed in range(n // 5)]
            for first in range(0, len(records), 500):
                store.record_generations(records[first : first + 500])
            checkpoint_key()
            start = time.perf_counter()
            checkpoint = create_checkpoint(store)
            created = _ms(start)
            start = time.perf_counter()
            report = verify_against_checkpoint(store, checkpoint)
            verified = _ms(start)
            assert report.ok, report.reason
            start = time.perf_counter()
            prove_inclusion(store, n // 2, checkpoint)
            proved = _ms(start)
    print(
        f"SQLite log of {checkpoint.tree_size:,} entries: create_checkpoint {created:.0f} ms, "
        f"verify_against_checkpoint (incl. verify_chain) {verified:.0f} ms, prove_inclusion {proved:.0f} ms"
    )


def bench_witnesses(rounds: int, home: str) -> None:
    from contextlib import ExitStack

    from genguard.audit.checkpoint import checkpoint_key, log_origin
    from genguard.audit.store import AuditStore
    from genguard.audit.witness import WitnessPolicy, request_cosignatures, verify_cosignatures
    from tests._witness import TestWitness, running
    from tests.test_audit_store import make_record

    with AuditStore.open(f"sqlite:///{home}/witness-bench.sqlite3") as store, ExitStack() as stack:
        key = checkpoint_key().public_key().public_bytes_raw()
        origin = log_origin(store)
        ws = [stack.enter_context(running(TestWitness(f"witness.test/w{i}", {origin: key}))) for i in (1, 2)]
        policy = WitnessPolicy.parse("".join(f"witness {w.vkey} {w.url}\n" for w in ws))
        signing, cosigning = [], []
        for i in range(rounds):
            store.record_generations([make_record(1000 * i + k, images=2) for k in range(5)])
            start = time.perf_counter()
            checkpoint = create_checkpoint(store)
            middle = time.perf_counter()
            cosigned, outcomes = request_cosignatures(store, checkpoint, policy)
            cosigning.append(time.perf_counter() - middle)
            signing.append(middle - start)
            assert verify_cosignatures(cosigned, policy).ok, outcomes
        print(
            f"witnessing, {rounds} rounds, 2 witnesses on loopback, log up to {checkpoint.tree_size} entries: "
            f"checkpoint {statistics.median(signing) * 1000:.1f} ms median; cosigning round trip (both witnesses, "
            f"sequential) {statistics.median(cosigning) * 1000:.1f} ms median, {max(cosigning) * 1000:.1f} ms max"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--store", type=int, default=0, help="Also time a real SQLite log of this many entries."
    )
    parser.add_argument("--witness-rounds", type=int, default=20, help="Cosigning rounds with two witnesses.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ.setdefault("GENGUARD_HOME", home)
        bench_memory(args.n, args.runs)
        if args.store:
            bench_store(args.store)
        if args.witness_rounds:
            bench_witnesses(args.witness_rounds, home)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
