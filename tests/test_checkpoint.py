"""Signed checkpoints over the audit log: RFC 9162 Merkle vectors, tampering, proofs, keys and the CLI."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from genguard.audit import AuditStore
from genguard.audit.chain import GENESIS_PREV, canonical_json, entry_hash, event_json, format_time
from genguard.audit.checkpoint import (
    Checkpoint,
    check_inclusion_proof,
    create_checkpoint,
    parse_checkpoint,
    parse_inclusion_proof,
    prove_inclusion,
    verify_against_checkpoint,
)
from genguard.audit.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    fold_block_roots,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from genguard.guard.errors import BadInputError, GenguardError
from tests.test_audit_store import make_record

# ------------------------------------------------------------ a naive reference, straight from the RFC


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    """MTH(D[n]), RFC 9162 section 2.1.1, recursive as written."""
    if not d:
        return hashlib_sha256(b"")
    if len(d) == 1:
        return hashlib_sha256(b"\x00" + d[0])
    k = _k(len(d))
    return hashlib_sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]), section 2.1.3.1."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), section 2.1.4.1."""
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def hashlib_sha256(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(data).digest()


LEAVES = [f"leaf {i}".encode() * (i % 3 + 1) for i in range(40)]
TREE = MerkleTree(LEAVES)


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


def test_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"x") == hashlib_sha256(b"\x00x")
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib_sha256(b"\x01" + b"a" * 32 + b"b" * 32)
    assert MerkleTree([]).root() == EMPTY_ROOT == hashlib_sha256(b"")


@pytest.mark.parametrize("n", range(1, 41))
def test_inclusion_proofs_match_the_reference_and_verify(n: int) -> None:
    d = LEAVES[:n]
    root = ref_mth(d)
    assert TREE.root(n) == MerkleTree(d).root() == root
    for m in range(n):
        path = TREE.inclusion_proof(m, n)
        assert path == ref_path(m, d) == MerkleTree(d).inclusion_proof(m)
        assert verify_inclusion(d[m], m, n, path, root)
        # tampered: every sibling, the leaf, the index, the root, a shorter or longer path
        for i in range(len(path)):
            assert not verify_inclusion(d[m], m, n, [*path[:i], _flip(path[i]), *path[i + 1 :]], root)
        assert not verify_inclusion(d[m] + b"!", m, n, path, root)
        assert not verify_inclusion(d[m], m + 1, n, path, root)
        assert not verify_inclusion(d[m], n, n, path, root)  # index outside the tree
        assert not verify_inclusion(d[m], m, n, path, _flip(root))
        if path:
            assert not verify_inclusion(d[m], m, n, path[:-1], root)
        assert not verify_inclusion(d[m], m, n, [*path, root], root)
        # wrong size: the proof does not hold for the tree of another size (a checkpoint signs size and
        # root together, so a size is never checked against another size's root)
        for other in {n - 1, n + 1, 2 * n} - {n}:
            if m < other <= len(LEAVES):
                assert not verify_inclusion(d[m], m, other, path, TREE.root(other))


@pytest.mark.parametrize("n", range(1, 41))
def test_consistency_proofs_match_the_reference_and_verify(n: int) -> None:
    d = LEAVES[:n]
    root = ref_mth(d)
    for m in range(1, n + 1):
        proof = TREE.consistency_proof(m, n)
        assert proof == ref_subproof(m, d, True)
        old_root = ref_mth(d[:m])
        assert verify_consistency(m, n, old_root, root, proof)
        if m == n:
            assert not verify_consistency(m, n, old_root, root, [root])
            continue
        for i in range(len(proof)):
            assert not verify_consistency(
                m, n, old_root, root, [*proof[:i], _flip(proof[i]), *proof[i + 1 :]]
            )
        assert not verify_consistency(m, n, _flip(old_root), root, proof)
        assert not verify_consistency(m, n, old_root, _flip(root), proof)
        assert not verify_consistency(m, n, old_root, root, proof[:-1])
        assert not verify_consistency(m, n, old_root, root, [*proof, root])
        assert not verify_consistency(m, n, old_root, root, [])
        for other in {m - 1, m + 1} - {0, n}:  # the old tree of another size, with its own root
            assert not verify_consistency(other, n, ref_mth(d[:other]), root, proof)
        if n < len(LEAVES):  # the new tree of another size, with its own root
            assert not verify_consistency(m, n + 1, old_root, TREE.root(n + 1), proof)
    assert verify_consistency(0, n, EMPTY_ROOT, root, [])
    assert not verify_consistency(n, n - 1, root, ref_mth(d[:-1]), [])


def test_tree_scales_and_blocks_fold_to_the_root() -> None:
    leaves = [i.to_bytes(32, "big") for i in range(5000)]
    tree = MerkleTree(leaves)
    for n in (1, 2, 3, 255, 256, 257, 1000, 4097, 5000):
        assert tree.root(n) == MerkleTree(leaves[:n]).root()
        for block in (1, 2, 8, 64):
            blocks = [tree.range_root(s, min(s + block, n)) for s in range(0, n, block)]
            assert fold_block_roots(blocks) == tree.root(n)
    assert tree.root(1000) == ref_mth(leaves[:1000])
    with pytest.raises(ValueError, match="multiple of"):
        tree.range_root(1, 3)


# --------------------------------------------------------------------------------------- the log


@pytest.fixture
def logged(sqlite_url: str) -> Iterator[tuple[AuditStore, Checkpoint]]:
    """4 generations of 2 images (entries 1..12), 3 review events (13..15), a checkpoint of 15 (entry 16)."""
    store = AuditStore.open(sqlite_url)
    _fill(store)
    checkpoint = create_checkpoint(store)
    yield store, checkpoint
    store.close()


def _fill(store: AuditStore) -> None:
    for seed in range(4):
        store.record_generation(make_record(seed, images=2))
    for decision in ("release", "reject", "release"):
        store.append_event("review.decision", {"decision": decision}, "gen-000001")


def _sql(url: str, *statements: str, params: dict[str, Any] | None = None) -> None:
    """An attacker's connection: plain SQL, no genguard."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), params or {})
    engine.dispose()


def _rewrite(url: str, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """The strong attacker: changes the log, then recomputes every entry hash and the chain head."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM audit_log ORDER BY seq"))]
        rows = change(rows)
        conn.execute(sa.text("DELETE FROM audit_log"))
        prev = GENESIS_PREV
        for seq, row in enumerate(rows, 1):
            document = event_json(
                seq, row["event_type"], row["recorded_at"], row["generation_id"], row["payload_json"].encode()
            )
            digest = entry_hash(prev, document)
            row.update(seq=seq, prev_hash=prev.hex(), entry_hash=digest.hex())
            prev = digest
        conn.execute(
            sa.text(
                "INSERT INTO audit_log (seq, event_type, recorded_at, generation_id, payload_json, prev_hash,"
                " entry_hash) VALUES (:seq, :event_type, :recorded_at, :generation_id, :payload_json,"
                " :prev_hash, :entry_hash)"
            ),
            rows,
        )
        conn.execute(
            sa.text("UPDATE chain_head SET seq = :seq, entry_hash = :hash WHERE id = 1"),
            {"seq": len(rows), "hash": prev.hex()},
        )
    engine.dispose()


def _edit_payload(at: int) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    def change(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows[at - 1]["payload_json"] = rows[at - 1]["payload_json"].replace("reject", "release")
        return rows

    return change


def _backdate(at: int) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    def change(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows[at - 1]["recorded_at"] = "2020-01-01T00:00:00.000000Z"
        return rows

    return change


def _forged(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "event_type": "review.decision",
        "recorded_at": rows[12]["recorded_at"],
        "generation_id": None,
        "payload_json": canonical_json({"decision": "release"}).decode(),
    }


STRONG_ATTACKS: dict[str, tuple[Callable[[list[dict[str, Any]]], list[dict[str, Any]]], int]] = {
    "edit a payload": (_edit_payload(14), 14),
    "backdate an entry": (_backdate(5), 5),
    "delete an entry": (lambda rows: rows[:12] + rows[13:], 13),
    "reorder two entries": (lambda rows: rows[:12] + [rows[13], rows[12]] + rows[14:], 13),
    "insert an entry": (lambda rows: rows[:12] + [_forged(rows)] + rows[12:], 13),
    "truncate the tail": (lambda rows: rows[:12], 13),
}


def _assert_named(report: Any, seq: int, words: str) -> None:
    assert not report.ok and report.signature_valid
    assert (report.first_bad_seq, report.first_bad_upto) == (seq, seq), report.reason
    assert words in report.reason


@pytest.mark.parametrize("attack", STRONG_ATTACKS)
def test_a_consistently_rewritten_chain_is_caught(
    logged: tuple[AuditStore, Checkpoint], sqlite_url: str, attack: str
) -> None:
    store, checkpoint = logged
    change, first_bad = STRONG_ATTACKS[attack]
    _rewrite(sqlite_url, change)
    assert store.verify_chain().ok  # the chain alone cannot see it
    report = verify_against_checkpoint(store, checkpoint)
    _assert_named(report, first_bad, "missing" if attack == "truncate the tail" else "rewritten consistently")


@pytest.mark.parametrize(
    ("statements", "first_bad", "words"),
    [
        (["UPDATE audit_log SET payload_json = replace(payload_json, 'reject', 'block') WHERE seq = 14"], 14,
         "hash does not match"),
        (["DELETE FROM audit_log WHERE seq = 4"], 4, "entry 4 is missing"),
        (["UPDATE audit_log SET seq = -1 WHERE seq = 3", "UPDATE audit_log SET seq = 3 WHERE seq = 5",
          "UPDATE audit_log SET seq = 5 WHERE seq = -1"], 3, "entry 3"),
        (["DELETE FROM audit_log WHERE seq >= 12"], 12, "removed from the tail"),
        (["UPDATE generations SET actor = 'mallory' WHERE id = 'gen-000002'"], 7, "row of generation"),
    ],
)  # fmt: skip
def test_plain_tampering_is_caught_and_named(
    logged: tuple[AuditStore, Checkpoint], sqlite_url: str, statements: list[str], first_bad: int, words: str
) -> None:
    store, checkpoint = logged
    _sql(sqlite_url, *statements)
    _assert_named(verify_against_checkpoint(store, checkpoint), first_bad, words)


def test_a_broken_chain_is_not_signed(logged: tuple[AuditStore, Checkpoint], sqlite_url: str) -> None:
    store, _ = logged
    _sql(sqlite_url, "DELETE FROM audit_log WHERE seq = 4")
    with pytest.raises(GenguardError, match=r"does not verify at entry 4 \(entry 4 is missing"):
        create_checkpoint(store)


def test_a_forged_entry_after_the_checkpoint_is_named(
    logged: tuple[AuditStore, Checkpoint], sqlite_url: str
) -> None:
    store, checkpoint = logged
    head = store.entry(16)
    assert head is not None and head.event_type == "audit.checkpoint"
    assert head.payload["tree_size"] == 15 and head.payload["root_hash"] == checkpoint.root_hash.hex()
    when = format_time(datetime.now(UTC))
    payload = canonical_json({"decision": "release"})
    forged = entry_hash(
        bytes.fromhex(head.entry_hash), event_json(17, "review.decision", when, None, payload)
    )
    _sql(
        sqlite_url,
        "INSERT INTO audit_log VALUES (17, 'review.decision', :when, NULL, :payload, :prev, :hash)",
        params={"when": when, "payload": payload.decode(), "prev": head.entry_hash, "hash": forged.hex()},
    )
    _assert_named(verify_against_checkpoint(store, checkpoint), 17, "beyond the chain head")


def test_rewritten_chain_on_postgres(postgres_url: str) -> None:
    with AuditStore.open(postgres_url) as store:
        _fill(store)
        checkpoint = create_checkpoint(store)
        assert verify_against_checkpoint(store, checkpoint).ok
        _rewrite(postgres_url, _backdate(6))
        assert store.verify_chain().ok
        _assert_named(verify_against_checkpoint(store, checkpoint), 6, "rewritten consistently")


def test_large_log_names_the_block_and_the_chain_narrows_it(sqlite_url: str) -> None:
    with AuditStore.open(sqlite_url) as store:
        store.record_generations([make_record(seed, images=4) for seed in range(120)])  # entries 1..600
        checkpoint = create_checkpoint(store)
        assert (checkpoint.tree_size, checkpoint.block_size, len(checkpoint.block_roots)) == (600, 4, 150)
        assert parse_checkpoint(checkpoint.to_text().encode()) == checkpoint
        _rewrite(sqlite_url, _backdate(302))
        report = verify_against_checkpoint(store, checkpoint)
        assert (report.first_bad_seq, report.first_bad_upto) == (301, 304)
        assert report.reason is not None and "one of 301..304" in report.reason
        _sql(sqlite_url, "DELETE FROM audit_log WHERE seq = 303")  # now the chain breaks at 303 too
        report = verify_against_checkpoint(store, checkpoint)
        assert (report.first_bad_seq, report.first_bad_upto) == (301, 303)


def test_appends_after_a_checkpoint_are_consistent(logged: tuple[AuditStore, Checkpoint]) -> None:
    store, checkpoint = logged
    store.record_generation(make_record(9, images=3))
    report = verify_against_checkpoint(store, checkpoint)
    assert report.ok and report.log_size == 20 and report.log_root is not None
    assert report.consistency_proof
    assert verify_consistency(15, 20, checkpoint.root_hash, report.log_root, report.consistency_proof)
    second = create_checkpoint(store)
    assert second.tree_size == 20 and second.root_hash == report.log_root


def test_empty_log_checkpoint(sqlite_url: str) -> None:
    with AuditStore.open(sqlite_url) as store:
        checkpoint = create_checkpoint(store)
        assert (checkpoint.tree_size, checkpoint.root_hash, checkpoint.block_roots) == (0, EMPTY_ROOT, ())
        assert parse_checkpoint(checkpoint.to_text().encode()) == checkpoint
        assert verify_against_checkpoint(store, checkpoint).ok


def test_other_log_and_forged_signature(logged: tuple[AuditStore, Checkpoint], tmp_path: Path) -> None:
    store, checkpoint = logged
    with AuditStore.open(f"sqlite:///{tmp_path / 'other.sqlite3'}") as other:
        _fill(other)
        report = verify_against_checkpoint(other, checkpoint)
        assert not report.ok and report.signature_valid and "made for log" in str(report.reason)
    forged = dataclasses.replace(checkpoint, tree_size=12, block_roots=checkpoint.block_roots[:12])
    report = verify_against_checkpoint(store, forged)
    assert not report.ok and not report.signature_valid and "signature does not verify" in str(report.reason)
    stranger = Ed25519PrivateKey.generate().public_key()
    report = verify_against_checkpoint(store, checkpoint, stranger)
    assert not report.signature_valid and "expected the trusted key" in str(report.reason)


# ------------------------------------------------------------------------------------------ proofs


def test_inclusion_proofs_round_trip_and_catch_tampering(logged: tuple[AuditStore, Checkpoint]) -> None:
    store, checkpoint = logged
    store.append_event("review.decision", {"decision": "late"})  # entry 17: beyond the checkpoint
    for seq in range(1, 16):
        proof = parse_inclusion_proof(prove_inclusion(store, seq, checkpoint).to_json().encode())
        assert proof.tree_size == 15 and proof.checkpoint == checkpoint
        assert check_inclusion_proof(proof).ok  # against the checkpoint it carries
        assert check_inclusion_proof(proof, checkpoint).ok
    current = prove_inclusion(store, 17)
    assert current.tree_size == 17 and check_inclusion_proof(current, current.root_hash).ok
    assert "another root" in str(check_inclusion_proof(current, checkpoint).reason)
    with pytest.raises(BadInputError, match="entry 17: not found"):
        prove_inclusion(store, 17, checkpoint)

    proof = prove_inclusion(store, 14, checkpoint)
    changed = parse_inclusion_proof(proof.to_json().replace('"reject"', '"release"').encode())
    assert "contents do not give its entry_hash" in str(check_inclusion_proof(changed).reason)
    document = json.loads(proof.to_json())
    document["path"][0] = base64.b64encode(_flip(proof.path[0])).decode()
    bad_path = parse_inclusion_proof(json.dumps(document).encode())
    assert "path does not lead to the root" in str(check_inclusion_proof(bad_path).reason)
    assert "not the trusted root" in str(check_inclusion_proof(proof, _flip(proof.root_hash)).reason)
    stranger = Ed25519PrivateKey.generate().public_key()
    assert "expected the trusted key" in str(check_inclusion_proof(proof, None, stranger).reason)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "expected a signed note"),
        (b"\xff\xfe", "expected UTF-8"),
        (b"origin\n1\nroot\n\n\xe2\x80\x94 x y\n", "expected at least 6 lines"),
    ],
)
def test_malformed_checkpoints_are_named(text: bytes, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        parse_checkpoint(text)


def test_malformed_checkpoint_lines_are_named(logged: tuple[AuditStore, Checkpoint]) -> None:
    _, checkpoint = logged
    text = checkpoint.to_text()
    lines = text.split("\n")
    cases = {
        2: ("015", "line 2: expected the tree size in decimal"),
        3: ("not base64!", "line 3 (root hash): expected base64"),
        4: ("time yesterday", "line 4: expected a time"),
        6: ("block-size 2", "line 6: expected block-size 1 for 15 entries"),
        7: ("block AAAA", "line 7 (block root): expected 32 bytes"),
    }
    for number, (replacement, message) in cases.items():
        broken = "\n".join([*lines[: number - 1], replacement, *lines[number:]])
        with pytest.raises(BadInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_checkpoint(broken.encode())
    with pytest.raises(BadInputError, match="expected 15 block lines"):
        parse_checkpoint(text.replace(lines[7] + "\n", "").encode())
    with pytest.raises(BadInputError, match="expected a signature line by the log"):
        parse_checkpoint(text.replace(f"— {checkpoint.origin} ", "— someone-else ").encode())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: "not json", "invalid JSON"),
        (lambda t: t.replace("genguard/inclusion-proof/v1", "v0"), "expected format"),
        (lambda t: t.replace('"tree_size": 15', '"tree_size": 2'), "expected 1..2"),
        (
            lambda t: t.replace('"prev_hash": "', '"prev_hash": "x'),
            "entry.prev_hash': expected 64 lower-case hex",
        ),
        (lambda t: t.replace('"type": "image.recorded"', '"type": 7'), "'type' expected str"),
    ],
)
def test_malformed_proofs_are_named(
    logged: tuple[AuditStore, Checkpoint], edit: Callable[[str], str], message: str
) -> None:
    store, checkpoint = logged
    text = prove_inclusion(store, 5, checkpoint).to_json()
    with pytest.raises(BadInputError, match=message):
        parse_inclusion_proof(edit(text).encode())


# ---------------------------------------------------------------------------------- keys and CLI


def genguard(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from genguard.pipeline.cli import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def test_cli_round_trip(
    sqlite_url: str, tmp_path: Path, genguard_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with AuditStore.open(sqlite_url) as store:
        _fill(store)
    db = ["--db", sqlite_url]
    cp, proof, pem = tmp_path / "log.checkpoint", tmp_path / "entry5.proof", tmp_path / "checkpoint.pub"
    code, out, _ = genguard(["audit", "checkpoint", "--out", str(cp), *db], capsys)
    assert code == 0 and "entries 1..15" in out and cp.exists()

    key_file = genguard_home / "keys" / "checkpoint.ed25519"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    private = serialization.load_pem_private_key(key_file.read_bytes(), None)
    assert isinstance(private, Ed25519PrivateKey)
    secrets = [key_file.read_text().split("\n")[1], private.private_bytes_raw().hex(),
               base64.b64encode(private.private_bytes_raw()).decode()]  # fmt: skip

    outputs = [out]
    for args, expected_code, expected in [
        (["audit", "checkpoint", "--out", str(cp), *db], 2, "expected a new file"),
        (["audit", "verify", "--checkpoint", str(cp), *db], 0, "consistency proof 15 -> 16 verified"),
        (["audit", "prove", "5", "--checkpoint", str(cp), "--out", str(proof), *db], 0, "written to"),
        (["audit", "check-proof", str(proof)], 0, "ok: entry 5 is in the tree of 15 entries"),
        (["audit", "check-proof", str(proof), "--checkpoint", str(cp)], 0, "ok: entry 5"),
        (["audit", "public-key", "--out", str(pem)], 0, "public key written"),
        (["audit", "check-proof", str(proof), "--public-key", str(pem)], 0, "ok: entry 5"),
        (["audit", "prove", "99", *db], 2, "entry 99: not found"),
        (["audit", "check-proof", str(tmp_path / "nothing")], 2, "expected a readable file"),
    ]:
        code, out, err = genguard(args, capsys)
        assert code == expected_code and expected in out + err, (args, out, err)
        outputs += [out, err]
    assert not any(secret in text for secret in secrets for text in outputs)
    assert pem.read_text().startswith("-----BEGIN PUBLIC KEY-----")

    # a stranger's key; an altered checkpoint; an altered proof; then the rewritten log
    stranger = tmp_path / "stranger.pub"
    stranger.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    code, _, err = genguard(
        ["audit", "verify", "--checkpoint", str(cp), "--public-key", str(stranger), *db], capsys
    )
    assert code == 1 and "CHECKPOINT REJECTED" in err and "expected the trusted key" in err
    lines = cp.read_text().split("\n")
    altered = tmp_path / "altered.checkpoint"
    altered.write_text("\n".join([*lines[:2], base64.b64encode(bytes(32)).decode(), *lines[3:]]))
    code, _, err = genguard(["audit", "verify", "--checkpoint", str(altered), *db], capsys)
    assert code == 1 and "signature does not verify" in err
    altered.write_text("\n".join([lines[0], "14", *lines[2:]]))
    code, _, err = genguard(["audit", "verify", "--checkpoint", str(altered), *db], capsys)
    assert code == 2 and "expected 14 block lines" in err  # malformed: refused before any signature check
    code, _, err = genguard(["audit", "check-proof", str(cp)], capsys)
    assert code == 2 and "expected a JSON proof" in err
    bad_proof = tmp_path / "bad.proof"
    bad_proof.write_text(proof.read_text().replace('"seq": 5', '"seq": 6', 1))
    code, _, err = genguard(["audit", "check-proof", str(bad_proof)], capsys)
    assert code == 1 and "PROOF FAILS" in err

    _rewrite(sqlite_url, _backdate(9))
    assert store_chain_ok(sqlite_url)  # the chain alone is fooled
    code, out, err = genguard(["audit", "verify", *db], capsys)
    assert (
        code == 1 and "BROKEN at entry 7: entries 7..9: the log signature does not verify" in err
    )  # batch 7..9
    code, out, err = genguard(["audit", "verify", "--checkpoint", str(cp), *db], capsys)
    assert code == 1 and "TAMPERED at entry 9:" in err


def test_configured_key_and_bad_key_files(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with AuditStore.open(sqlite_url) as store:
        _fill(store)
    raw = tmp_path / "org.key"
    raw.write_bytes(os.urandom(32))
    monkeypatch.setenv("GENGUARD_CHECKPOINT_KEY", str(raw))
    code, out, _ = genguard(["audit", "checkpoint", "--db", sqlite_url], capsys)
    expected = Ed25519PrivateKey.from_private_bytes(raw.read_bytes()).public_key().public_bytes_raw()
    assert code == 0 and parse_checkpoint(out.encode()).public_key == expected
    raw.write_bytes(b"-----BEGIN PRIVATE KEY-----\nsecret-looking-text\n")
    code, _, err = genguard(["audit", "checkpoint", "--db", sqlite_url], capsys)
    assert code == 2 and str(raw) in err and "expected an unencrypted PEM Ed25519" in err
    assert "secret-looking-text" not in err
    monkeypatch.setenv("GENGUARD_CHECKPOINT_KEY", str(tmp_path / "missing.key"))
    code, _, err = genguard(["audit", "checkpoint", "--db", sqlite_url], capsys)
    assert code == 2 and "missing.key: expected a key file, found none" in err
    code, _, err = genguard(["audit", "checkpoint", "--db", "postgresql://postgres@127.0.0.1:1/none"], capsys)
    assert code == 4


def test_check_proof_runs_offline_in_a_fresh_process(
    sqlite_url: str, tmp_path: Path, genguard_home: Path
) -> None:
    with AuditStore.open(sqlite_url) as store:
        _fill(store)
        checkpoint = create_checkpoint(store)
        proof = tmp_path / "p.json"
        proof.write_text(prove_inclusion(store, 13, checkpoint).to_json())
    env = dict(
        os.environ, GENGUARD_HOME=str(genguard_home), GENGUARD_DB="postgresql://nobody@127.0.0.1:1/none"
    )
    done = subprocess.run(
        [sys.executable, "-c", "from genguard.pipeline.cli import main; main()", "audit", "check-proof", str(proof)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "ok: entry 13 is in the tree of 15 entries (checkpoint" in done.stdout


def store_chain_ok(url: str) -> bool:
    with AuditStore.open(url) as store:
        return store.verify_chain().ok
