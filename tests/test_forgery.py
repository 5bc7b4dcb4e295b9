"""Issue 24: an attacker with write access to the audit database only (plain SQL, no genguard, no keys).

Each forgery is made with a plain SQLAlchemy connection on SQLite and on PostgreSQL and must be
detected with the entry named; rows outside the chain must leave review state unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from genguard.audit import log_key
from genguard.audit.chain import canonical_json, entry_hash, event_json, format_time
from genguard.audit.checkpoint import (
    AutoCheckpoints,
    latest_checkpoint,
    pinned_log_key,
    pinned_signed_from,
    verify_against_checkpoint,
)
from genguard.audit.review import review_queue, show
from genguard.audit.store import AuditStore
from genguard.guard.errors import BadInputError
from genguard.guard.quarantine import QuarantineVault
from genguard.pipeline.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_audit_store import make_record

# 3 generations of 2 images (image 1 of each quarantined): entries 1..9, in 3 signed batches
REVIEW_ID = "gen-000001:1"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    value: str = request.getfixturevalue(f"{request.param}_url")
    return value


@pytest.fixture
def store(url: str) -> Iterator[AuditStore]:
    opened = AuditStore.open(url, auto_checkpoints=False)
    for seed in range(3):
        opened.record_generation(make_record(seed, images=2))
    assert opened.verify_log().ok
    yield opened
    opened.close()


def _sql(url: str, statement: str, params: dict[str, Any] | None = None) -> None:
    """The attacker: plain SQL on the database, nothing else."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params or {})
    engine.dispose()


def _approval(seq: int, prev_hex: str) -> dict[str, Any]:
    """A well-formed "review.approved" entry at `seq`, hashed correctly onto `prev_hex`."""
    when = format_time(datetime.now(UTC))
    payload = canonical_json({"image_index": 1, "reviewer": "mallory", "reason": "looks fine"})
    digest = entry_hash(
        bytes.fromhex(prev_hex), event_json(seq, "review.approved", when, "gen-000001", payload)
    )
    return {"seq": seq, "when": when, "payload": payload.decode(), "prev": prev_hex, "hash": digest.hex()}


_INSERT = (
    "INSERT INTO audit_log (seq, event_type, recorded_at, generation_id, payload_json, prev_hash, entry_hash)"
    " VALUES (:seq, 'review.approved', :when, 'gen-000001', :payload, :prev, :hash)"
)


def _head(url: str) -> tuple[int, str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT seq, entry_hash FROM chain_head WHERE id = 1")).one()
    engine.dispose()
    return int(row.seq), str(row.entry_hash)


def _review_state(store: AuditStore, vault: QuarantineVault) -> tuple[list[str], Any]:
    return [item.review_id for item in review_queue(store, vault)], show(store, REVIEW_ID, vault).decision


@pytest.mark.parametrize("seq", [0, -1])
def test_an_approval_outside_the_chain_is_ignored_and_named(
    store: AuditStore, url: str, tmp_path: Path, seq: int
) -> None:
    vault = QuarantineVault(tmp_path / "vault")
    before = _review_state(store, vault)
    assert REVIEW_ID in before[0] and before[1] is None
    _sql(url, _INSERT, _approval(seq, "00" * 32))
    assert _review_state(store, vault) == before  # review list and show unchanged
    assert [e.seq for e in store.reader().events(("review.approved",))] == []
    report = store.verify_log()
    assert not report.ok and report.first_bad_seq == seq, report.reason
    assert report.reason is not None and "outside the chain" in report.reason


def test_a_generation_row_behind_the_log_is_ignored_and_named(store: AuditStore, url: str) -> None:
    _sql(
        url,
        "INSERT INTO generations SELECT 'gen-forged', created_at, status, actor, model_id, pipeline_class, seed,"
        " prompt_storage, prompt_text, prompt_digest, prompt_length, negative_prompt_text, negative_prompt_digest,"
        " negative_prompt_length, rewritten_prompt_text, rewritten_prompt_digest, rewritten_prompt_length,"
        " params_json, decision_action, policy_name, policy_version, policy_digest, decision_json, error,"
        " extra_json FROM generations WHERE id = 'gen-000001'",
    )
    _sql(
        url,
        'INSERT INTO images (generation_id, "index", sha256, phash, phash_c0, phash_c1, phash_c2, phash_c3,'
        " width, height, status, verdict_action, verdict_json) SELECT 'gen-forged', \"index\", sha256, phash,"
        " phash_c0, phash_c1, phash_c2, phash_c3, width, height, status, verdict_action, verdict_json"
        " FROM images WHERE generation_id = 'gen-000001'",
    )
    assert store.get_generation("gen-forged") is None
    assert "gen-forged" not in [g.generation_id for g in store.list_generations()]
    assert all(item.generation_id != "gen-forged" for item in review_queue(store, QuarantineVault()))
    assert all(image.generation_id != "gen-forged" for image in store.find_images_by_sha256(
        store.find_images_by_sha256(make_record(1).images[0].sha256)[0].sha256
    ))  # fmt: skip
    report = store.verify_log()
    assert (
        not report.ok
        and report.reason is not None
        and "'gen-forged' has a row but no log entry" in report.reason
    )


def test_a_forged_append_with_the_head_moved_is_named(store: AuditStore, url: str, tmp_path: Path) -> None:
    vault = QuarantineVault(tmp_path / "vault")
    seq, prev = _head(url)
    forged = _approval(seq + 1, prev)
    _sql(url, _INSERT, forged)
    _sql(url, "UPDATE chain_head SET seq = :seq, entry_hash = :hash WHERE id = 1", forged)
    assert store.verify_chain().ok  # the chain alone cannot see it
    report = store.verify_log()
    assert not report.ok and report.first_bad_seq == 10, report.reason
    assert report.reason == "entries 10..10 carry no log signature (appended without the log key)"
    # ... nor with a signature row made with the attacker's own key
    mallory = log_key.LocalLogSigner(Ed25519PrivateKey.generate())
    message = log_key.batch_message(store.log_id(), 10, 10, bytes.fromhex(forged["hash"]))
    _sql(
        url,
        "INSERT INTO log_signatures (last_seq, first_seq, key_id, signature) VALUES (10, 10, :kid, :sig)",
        {"kid": log_key.key_id(mallory.public_key), "sig": mallory.sign(message).hex()},
    )
    report = store.verify_log()
    assert (
        not report.ok
        and report.first_bad_seq == 10
        and "expected the trusted log key" in (report.reason or "")
    )
    _sql(url, "UPDATE log_signatures SET key_id = :kid WHERE last_seq = 10", {"kid": report.log_key_id})
    report = store.verify_log()
    assert not report.ok and report.first_bad_seq == 10 and "does not verify" in (report.reason or "")
    # readers follow the chain head, so the forged approval is read: verify is what exposes it
    assert show(store, REVIEW_ID, vault).decision is not None


def test_a_rewritten_chain_is_named_by_its_first_bad_batch(store: AuditStore, url: str) -> None:
    from test_checkpoint import _backdate, _rewrite

    _rewrite(url, _backdate(5))  # entry 5 is in the second batch, entries 4..6
    assert store.verify_chain().ok
    report = store.verify_log()
    assert not report.ok and report.first_bad_seq == 4
    assert report.reason == (
        "entries 4..6: the log signature does not verify (appended or rewritten without the log key)"
    )


def test_truncate_and_extend_is_named(store: AuditStore, url: str) -> None:
    _sql(url, "DELETE FROM audit_log WHERE seq >= 8")
    _sql(url, "DELETE FROM images WHERE generation_id = 'gen-000002'")
    _sql(url, "DELETE FROM audit_log WHERE seq = 7")
    _sql(url, "DELETE FROM generations WHERE id = 'gen-000002'")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        prev = conn.execute(sa.text("SELECT entry_hash FROM audit_log WHERE seq = 6")).scalar_one()
    engine.dispose()
    forged = _approval(7, prev)
    _sql(url, _INSERT, forged)
    _sql(url, "UPDATE chain_head SET seq = 7, entry_hash = :hash WHERE id = 1", forged)
    report = store.verify_log()
    assert not report.ok and report.first_bad_seq == 7, report.reason
    assert "signature for entries 7..9 lies outside" in (report.reason or "") or "no log signature" in (
        report.reason or ""
    )


def test_a_cut_tail_is_bounded_by_the_automatic_checkpoint(url: str, tmp_path: Path) -> None:
    policy = AutoCheckpoints(tmp_path / "checkpoints", every_entries=6, every_seconds=3600)
    with AuditStore.open(url, auto_checkpoints=policy) as store:
        for seed in range(3):
            store.record_generation(make_record(seed, images=2))  # entries 1..9; checkpoint at 6 -> entry 7
        latest = latest_checkpoint(policy.folder_for(store.log_id()))
        assert latest is not None and latest[0].tree_size == 6
        assert (policy.folder_for(store.log_id()) / "log-key.pem").exists()
        assert store.entry(7) is not None and store.entry(7).event_type == "audit.checkpoint"  # type: ignore[union-attr]
        # cut back to the end of a signed batch inside the checkpoint (entries 1..3): signatures still hold
        _sql(url, "DELETE FROM audit_log WHERE seq >= 4")
        _sql(url, "DELETE FROM log_signatures WHERE last_seq >= 4")
        _sql(url, "DELETE FROM images WHERE generation_id <> 'gen-000000'")
        _sql(url, "DELETE FROM generations WHERE id <> 'gen-000000'")
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            last = conn.execute(sa.text("SELECT entry_hash FROM audit_log WHERE seq = 3")).scalar_one()
        engine.dispose()
        _sql(url, "UPDATE chain_head SET seq = 3, entry_hash = :hash WHERE id = 1", {"hash": last})
        assert store.verify_log().ok  # the database alone cannot show a cut at a batch boundary
        report = verify_against_checkpoint(store, latest[0])
        assert not report.ok and report.first_bad_seq == 4 and "entry 4 is missing" in (report.reason or "")


def test_cli_verify_names_forgeries_and_the_checkpoint_age(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENGUARD_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("GENGUARD_CHECKPOINT_EVERY", "4")
    with AuditStore.open(url) as store:
        for seed in range(2):
            store.record_generation(make_record(seed, images=2))  # entries 1..6, checkpoint of 1..6 -> 7
    code, out, err = _run(["audit", "verify", "--db", url], capsys)
    assert code == 0, err
    assert "ok: 7 entries, chain intact" in out
    assert "log signatures: entries 1..7 in 3 signed batches verified" in out
    assert (
        "latest automatic checkpoint checkpoint-000000000006.txt (entries 1..6," in out
        and "still holds" in out
    )
    _sql(url, _INSERT, _approval(0, "00" * 32))
    code, out, err = _run(["audit", "verify", "--db", url], capsys)
    assert code == 1 and "BROKEN at entry 0: entry 0 (review.approved) lies outside the chain" in err
    _sql(url, "DELETE FROM audit_log WHERE seq = 0")
    # no trusted log key anywhere: fails closed
    stranger = tmp_path / "stranger.pem"
    stranger.write_text(
        log_key.public_key_pem(log_key.LocalLogSigner(Ed25519PrivateKey.generate()).public_key)
    )
    code, out, err = _run(["audit", "verify", "--log-public-key", str(stranger), "--db", url], capsys)
    assert code == 1 and "BROKEN at entry 1: entries 1..3: signed by log key" in err


def test_no_trusted_log_key_fails_closed(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GENGUARD_HOME", str(tmp_path / "elsewhere"))
    report = store.verify_log()
    assert not report.ok and report.first_bad_seq is None
    assert "cannot be checked: expected a trusted log public key" in (report.reason or "")


def test_a_migrated_log_verifies_old_entries_under_the_old_rules(
    store: AuditStore, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # What migration 0004 leaves on a log written before it: no signatures, signing from head + 1.
    _sql(url, "DELETE FROM log_signatures")
    _sql(url, "UPDATE audit_meta SET value = :v WHERE key = 'log_signed_from'", {"v": b"10"})
    store.record_generation(make_record(7, images=1))  # entries 10..11, signed
    report = store.verify_log()
    assert report.ok and report.signed_from == 10 and report.batches_verified == 1
    code, out, err = _run(["audit", "verify", "--db", url], capsys)
    assert code == 0, err
    assert "entries 1..9 predate log signing (migrated log): verified under the old rules, chain only" in out


def test_signing_keys_stay_out_of_the_database(store: AuditStore, url: str) -> None:
    pem = log_key.log_key_path().read_bytes()
    assert oct(log_key.log_key_path().stat().st_mode & 0o777) == "0o600"
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM log_signatures ORDER BY last_seq")).all()
        meta = [bytes(v) for (v,) in conn.execute(sa.text("SELECT value FROM audit_meta"))]
    engine.dispose()
    assert [(r.first_seq, r.last_seq) for r in rows] == [(1, 3), (4, 6), (7, 9)]
    secret = log_key.load_log_signer(create=False)
    assert repr(secret).startswith("LocalLogSigner(key_id=") and "PRIVATE" not in repr(secret)
    body = b"".join(pem.splitlines()[1:-1])
    assert all(body not in value for value in meta)
    assert all(body.decode() not in str(tuple(r)) for r in rows)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_moving_the_signing_start_is_refused_against_the_pin(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENGUARD_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    with AuditStore.open(url) as store:
        for seed in range(3):
            store.record_generation(make_record(seed, images=2))  # entries 1..9, signed from entry 1
        folder = AutoCheckpoints.from_env().folder_for(store.log_id())
        assert pinned_signed_from(folder) == 1 and pinned_log_key(folder) == store.log_public_key
        # The attack: declare every entry "old, unsigned", drop the signatures, append a forged approval.
        head, last = _head(url)
        forged = _approval(head + 1, last)
        _sql(url, _INSERT, forged)
        _sql(url, "UPDATE chain_head SET seq = :seq, entry_hash = :hash WHERE id = 1", forged)
        _sql(url, "UPDATE audit_meta SET value = :v WHERE key = 'log_signed_from'", {"v": b"11"})
        _sql(url, "DELETE FROM log_signatures")
        assert store.verify_log().ok  # the database alone vouches for it: why the pin exists
        report = store.verify_log(pinned_signed_from=pinned_signed_from(folder))
        assert not report.ok and report.first_bad_seq == 1
        assert "log signing starts at entry 11, the pin outside it says entry 1" in (report.reason or "")
        assert log_key.log_key_path().exists()
    code, _, err = _run(["audit", "verify", "--db", url], capsys)
    assert code == 1 and "BROKEN at entry 1: the database says log signing starts at entry 11" in err
    # the pin is never replaced by a later writer, whatever the database now says
    with AuditStore.open(url) as store:
        store.append_event("review.note", {"text": "after"})
    assert pinned_signed_from(folder) == 1


def test_a_migrated_log_pins_its_signing_start(url: str, tmp_path: Path) -> None:
    with AuditStore.open(url, auto_checkpoints=False) as store:
        store.record_generation(make_record(1, images=2))  # entries 1..3
    # what migration 0004 leaves on a log written before it
    _sql(url, "DELETE FROM log_signatures")
    _sql(url, "UPDATE audit_meta SET value = :v WHERE key = 'log_signed_from'", {"v": b"4"})
    policy = AutoCheckpoints(tmp_path / "checkpoints")
    with AuditStore.open(url, auto_checkpoints=policy) as store:
        folder = policy.folder_for(store.log_id())
        assert pinned_signed_from(folder) is None  # nothing pinned before signing starts
        store.record_generation(make_record(2, images=1))  # entries 4..5: signing starts
        assert pinned_signed_from(folder) == 4
        report = store.verify_log(pinned_signed_from=4)
        assert report.ok and report.signed_from == 4 and report.batches_verified == 1
        _sql(url, "UPDATE audit_meta SET value = :v WHERE key = 'log_signed_from'", {"v": b"1"})
        report = store.verify_log(pinned_signed_from=4)
        assert (
            not report.ok and report.first_bad_seq == 1 and "signing start was moved" in (report.reason or "")
        )


def test_a_malformed_signing_start_pin_is_named(tmp_path: Path) -> None:
    (tmp_path / "log-signed-from").write_text("ten\n")
    with pytest.raises(BadInputError, match=r"log signing start pin .*log-signed-from: expected a positive"):
        pinned_signed_from(tmp_path)
