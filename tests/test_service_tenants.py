"""Tenant spaces: each tenant's own audit chain, checkpoints, policy pack and (when asked) keys.

Two tenants on a real SQLite service database and on the real PostgreSQL: `acme` (the service's pack and
keys) and `beta` (the strict pack, its own development signing chain and watermark key). The service runs
in FastAPI's TestClient with one worker on the embedded tiny model; checkpoints are written every few
entries so that each tenant's auditor has one to ask for.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import create_engine, text
from starlette.testclient import TestClient

from genguard.audit import tenant_spaces
from genguard.audit.checkpoint import (
    log_origin,
    parse_checkpoint,
    parse_inclusion_proof,
    verify_log_against_pins,
)
from genguard.audit.service_store import IssuedKey, ServiceStore, TenantInfo
from genguard.audit.store import AuditStore
from genguard.guard.config import watermark_key
from genguard.guard.policy import load_pack
from genguard.guard.provenance import read_manifest
from genguard.guard.types import ClassifierScore, GenerationParams, GenerationRequest
from genguard.pipeline.service.app import create_app, open_context
from genguard.pipeline.service.context import ServiceConfig, ServiceContext
from genguard.pipeline.service.jobs import WorkerSettings
from tests._photos import photographs

torch.set_num_threads(1)

ROLES = ("generator", "auditor", "reviewer")
ALLOWED_BY_BOTH = "a lighthouse at dusk"
BLOCKED_BY_STRICT = "a sexy dancer on stage"  # the default pack allows it (heightened checks), strict blocks


@dataclass
class Deployment:
    client: TestClient
    db_url: str
    home: Path
    tenants: dict[str, TenantInfo]
    keys: dict[str, IssuedKey]
    ctx: ServiceContext

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who].secret}"}

    def generate(self, who: str, prompt: str, size: str = "64x64") -> dict[str, Any]:
        asked = {"prompt": prompt, "n": 1, "size": size, "steps": 2, "seed": 7}
        job = self.client.post("/v1/generations", json=asked, headers=self.headers(who)).json()
        done = self.client.get(f"/v1/generations/{job['id']}?wait=110", headers=self.headers(who)).json()
        assert done["status"] in ("done", "blocked"), done
        return dict(done)

    def store(self, tenant: str) -> AuditStore:
        return tenant_spaces.open_tenant_store(self.db_url, self.tenants[tenant].id, read_only=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, embedded_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    home = tmp_path / "genguard-home"
    monkeypatch.setenv("GENGUARD_CHECKPOINT_EVERY", "3")  # a checkpoint every few entries, each tenant's own
    monkeypatch.delenv("GENGUARD_CHECKPOINT_DIR", raising=False)
    db_url = (
        f"sqlite:///{tmp_path / 'service.sqlite3'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    with ServiceStore.open(db_url) as store:
        tenants = {
            "acme": tenant_spaces.create_tenant(store, db_url, "acme"),
            "beta": tenant_spaces.create_tenant(store, db_url, "beta", policy="strict", own_keys=True),
        }
        keys = {f"{t}-{role}": store.issue_key(t, role) for t in tenants for role in ROLES}
    config = ServiceConfig(
        db_url=db_url, files_dir=tmp_path / "files", worker=WorkerSettings(), workers=1, verify_burst=1000
    )
    ctx = open_context(config)
    with TestClient(create_app(config, ctx), base_url="http://testserver") as client:
        yield Deployment(client, db_url, home, tenants, keys, ctx)


def _rows(deployment: Deployment, tenant: str, table: str, column: str) -> set[str]:
    """`column` of every row of `table` in the tenant's audit database, read with plain SQL."""
    space = tenant_spaces.layout(deployment.db_url, deployment.tenants[tenant].id)
    engine = create_engine(space.audit_url)
    qualified = f'"{space.schema}".{table}' if space.schema else table
    try:
        with engine.connect() as conn:
            return {str(row[0]) for row in conn.execute(text(f"SELECT {column} FROM {qualified}"))}
    finally:
        engine.dispose()


def _stripped(png: bytes) -> bytes:
    """The same pixels in a new PNG: no manifest."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))).save(buffer, format="PNG")
    return buffer.getvalue()


def test_two_tenants_each_with_its_own_chain_pack_and_keys(deployment: Deployment) -> None:
    d = deployment
    # 256 px: the pixel mark of a smaller image does not read back (a stripped copy would be a near copy)
    made = {t: d.generate(f"{t}-generator", ALLOWED_BY_BOTH, "256x256") for t in ("acme", "beta")}
    for t, job in made.items():
        assert job["status"] == "done" and job["released"], (t, job)
    # The per-tenant pack: beta's strict pack blocks what acme's (the service's default) allows.
    assert d.generate("acme-generator", BLOCKED_BY_STRICT)["status"] == "done"
    blocked = d.generate("beta-generator", BLOCKED_BY_STRICT)
    assert blocked["status"] == "blocked" and not blocked.get("released"), blocked
    assert made["acme"]["decision"]["policy"]["name"] == "default"
    assert made["beta"]["decision"]["policy"]["name"] == "strict"

    # Each chain verifies alone, under the tenant's own log key, pinned in its own checkpoint folder.
    generations = {}
    for t in ("acme", "beta"):
        with d.store(t) as store:
            space = tenant_spaces.layout(d.db_url, d.tenants[t].id)
            folder = space.checkpoints / store.log_id()
            report = verify_log_against_pins(store, folder, store.log_public_key)
            assert report.ok and report.entries_checked >= 3, (t, report)
            generations[t] = {g.generation_id for g in store.reader().generations(100)}
            assert all(g.actor.startswith(f"{t}/apikey:") for g in store.reader().generations(100))
    assert made["acme"]["generation_id"] in generations["acme"]
    assert made["beta"]["generation_id"] in generations["beta"]

    # The tables themselves: acme's database holds none of beta's rows, and the reverse; the service
    # database's own audit tables hold no tenant's generation.
    for mine, theirs in (("acme", "beta"), ("beta", "acme")):
        stored = _rows(d, mine, "generations", "id")
        assert stored == generations[mine] and not stored & generations[theirs]
        actors = _rows(d, mine, "generations", "actor")
        assert all(actor.startswith(f"{mine}/") for actor in actors)
        assert not _rows(d, mine, "images", "generation_id") & generations[theirs]
        assert not _rows(d, mine, "audit_log", "generation_id") & generations[theirs]
    with AuditStore.open(d.db_url, read_only=True) as shared:
        assert not shared.reader().generations(100)

    # Each auditor gets its own chain's checkpoint and inclusion proof, never the other's.
    notes = {}
    for t in ("acme", "beta"):
        answer = d.client.get("/v1/checkpoint", headers=d.headers(f"{t}-auditor"))
        assert answer.status_code == 200, answer.text
        notes[t] = parse_checkpoint(answer.content)
        with d.store(t) as store:
            assert notes[t].origin == log_origin(store)
        chain = d.client.get("/v1/audit/chain", headers=d.headers(f"{t}-auditor")).json()
        assert chain["ok"] and chain["checkpoint"]["ok"], chain
    assert notes["acme"].origin != notes["beta"].origin
    for t in ("acme", "beta"):
        proof = d.client.get(
            f"/v1/proofs/inclusion?seq=1&tree_size={notes[t].tree_size}", headers=d.headers(f"{t}-auditor")
        )
        parsed = parse_inclusion_proof(proof.content)
        assert parsed.origin == notes[t].origin and parsed.checkpoint is not None
        assert parsed.checkpoint.root_hash == notes[t].root_hash
    other_id = made["beta"]["generation_id"]
    assert (
        d.client.get(f"/v1/audit/generations/{other_id}", headers=d.headers("acme-auditor")).status_code
        == 404
    )
    assert (
        d.client.get(f"/v1/generations/{made['beta']['id']}", headers=d.headers("acme-generator")).status_code
        == 404
    )

    # Keys: beta's image is signed by its own identity and marked with its own watermark key.
    files = {}
    for t in ("acme", "beta"):
        image = made[t]["released"][0]
        files[t] = d.client.get(
            image["url"].replace("http://testserver", ""), headers=d.headers(f"{t}-generator")
        ).content
    readings = {t: read_manifest(files[t], "image/png") for t in files}
    assert "beta" in f"{readings['beta'].signer} {readings['beta'].issuer}"
    assert "beta" not in f"{readings['acme'].signer} {readings['acme'].issuer}"
    own_key = (tenant_spaces.layout(d.db_url, d.tenants["beta"].id).folder / "watermark.key").read_bytes()
    assert own_key != watermark_key() and len(own_key) == 32

    # The public verify finds both tenants' images, signed or stripped, without naming the tenant.
    for t in ("acme", "beta"):
        for data, verdict in (
            (files[t], "verified-original"),
            (_stripped(files[t]), "ours-metadata-stripped"),
        ):
            answer = d.client.post("/v1/verify", content=data, headers={"content-type": "image/png"}).json()
            assert answer["verdict"] == verdict and answer["ours"], (t, answer)
            assert "acme" not in json.dumps(answer) and "beta" not in json.dumps(answer)
    # Each verification is recorded in the space that holds the image; one of an image no tenant holds
    # (a photograph) in the service database's shared space.
    photo = io.BytesIO()
    Image.fromarray(next(iter(photographs(256).values()))).save(photo, format="PNG")
    unknown = d.client.post("/v1/verify", content=photo.getvalue(), headers={"content-type": "image/png"})
    assert unknown.json()["ours"] is False, unknown.text
    for t in ("acme", "beta"):
        with d.store(t) as store:
            assert len(store.reader().events(("verify.performed",))) == 2
    with AuditStore.open(d.db_url, read_only=True) as shared:
        assert len(shared.reader().events(("verify.performed",))) == 1
    # The soft-binding lookups find a mark in either tenant's space.
    for t in ("acme", "beta"):
        mark = made[t]["released"][0]["mark_id"]
        found = d.client.get(f"/v1/matches/byBinding?alg=org.genguard.watermark.pixel.v3&value={mark}").json()
        assert found["matches"] == [{"manifestId": f"urn:genguard:mark:{mark}", "similarityScore": 100}]
        manifest = d.client.get(f"/v1/manifests/urn:genguard:mark:{mark}")
        assert manifest.status_code == 200 and manifest.headers["content-type"] == "application/c2pa"


def test_cli_tenants_create_show_set_policy_and_the_auditors_offline_verify(tmp_path: Path) -> None:
    from genguard.pipeline.cli import cli

    db = f"sqlite:///{tmp_path / 'service.sqlite3'}"
    runner = CliRunner()
    made = runner.invoke(cli, ["tenants", "create", "gamma", "--policy", "strict", "--own-keys", "--db", db])
    assert made.exit_code == 0, made.output
    bad = runner.invoke(cli, ["tenants", "create", "delta", "--policy", "no-such-pack", "--db", db])
    assert bad.exit_code != 0 and "no-such-pack" in str(bad.exception)
    assert not (tmp_path / "tenants").exists() or len(list((tmp_path / "tenants").iterdir())) == 1
    shown = json.loads(runner.invoke(cli, ["tenants", "show", "gamma", "--json", "--db", db]).stdout)
    assert shown["policy"] == "strict" and shown["signing"] == "own" and shown["watermark_key"] == "own"
    folder = Path(shown["folder"])
    assert folder.parent == tmp_path / "tenants" and folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "audit.sqlite3").stat().st_mode & 0o777 == 0o600
    assert (folder / "watermark.key").stat().st_mode & 0o777 == 0o600
    text_out = json.dumps(shown)
    for secret in (
        "BEGIN PRIVATE KEY",
        "BEGIN EC PRIVATE KEY",
        (folder / "watermark.key").read_bytes().hex(),
    ):
        assert secret not in text_out
    changed = runner.invoke(cli, ["tenants", "set-policy", "gamma", "default", "--db", db])
    assert changed.exit_code == 0 and "default" in changed.output
    with ServiceStore.open(db) as store:
        assert store.tenant("gamma").policy == "default"
        tenant_id = store.tenant("gamma").id
    refused = runner.invoke(cli, ["tenants", "set-policy", "gamma", "nope.yaml", "--db", db])
    assert refused.exit_code != 0
    # Something in the tenant's chain, then its auditor's offline check with the printed command's parts.
    with tenant_spaces.open_tenant_store(db, tenant_id) as store:
        store.append_event("test.event", {"n": 1})
    verified = runner.invoke(
        cli,
        [
            "audit",
            "verify",
            "--db",
            shown["audit_db"],
            "--checkpoint-dir",
            shown["checkpoints"],
            "--log-public-key",
            shown["log_public_key"],
        ],
    )
    assert verified.exit_code == 0, verified.output
    assert "ok: 1 entries" in verified.output and shown["verify"].startswith("genguard audit verify --db")
    by_name = runner.invoke(cli, ["audit", "verify", "--tenant", "gamma", "--db", db])
    assert by_name.exit_code == 0 and "ok: 1 entries" in by_name.output, by_name.output
    # The service database's own chain is another log: the tenant's entry is not in it.
    shared = runner.invoke(cli, ["audit", "verify", "--db", db])
    assert shared.exit_code == 0 and "ok: 0 entries" in shared.output, shared.output
    # An organisation's own signing identity: checked by loading it; its watermark key stays the service's.
    from genguard.guard.provenance.keys import create_development_chain

    chain = create_development_chain(organisation="Org Inc")
    (tmp_path / "org.key").write_bytes(chain.signer_key_pem)
    (tmp_path / "org-chain.pem").write_bytes(chain.chain_pem)
    key_only = runner.invoke(
        cli, ["tenants", "create", "org", "--signing-key", str(tmp_path / "org.key"), "--db", db]
    )
    assert key_only.exit_code != 0 and "signing_chain" in str(key_only.exception)
    wrong = runner.invoke(
        cli,
        ["tenants", "create", "org", "--signing-key", str(tmp_path / "org-chain.pem"), "--signing-chain",
         str(tmp_path / "org-chain.pem"), "--db", db],
    )  # fmt: skip
    assert wrong.exit_code != 0
    made_org = runner.invoke(
        cli,
        ["tenants", "create", "org", "--signing-key", str(tmp_path / "org.key"), "--signing-chain",
         str(tmp_path / "org-chain.pem"), "--db", db],
    )  # fmt: skip
    assert made_org.exit_code == 0, made_org.output
    org_shown = json.loads(runner.invoke(cli, ["tenants", "show", "org", "--json", "--db", db]).stdout)
    assert org_shown["signing"] == "own" and org_shown["watermark_key"] == "service"
    assert org_shown["signing_chain"] == str((tmp_path / "org-chain.pem").resolve())
    assert chain.signer_key_pem.decode() not in json.dumps(org_shown)
    listed = runner.invoke(cli, ["tenants", "list", "--db", db])
    assert "gamma" in listed.output and "signing:own" in listed.output


class FixedScores:
    """An ImageClassifier test double: every image scores `score` for `category`."""

    name = "fixed"

    def __init__(self, category: str, score: float) -> None:
        self.category, self.score = category, score

    def classify(self, images: Any) -> list[tuple[ClassifierScore, ...]]:
        return [(ClassifierScore(self.name, "test:fixed@v1", self.category, self.score),) for _ in images]


@pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)
def test_an_approved_image_of_an_own_keys_tenant_is_marked_and_signed_with_its_keys(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Review over HTTP releases through the tenant's space: its store, its signer, its watermark key."""
    from genguard.pipeline.governed import GovernedPipeline, load_diffusers_pipeline

    d = deployment
    space = d.ctx.spaces.get(d.tenants["beta"].id)
    data = load_pack("default").canonical_dict()  # default: violence 0.9 is held for review
    data["image_checks"]["quarantine"] = {"keep": "encrypted"}
    (tmp_path / "keep.yaml").write_text(yaml.safe_dump(data))
    governed = GovernedPipeline(
        load_diffusers_pipeline("embedded:tiny-sd"),
        model_id="embedded:tiny-sd",
        policy=load_pack(tmp_path / "keep.yaml"),
        audit=space.store,
        classifiers=[FixedScores("violence", 0.9)],
        watermark_key=space.watermark_key(),
        content_credentials=space.content_credentials(),
    )
    params = GenerationParams(width=256, height=256, steps=2, num_images=1, seed=3)
    held = governed(GenerationRequest("a quiet harbour", params=params, actor="beta/apikey:key_test"))
    assert not held.released and len(held.withheld) == 1
    path = f"/v1/review/{held.generation_id}/images/0/approve"
    other = d.client.post(path, json={"reason": "fine"}, headers=d.headers("acme-reviewer"))
    assert other.status_code == 404  # acme's space holds no such image
    approved = d.client.post(path, json={"reason": "fine"}, headers=d.headers("beta-reviewer"))
    assert approved.status_code == 200, approved.text
    name = approved.json()["decision"]["file"]
    released = (d.ctx.config.files_dir / d.tenants["beta"].id / name).read_bytes()
    reading = read_manifest(released, "image/png")
    assert "beta" in f"{reading.signer} {reading.issuer}"
    answer = d.client.post("/v1/verify", content=_stripped(released), headers={"content-type": "image/png"})
    assert answer.json()["verdict"] == "ours-metadata-stripped", answer.text  # beta's key reads its mark
