"""Witnessed checkpoints: two C2SP tlog-witnesses on loopback (tests/_witness.py) cosign genguard's
checkpoints; verification accepts "k of these n witnesses"."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from genguard.audit import AuditStore
from genguard.audit.checkpoint import create_checkpoint, log_origin, parse_checkpoint
from genguard.audit.witness import (
    WITNESSED_EVENT,
    Witness,
    WitnessPolicy,
    request_cosignatures,
    verify_cosignatures,
)
from genguard.guard.errors import BadInputError
from tests._witness import TestWitness, running
from tests.test_audit_store import make_record
from tests.test_checkpoint import genguard

PROMPT = "a watercolour fox in the snow"  # what make_record stores (PromptStorage.FULL)


@pytest.fixture()
def store(sqlite_url: str) -> Iterator[AuditStore]:
    with AuditStore.open(sqlite_url) as opened:
        for seed in range(3):
            opened.record_generation(make_record(seed, images=2))
        yield opened


@pytest.fixture()
def witnesses(store: AuditStore) -> Iterator[tuple[TestWitness, TestWitness]]:
    from genguard.audit.checkpoint import checkpoint_key

    log_key = checkpoint_key().public_key().public_bytes_raw()
    origin = log_origin(store)
    with ExitStack() as stack:
        yield (
            stack.enter_context(running(TestWitness("witness.test/w1", {origin: log_key}))),
            stack.enter_context(running(TestWitness("witness.test/w2", {origin: log_key}))),
        )


def policy_text(ws: tuple[TestWitness, ...], quorum: int | None = None, urls: bool = True) -> str:
    lines = [f"witness {w.vkey} {w.url}" if urls else f"witness {w.vkey}" for w in ws]
    return "\n".join(["# test witnesses", *lines, *([f"quorum {quorum}"] if quorum else [])]) + "\n"


def test_two_witnesses_cosign_and_the_file_carries_their_cosignatures(
    store: AuditStore, witnesses: tuple[TestWitness, TestWitness]
) -> None:
    policy = WitnessPolicy.parse(policy_text(witnesses))
    assert policy.quorum == 2
    cosigned, outcomes = request_cosignatures(store, create_checkpoint(store), policy)
    assert [(o.name, o.cosigned, o.requests) for o in outcomes] == [
        ("witness.test/w1", True, 1),
        ("witness.test/w2", True, 1),
    ]
    reread = parse_checkpoint(cosigned.to_text().encode())
    check = verify_cosignatures(reread, policy)
    assert check.ok and check.cosigned_by == ("witness.test/w1", "witness.test/w2")
    # the log's own signature line is named by its origin, as tlog-checkpoint asks
    assert cosigned.to_text().split("\n\n")[1].startswith(f"\u2014 {cosigned.origin} ")
    # the cosignatures are also recorded in the log
    event = store.entry(cosigned.tree_size + 2)
    assert event is not None and event.event_type == WITNESSED_EVENT
    assert (
        event.payload["witnesses"] == ["witness.test/w1", "witness.test/w2"] and event.payload["quorum_met"]
    )


def test_later_checkpoints_send_a_consistency_proof_and_resync_after_lost_state(
    store: AuditStore, witnesses: tuple[TestWitness, TestWitness], genguard_home: Path
) -> None:
    policy = WitnessPolicy.parse(policy_text(witnesses))
    first, _ = request_cosignatures(store, create_checkpoint(store), policy)
    store.record_generation(make_record(7, images=3))
    second, outcomes = request_cosignatures(store, create_checkpoint(store), policy)
    assert all(o.cosigned and o.requests == 1 for o in outcomes)
    body = witnesses[0].bodies[-1].decode()
    assert body.startswith(f"old {first.tree_size}\n") and body.split("\n")[1]  # proof lines follow
    assert verify_cosignatures(second, policy).ok
    # the client forgot what the witnesses hold: they answer 409 with their size, asked once more
    (genguard_home / "witness-state.json").unlink()
    third, outcomes = request_cosignatures(store, create_checkpoint(store), policy)
    assert all(o.cosigned and o.requests == 2 for o in outcomes) and verify_cosignatures(third, policy).ok


def test_quorum_k_of_n(store: AuditStore, witnesses: tuple[TestWitness, TestWitness]) -> None:
    w1, w2 = witnesses
    down = Witness.from_vkey(w2.vkey, "http://127.0.0.1:9/")  # discard port: nothing answers
    asking = WitnessPolicy((Witness.from_vkey(w1.vkey, w1.url), down), quorum=2)
    cosigned, outcomes = request_cosignatures(store, create_checkpoint(store), asking, timeout=2)
    assert outcomes[0].cosigned and not outcomes[1].cosigned
    assert outcomes[1].problem is not None and "unreachable" in outcomes[1].problem
    both = verify_cosignatures(cosigned, WitnessPolicy.parse(policy_text(witnesses, urls=False)))
    assert not both.ok and both.cosigned_by == ("witness.test/w1",)
    assert "witness.test/w2: no cosignature" in both.problems
    assert verify_cosignatures(cosigned, WitnessPolicy.parse(policy_text(witnesses, quorum=1))).ok


def test_a_forked_view_is_not_cosigned_and_a_forged_cosignature_does_not_count(
    store: AuditStore, witnesses: tuple[TestWitness, TestWitness]
) -> None:
    _, w2 = witnesses
    policy = WitnessPolicy.parse(policy_text(witnesses))
    first, _ = request_cosignatures(store, create_checkpoint(store), policy)
    # w2 was shown another history of the same size (a split view): the log cannot prove consistency
    w2.latest[first.origin] = (first.tree_size, bytes(32))
    store.record_generation(make_record(8, images=1))
    second, outcomes = request_cosignatures(store, create_checkpoint(store), policy)
    assert outcomes[0].cosigned and not outcomes[1].cosigned
    assert outcomes[1].problem is not None and "HTTP 422" in outcomes[1].problem
    assert not verify_cosignatures(second, policy).ok
    # a cosignature line edited by hand fails its signature check
    name, stamp = second.cosignature_lines[0].split(" ")[1:]
    raw = bytearray(base64.b64decode(stamp))
    raw[-1] ^= 1
    forged = second.to_text().replace(stamp, base64.b64encode(bytes(raw)).decode())
    check = verify_cosignatures(
        parse_checkpoint(forged.encode()), WitnessPolicy.parse(policy_text(witnesses, 1))
    )
    assert not check.ok and f"{name}: cosignature does not verify over this checkpoint" in check.problems


def test_witnesses_see_commitments_never_prompts(
    store: AuditStore, witnesses: tuple[TestWitness, TestWitness]
) -> None:
    request_cosignatures(store, create_checkpoint(store), WitnessPolicy.parse(policy_text(witnesses)))
    sent = b"".join(witnesses[0].bodies + witnesses[1].bodies)
    assert sent and PROMPT.encode() not in sent and b"gen-000001" not in sent and b"fox" not in sent


def test_policy_file_errors_are_named(witnesses: tuple[TestWitness, TestWitness]) -> None:
    w1, _ = witnesses
    with pytest.raises(BadInputError, match=r"line 2: expected 'witness <vkey> \[<url>\]' or 'quorum <k>'"):
        WitnessPolicy.parse(f"witness {w1.vkey}\nquorum two\n", "p")
    with pytest.raises(BadInputError, match="expected a quorum from 1 to 1, found 2"):
        WitnessPolicy.parse(f"witness {w1.vkey}\nquorum 2\n")
    bad_id = w1.vkey.replace("+", "+00", 1)
    with pytest.raises(BadInputError, match="expected key id"):
        WitnessPolicy.parse(f"witness {bad_id}\n")
    with pytest.raises(BadInputError, match="expected a cosignature/v1 key"):
        WitnessPolicy.parse("witness w+00000000+" + base64.b64encode(b"\x01" + bytes(32)).decode() + "\n")


def test_cli_checkpoint_with_witnesses_and_verify_k_of_n(
    store: AuditStore,
    witnesses: tuple[TestWitness, TestWitness],
    sqlite_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = ["--db", sqlite_url]
    both = tmp_path / "witnesses.policy"
    both.write_text(policy_text(witnesses))
    cp = tmp_path / "log.checkpoint"
    code, out, err = genguard(
        ["audit", "checkpoint", "--out", str(cp), "--witnesses", str(both), *db], capsys
    )
    assert code == 0 and "witnessed: 2 of 2 witnesses cosigned" in err
    code, out, err = genguard(
        ["audit", "verify", "--checkpoint", str(cp), "--witnesses", str(both), *db], capsys
    )
    assert code == 0 and "witnessed: 2 of 2" in out
    # a third witness nobody asked, and a policy that needs all three: verification fails, naming it
    third = TestWitness("witness.test/w3", {})
    strict = tmp_path / "strict.policy"
    strict.write_text(policy_text(witnesses, urls=False) + f"witness {third.vkey}\n")
    code, out, err = genguard(
        ["audit", "verify", "--checkpoint", str(cp), "--witnesses", str(strict), *db], capsys
    )
    assert code == 1 and "2 of 3 witnesses cosigned" in err and "witness.test/w3: no cosignature" in err
    code, _, err = genguard(["audit", "verify", "--witnesses", str(both), *db], capsys)
    assert code == 2 and "--witnesses: expected --checkpoint too" in err
    # `audit public-key` prints the signed-note verifier key named by the log's origin
    code, _, err = genguard(["audit", "public-key", *db], capsys)
    assert code == 0 and f"verifier key: {log_origin(store)}+" in err
    assert json.dumps(err)  # printable
