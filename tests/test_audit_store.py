"""AuditStore against real SQLite and PostgreSQL databases: records, prompt storage, queries, failures."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from genguard.audit import AuditStore, GenerationRecord, ImageRecord
from genguard.audit.db import HEAD_REVISION, MIGRATIONS_DIR
from genguard.guard.errors import AuditUnavailableError, BadInputError
from genguard.guard.types import (
    CategoryScore,
    ClassifierScore,
    GenerationParams,
    GenerationRequest,
    ImageAction,
    ImageVerdict,
    PolicyRef,
    PromptAction,
    PromptDecision,
    PromptStorage,
    RuleHit,
)

POLICY = PolicyRef("default", "1.2.0", hashlib.sha256(b"default pack").hexdigest())


def make_decision(
    prompt: str, action: PromptAction = PromptAction.ALLOW, rewritten: str | None = None
) -> PromptDecision:
    return PromptDecision(
        action=action,
        prompt=rewritten if rewritten is not None else prompt,
        original_prompt=prompt,
        categories=(
            CategoryScore("violent_content", 0.125, action),
            CategoryScore("hate", 3.5e-7, PromptAction.ALLOW),
        ),
        rules=(RuleHit("violent_content", "lexical", "violence.gore.001", 1.0),),
        policy=POLICY,
        negative_prompt_additions=("blood",),
        heightened_categories=("violent_content",),
    )


def make_image(seed: int, index: int, mark_id: int | None = None, sha256: str | None = None) -> ImageRecord:
    verdict = ImageVerdict(
        action=ImageAction.QUARANTINE if index % 2 else ImageAction.RELEASE,
        scores=(
            ClassifierScore("nudenet", "nudenet-3.4.2", "sexual_content", 0.03125 * index),
            ClassifierScore("clip", "openai/clip-vit-base-patch32", "violent_content", 1e-5),
        ),
        flagged=(("violent_content", 0.5),) if index % 2 else (),
    )
    return ImageRecord(
        index=index,
        sha256=sha256 or hashlib.sha256(f"{seed}/{index}".encode()).hexdigest(),
        phash=(seed * 0x9E3779B97F4A7C15 + index) % (1 << 64),  # high bit often set: exercises signed storage
        width=256,
        height=256,
        verdict=verdict,
        status="quarantined" if index % 2 else "released",
        path=None if index % 2 else f"out/{seed}_{index}.png",
        mark_id=mark_id,
        manifest=hashlib.sha512(f"manifest {seed}/{index}".encode()).digest() * 8,
    )


def make_record(
    seed: int,
    *,
    images: int = 2,
    status: str = "completed",
    storage: PromptStorage = PromptStorage.FULL,
    prompt: str = "a watercolour fox in the snow",
    negative: str = "low quality",
    rewritten: str | None = None,
    generation_id: str | None = None,
) -> GenerationRecord:
    action = PromptAction.BLOCK if status == "blocked" else PromptAction.ALLOW
    return GenerationRecord(
        generation_id=generation_id or f"gen-{seed:06d}",
        request=GenerationRequest(
            prompt, negative, GenerationParams(seed=seed, num_images=images), actor=f"user{seed % 3}"
        ),
        decision=make_decision(prompt, action, rewritten),
        prompt_storage=storage,
        status=status,
        model_id="embedded:tiny-sd",
        pipeline_class="StableDiffusionPipeline",
        seed=seed,
        images=tuple(make_image(seed, k, mark_id=(seed << 8 | k) + (1 << 63)) for k in range(images)),
        error="CUDA out of memory" if status == "failed" else None,
        extra={"batch": seed // 10},
    )


@pytest.fixture(params=["sqlite", "postgres"])
def audit_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def store(audit_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("GENGUARD_HOME", str(tmp_path / "home"))
    opened = AuditStore.open(audit_url)
    yield opened
    opened.close()


def all_text(url: str) -> str:
    """Every value of every table, as one string: to prove what is not stored anywhere."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            meta = sa.MetaData()
            with (
                warnings.catch_warnings()
            ):  # expression indexes (phash segments) are not reflected: fine here
                warnings.simplefilter("ignore", sa.exc.SAWarning)
                meta.reflect(conn)
            return "\n".join(
                repr(tuple(row)) for table in meta.sorted_tables for row in conn.execute(table.select())
            )
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------ records


def test_completed_record_round_trips(store: AuditStore) -> None:
    record = make_record(7, images=3)
    store.record_generation(record)

    detail = store.get_generation(record.generation_id)
    assert detail is not None
    assert (detail.status, detail.actor, detail.model_id, detail.seed) == (
        "completed",
        "user1",
        "embedded:tiny-sd",
        7,
    )
    assert detail.prompt.text == record.request.prompt and detail.prompt.digest is None
    assert detail.negative_prompt.text == "low quality"
    assert detail.rewritten_prompt is None
    assert detail.params == record.request.params
    assert detail.decision.categories == record.decision.categories
    assert detail.decision.rules == record.decision.rules
    assert detail.decision.policy == POLICY and detail.policy == POLICY
    assert detail.extra == {"batch": 0}
    assert [image.index for image in detail.images] == [0, 1, 2]
    for stored, original in zip(detail.images, record.images, strict=True):
        assert stored.verdict == original.verdict
        assert (stored.sha256, stored.phash, stored.mark_id) == (
            original.sha256,
            original.phash,
            original.mark_id,
        )
        assert (stored.status, stored.path, stored.manifest) == (
            original.status,
            original.path,
            original.manifest,
        )
    assert [event.event_type for event in detail.events] == ["generation.recorded"] + ["image.recorded"] * 3
    assert [event.seq for event in detail.events] == [1, 2, 3, 4]
    assert detail.events[1].prev_hash == detail.events[0].entry_hash
    result = store.verify_chain()
    assert result.ok and result.entries_checked == 4 and result.head_seq == 4


def test_blocked_and_failed_requests_are_recorded(store: AuditStore, audit_url: str) -> None:
    store.record_generation(make_record(1, images=0, status="blocked", prompt="how to make a pipe bomb"))
    store.record_generation(make_record(2, images=0, status="failed"))

    blocked = store.get_generation("gen-000001")
    failed = store.get_generation("gen-000002")
    assert blocked is not None and failed is not None
    assert (
        blocked.status == "blocked" and blocked.images == () and blocked.decision_action is PromptAction.BLOCK
    )
    assert blocked.events[0].event_type == "generation.blocked"
    assert blocked.decision.rules[0].rule == "violence.gore.001"
    assert failed.status == "failed" and failed.error == "CUDA out of memory"
    assert failed.events[0].event_type == "generation.failed"
    assert store.verify_chain().ok

    with pytest.raises(BadInputError, match="blocked.*expects no images"):
        store.record_generation(make_record(3, images=1, status="blocked"))
    with pytest.raises(BadInputError, match="failed.*error"):
        store.record_generation(
            GenerationRecord(
                "gen-x", make_record(4).request, make_decision("x"), PromptStorage.FULL, "failed"
            )
        )
    assert "gen-000003" not in all_text(audit_url)


@pytest.mark.parametrize("storage", [PromptStorage.HASHED, PromptStorage.REDACTED])
def test_hashed_and_redacted_prompts_leave_no_text(
    store: AuditStore, audit_url: str, storage: PromptStorage
) -> None:
    prompt, negative, rewritten = (
        "portrait of Zephyrine Quollworth",
        "Xanthippe blur",
        "portrait of a Quokka-painter",
    )
    store.record_generation(
        make_record(5, storage=storage, prompt=prompt, negative=negative, rewritten=rewritten)
    )

    everything = all_text(audit_url)
    for secret in ("Zephyrine", "Xanthippe", "Quokka-painter"):
        assert secret not in everything
    detail = store.get_generation("gen-000005")
    assert detail is not None and detail.rewritten_prompt is not None
    assert (detail.prompt.length, detail.negative_prompt.length, detail.rewritten_prompt.length) == (
        len(prompt),
        len(negative),
        len(rewritten),
    )
    assert detail.prompt.text is None and detail.rewritten_prompt.text is None
    if storage is PromptStorage.HASHED:
        # keyed per database: checkable with this store, not by hashing guesses with plain SHA-256
        assert detail.prompt.digest == store.prompt_digest(prompt)
        assert detail.rewritten_prompt.digest == store.prompt_digest(rewritten)
        assert detail.prompt.digest != hashlib.sha256(prompt.encode()).hexdigest()
    else:
        assert detail.prompt.digest is None and detail.negative_prompt.digest is None
    assert store.verify_chain().ok


def test_rewritten_prompt_stored_in_full(store: AuditStore) -> None:
    store.record_generation(make_record(6, rewritten="a gentle fox"))
    detail = store.get_generation("gen-000006")
    assert detail is not None and detail.rewritten_prompt is not None
    assert detail.rewritten_prompt.text == "a gentle fox"


def test_perceptual_hash_columns(store: AuditStore, audit_url: str) -> None:
    phash = 0xFEDC_BA98_7654_3210
    image = make_image(9, 0)
    store.record_generation(
        GenerationRecord(
            "gen-phash",
            make_record(9).request,
            make_decision("p"),
            PromptStorage.FULL,
            "completed",
            images=(ImageRecord(0, image.sha256, phash, 64, 64, image.verdict, "released"),),
        )
    )
    engine = sa.create_engine(audit_url)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT phash, phash_c0, phash_c1, phash_c2, phash_c3 FROM images")).one()
    engine.dispose()
    assert row[0] == phash - (1 << 64)  # the same 64 bits, read as signed
    assert tuple(row[1:]) == (0xFEDC, 0xBA98, 0x7654, 0x3210)
    assert store.find_images_by_sha256(image.sha256)[0].phash == phash


def test_conflicting_mark_id_writes_nothing(store: AuditStore, audit_url: str) -> None:
    first = make_record(10)
    store.record_generation(first)
    clash = make_record(11, images=1)
    clash = GenerationRecord(
        **{**clash.__dict__, "images": (make_image(11, 0, mark_id=first.images[0].mark_id),)}
    )
    with pytest.raises(BadInputError, match="gen-000011.*conflicts"):
        store.record_generation(clash)
    with pytest.raises(BadInputError, match="conflicts"):
        store.record_generation(first)  # the same generation id twice
    assert store.get_generation("gen-000011") is None
    result = store.verify_chain()
    assert result.ok and result.head_seq == 3


def test_bad_input_is_named(store: AuditStore) -> None:
    good = make_record(12, images=1)
    cases = {
        "sha256": make_image(12, 0, sha256="XYZ"),
        "phash": ImageRecord(0, "a" * 64, 1 << 64, 1, 1, good.images[0].verdict, "released"),
        "status": ImageRecord(0, "a" * 64, 1, 1, 1, good.images[0].verdict, "shown"),
    }
    for field, image in cases.items():
        with pytest.raises(BadInputError, match=field):
            store.record_generation(GenerationRecord(**{**good.__dict__, "images": (image,)}))
    with pytest.raises(BadInputError, match=r"extra\.score.*finite"):
        store.record_generation(GenerationRecord(**{**good.__dict__, "extra": {"score": float("nan")}}))
    assert store.verify_chain().head_seq == 0


# ------------------------------------------------------------------------------------------ events


def test_append_event(store: AuditStore) -> None:
    store.record_generation(make_record(20, images=1))
    seq = store.append_event(
        "review.decision", {"decision": "release", "reviewer": "ana", "score": 0.25}, "gen-000020"
    )
    assert seq == 3
    assert store.append_event("verification.performed", {"verdict": "trusted"}) == 4
    detail = store.get_generation("gen-000020")
    assert detail is not None
    assert detail.events[-1].event_type == "review.decision"
    assert detail.events[-1].payload == {"decision": "release", "reviewer": "ana", "score": 0.25}
    with pytest.raises(BadInputError, match="record_generation"):
        store.append_event("image.recorded", {})
    with pytest.raises(BadInputError, match="event_type"):
        store.append_event("Not An Event", {})
    with pytest.raises(BadInputError, match=r"payload\.x\[1\]"):
        store.append_event("review.decision", {"x": [1, float("inf")]})
    with pytest.raises(BadInputError, match="conflicts"):
        store.append_event("review.decision", {}, "gen-unknown")
    assert store.verify_chain().ok and store.verify_chain().head_seq == 4


# ------------------------------------------------------------------------------------------ queries


def test_queries(store: AuditStore) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    for seed in range(5):
        blocked = seed == 4
        store.record_generation(
            make_record(
                30 + seed, images=0 if blocked else seed % 3, status="blocked" if blocked else "completed"
            )
        )

    newest = store.list_generations(limit=3)
    assert [g.generation_id for g in newest] == ["gen-000034", "gen-000033", "gen-000032"]
    assert [g.image_count for g in newest] == [0, 0, 2]
    assert [g.generation_id for g in store.list_generations(status="blocked")] == ["gen-000034"]
    assert len(store.list_generations(since=start)) == 5
    assert store.list_generations(since=datetime.now(UTC) + timedelta(hours=1)) == []
    with pytest.raises(BadInputError, match="limit"):
        store.list_generations(limit=0)
    with pytest.raises(BadInputError, match="status"):
        store.list_generations(status="done")

    target = store.get_generation("gen-000032")
    assert target is not None
    mark = target.images[1].mark_id
    assert mark is not None and mark >= 1 << 63
    found = store.find_image_by_mark_id(mark)
    assert found is not None and (found.generation_id, found.index) == ("gen-000032", 1)
    assert store.find_image_by_mark_id(12345) is None
    assert store.get_generation("gen-nope") is None

    shared = hashlib.sha256(b"the same bytes").hexdigest()
    for seed in (40, 41):
        record = make_record(seed, images=1)
        store.record_generation(
            GenerationRecord(**{**record.__dict__, "images": (make_image(seed, 0, sha256=shared),)})
        )
    matches = store.find_images_by_sha256(shared.upper())
    assert [m.generation_id for m in matches] == ["gen-000040", "gen-000041"]
    assert store.find_images_by_sha256("0" * 64) == []


# ------------------------------------------------------------------------------------ opening, failure


def test_reopen_keeps_data_and_schema_is_at_head(audit_url: str) -> None:
    from alembic.script import ScriptDirectory

    assert ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head() == HEAD_REVISION
    with AuditStore.open(audit_url) as first:
        first.record_generation(make_record(50, storage=PromptStorage.HASHED))
        digest = first.prompt_digest("x")
    with AuditStore.open(audit_url) as second:
        assert second.get_generation("gen-000050") is not None
        assert second.prompt_digest("x") == digest  # the key lives in the database
        second.record_generation(make_record(51))
        assert second.verify_chain().ok
    with AuditStore.open(audit_url, read_only=True) as reader:
        assert len(reader.list_generations()) == 2


def test_sqlite_unavailable(tmp_path: Path) -> None:
    with pytest.raises(AuditUnavailableError, match=r"missing/audit\.sqlite3.*unable to open"):
        AuditStore.open(f"sqlite:///{tmp_path / 'missing' / 'audit.sqlite3'}")
    path = tmp_path / "audit.sqlite3"
    AuditStore.open(f"sqlite:///{path}").close()
    # A read-only database: opened through SQLite's read-only mode (chmod does not stop root).
    with pytest.raises(AuditUnavailableError, match="readonly"):
        AuditStore.open(f"sqlite:///file:{path}?mode=ro&uri=true")


def test_unreachable_postgres_fails_fast_with_password_masked() -> None:
    started = datetime.now(UTC)
    with pytest.raises(AuditUnavailableError) as caught:
        AuditStore.open("postgresql://postgres:hunter2@127.0.0.1:1/nowhere")
    message = str(caught.value)
    assert "hunter2" not in message and "***" in message and "127.0.0.1:1" in message
    assert datetime.now(UTC) - started < timedelta(seconds=10)


def test_bad_url_is_bad_input() -> None:
    with pytest.raises(BadInputError, match="URL"):
        AuditStore.open("not a url")


# -------------------------------------------------------------------------------------- concurrency


def test_threads_share_one_chain_on_sqlite(sqlite_url: str) -> None:
    openers: list[AuditStore] = []
    errors: list[BaseException] = []

    def open_and_write(worker: int) -> None:
        try:
            # Each thread opens its own store on the fresh file: the first opens race the migration too.
            store = AuditStore.open(sqlite_url)
            openers.append(store)
            for n in range(25):
                store.record_generation(make_record(worker * 1000 + n, images=n % 3))
        except Exception as exc:  # noqa: BLE001 - reported below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=open_and_write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for opened in openers:
        opened.close()
    assert errors == []
    with AuditStore.open(sqlite_url) as store:
        result = store.verify_chain()
        images = sum(n % 3 for n in range(25)) * 4
        assert result.ok, result.reason
        assert result.head_seq == result.entries_checked == 100 + images
        assert len(store.list_generations(limit=1000)) == 100
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as raw:
        seqs = [row[0] for row in raw.execute("SELECT seq FROM audit_log ORDER BY seq")]
    assert seqs == list(range(1, 101 + images))


# ------------------------------------------------------------------------- latent watermark nonce


def with_nonces(record: GenerationRecord, nonces: list[bytes | None]) -> GenerationRecord:
    images = tuple(
        ImageRecord(**{**image.__dict__, "latent_nonce": nonce})
        for image, nonce in zip(record.images, nonces, strict=True)
    )
    return GenerationRecord(**{**record.__dict__, "images": images})


WATERMARKS = {"watermarks": ["genguard.pixel.v3", "genguard.latent.gaussian-shading.v1"]}


def test_latent_nonce_and_watermark_names_round_trip(store: AuditStore) -> None:
    nonce = bytes(range(100, 116))
    record = with_nonces(make_record(60, images=2), [nonce, None])
    store.record_generation(GenerationRecord(**{**record.__dict__, "extra": WATERMARKS}))

    detail = store.get_generation("gen-000060")
    assert detail is not None
    assert [image.latent_nonce for image in detail.images] == [nonce, None]
    assert detail.extra == WATERMARKS
    mark = record.images[0].mark_id
    assert mark is not None
    found = store.find_image_by_mark_id(mark)
    assert found is not None and found.latent_nonce == nonce
    # The nonce is chained: the image entries' payloads name it (hex), so verify covers the column.
    image_events = [event for event in detail.events if event.event_type == "image.recorded"]
    assert [event.payload["latent_nonce"] for event in image_events] == [nonce.hex(), None]
    assert detail.events[0].payload["extra"] == WATERMARKS
    assert store.verify_chain().ok


@pytest.mark.parametrize(
    ("nonce", "found"),
    [(b"x" * 11, "11 bytes"), (b"x" * 65, "65 bytes"), ("00" * 16, "str"), (bytearray(16), "bytearray")],
)
def test_latent_nonce_is_validated(store: AuditStore, nonce: Any, found: str) -> None:
    with pytest.raises(
        BadInputError, match=f"image 0: latent_nonce expected None or 12 to 64 bytes, found {found}"
    ):
        store.record_generation(with_nonces(make_record(61, images=1), [nonce]))
    store.record_generation(
        with_nonces(make_record(62, images=2), [b"\x00" * 12, b"\xff" * 64])
    )  # the bounds
    result = store.verify_chain()
    assert result.ok and result.head_seq == 3


def test_edited_latent_nonce_is_caught(store: AuditStore, audit_url: str) -> None:
    store.record_generation(with_nonces(make_record(63, images=2), [b"\x01" * 16, b"\x02" * 16]))
    engine = sa.create_engine(audit_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text('UPDATE images SET latent_nonce = :nonce WHERE "index" = 1'), {"nonce": b"\x03" * 16}
        )
    engine.dispose()
    result = store.verify_chain()
    assert not result.ok and result.first_bad_seq == 3
    assert result.reason is not None and "image 1 of generation 'gen-000063' was changed" in result.reason


# ---------------------------------------------------------------------------------- NUL characters


def test_nul_in_stored_text_is_bad_input_on_every_database(store: AuditStore, audit_url: str) -> None:
    # PostgreSQL text cannot hold NUL: refused on SQLite too, so that both accept the same records.
    with pytest.raises(
        BadInputError, match=r"prompt: expected text without NUL characters, found one at position 3"
    ):
        store.record_generation(make_record(70, prompt="cat\x00 with a hat"))
    with pytest.raises(BadInputError, match="negative_prompt: expected text without NUL"):
        store.record_generation(make_record(71, negative="blur\x00"))
    with pytest.raises(BadInputError, match="image 0: path"):
        image = ImageRecord(**{**make_image(72, 0).__dict__, "path": "out/\x00.png"})
        store.record_generation(
            GenerationRecord(**{**make_record(72, images=1).__dict__, "images": (image,)})
        )
    with pytest.raises(BadInputError, match="generation_id"):
        store.record_generation(make_record(73, generation_id="gen\x00"))
    assert "gen-00007" not in all_text(audit_url)
    assert store.verify_chain().head_seq == 0

    # A hashed prompt's text is not stored: a NUL in it is recorded (its digest covers the NUL).
    store.record_generation(make_record(74, prompt="cat\x00hat", storage=PromptStorage.HASHED))
    detail = store.get_generation("gen-000074")
    assert detail is not None and detail.prompt.digest == store.prompt_digest("cat\x00hat")
    assert store.verify_chain().ok


# ------------------------------------------------------------------------------------ group commit


def test_record_generations_in_one_transaction(store: AuditStore, audit_url: str) -> None:
    store.record_generation(make_record(80, images=1))
    batch = [
        make_record(81, images=2),
        make_record(82, images=0, status="blocked"),
        make_record(83, images=1),
    ]
    store.record_generations(batch)

    result = store.verify_chain()
    assert result.ok and result.head_seq == 2 + 3 + 1 + 2
    seqs = {}
    for record in batch:
        detail = store.get_generation(record.generation_id)
        assert detail is not None and len(detail.images) == len(record.images)
        seqs[record.generation_id] = [event.seq for event in detail.events]
    assert seqs == {"gen-000081": [3, 4, 5], "gen-000082": [6], "gen-000083": [7, 8]}

    # All or nothing: one bad record (caught before writing) or one conflicting row (caught by the database).
    with pytest.raises(BadInputError, match="gen-000085.*sha256"):
        bad = GenerationRecord(
            **{**make_record(85, images=1).__dict__, "images": (make_image(85, 0, sha256="x"),)}
        )
        store.record_generations([make_record(84), bad])
    with pytest.raises(BadInputError, match="conflicts"):
        store.record_generations([make_record(86), make_record(83)])  # gen-000083 is already recorded
    with pytest.raises(BadInputError, match="unique within a batch"):
        store.record_generations([make_record(87), make_record(87)])
    with pytest.raises(BadInputError, match="records: expected a sequence"):
        store.record_generations(make_record(88))  # type: ignore[arg-type]
    store.record_generations([])
    everything = all_text(audit_url)
    assert all(f"gen-0000{n}" not in everything for n in (84, 85, 86, 87))
    assert store.verify_chain().head_seq == 8


def test_sqlite_synchronous_option(tmp_path: Path) -> None:
    from genguard.audit import db

    path = tmp_path / "audit.sqlite3"
    for query, expected in (("", 2), ("?synchronous=normal", 1), ("?synchronous=FULL", 2)):
        engine = db.create_audit_engine(db.normalise_url(f"sqlite:///{path}{query}"))
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == expected  # 2 FULL, 1 NORMAL
        engine.dispose()
    with AuditStore.open(f"sqlite:///{path}?synchronous=normal") as store:
        store.record_generation(make_record(90))
        assert store.verify_chain().ok
    with pytest.raises(BadInputError, match=r"synchronous expected one of \('full', 'normal'\), found 'off'"):
        AuditStore.open(f"sqlite:///{path}?synchronous=off")
