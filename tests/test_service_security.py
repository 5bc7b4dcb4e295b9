"""Review, audit, reports, checkpoints and proofs over HTTP, and the service's security table.

One app for the module (FastAPI's TestClient, a real SQLite service database, the embedded tiny model in
one worker). Two tenants: `acme` and `other`, each with a key of every role and its own audit space.
Quarantined images are made by the real governed pipeline, in each tenant's own audit store, with a
classifier that scores every image violent (the default pack quarantines violence >= 0.7), under actors
"<tenant>/<user>" as the service records its own.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from starlette.testclient import TestClient

from genguard.audit.checkpoint import (
    Checkpoint,
    check_inclusion_proof,
    latest_checkpoint,
    parse_checkpoint,
    parse_inclusion_proof,
    write_auto_checkpoint,
)
from genguard.audit.merkle import MerkleTree, verify_consistency
from genguard.audit.review import EXPORTED
from genguard.audit.service_store import IssuedKey
from genguard.audit.store import AuditStore
from genguard.guard.policy import load_pack
from genguard.guard.policy.pack import PolicyPack
from genguard.guard.types import ClassifierScore, GenerationParams, GenerationRequest
from genguard.pipeline.governed import GovernedPipeline, load_diffusers_pipeline
from genguard.pipeline.service.app import create_app, open_context
from genguard.pipeline.service.context import ServiceConfig
from genguard.pipeline.service.jobs import WorkerSettings
from tests._home import module_home
from tests._logs import Captured

torch.set_num_threads(1)

ROLES = ("generator", "reviewer", "auditor", "admin")
# SQL and HTML metacharacters: stored as given, shown as given in JSON, escaped in HTML.
NASTY_PROMPT = "a harbour'); DROP TABLE generations; -- <script>alert('x')</script> & \"quotes\""
NASTY_REASON = "ok'; DELETE FROM log_entries; -- <img src=x onerror=alert(1)> & more"
OTHER_PROMPT = "a zebra crossing, other-tenant secret"
QUARANTINED = 7  # images of acme's quarantined generation (the table approves and rejects some)


class FixedScores:
    """An ImageClassifier test double: every image scores `score` for `category`."""

    name = "fixed"

    def __init__(self, category: str, score: float) -> None:
        self.category, self.score = category, score

    def classify(self, images: Sequence[np.ndarray]) -> list[tuple[ClassifierScore, ...]]:
        return [(ClassifierScore(self.name, "test:fixed@v1", self.category, self.score),) for _ in images]


@dataclass
class Service:
    client: TestClient
    url: str
    keys: dict[str, IssuedKey]
    logs: Captured
    quarantined: str  # acme's quarantined generation
    other_quarantined: str  # other's
    released: dict[str, Any]  # acme's job, released through the service's worker
    other_released: dict[str, Any]
    checkpoint_file: Path  # acme's latest checkpoint
    other_checkpoint_file: Path
    audit: AuditStore  # acme's audit space
    other_audit: AuditStore
    db_url: str
    files_dir: Path
    acme_entry: int  # the log entry recording acme's quarantined generation
    other_entry: int
    responses: list[str] = field(default_factory=list)

    def headers(self, who: str) -> dict[str, str]:
        if who == "none":
            return {}
        if who == "bogus":
            return {"Authorization": "Bearer ggk.key_000000000000.nope"}
        return {"Authorization": f"Bearer {self.keys[who].secret}"}

    def call(self, method: str, path: str, who: str, **kwargs: Any) -> Any:
        headers = {**self.headers(who), **kwargs.pop("headers", {})}
        answer = self.client.request(method, path, headers=headers, **kwargs)
        self.responses.append(answer.text if "image" not in answer.headers.get("content-type", "") else "")
        return answer


home, genguard_home = module_home("security-home")


def quarantining_pack(folder: Path) -> PolicyPack:
    data = load_pack("default").canonical_dict()
    data["image_checks"]["quarantine"] = {"keep": "encrypted"}
    path = folder / "pack-encrypted.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_pack(path)


def quarantine(audit: AuditStore, pipe: object, policy: PolicyPack, prompt: str, actor: str, n: int) -> str:
    governed = GovernedPipeline(
        pipe,
        model_id="embedded:tiny-sd",
        policy=policy,
        audit=audit,
        classifiers=[FixedScores("violence", 0.9)],
    )
    params = GenerationParams(width=64, height=64, steps=2, num_images=n, seed=5)
    result = governed(GenerationRequest(prompt, params=params, actor=actor))
    assert not result.released and len(result.withheld) == n
    return result.generation_id


def entry_of(audit: AuditStore, generation_id: str) -> int:
    (event,) = audit.reader().events(("generation.recorded",), generation_ids=[generation_id])
    return event.seq


@pytest.fixture(scope="module")
def service(home: Path, embedded_cache: Path) -> Iterator[Service]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENGUARD_HOME", str(home))
        for name in ("GENGUARD_DB", "GENGUARD_WATERMARK_KEY", "GENGUARD_CHECKPOINT_DIR"):
            patch.delenv(name, raising=False)
        config = ServiceConfig(
            db_url=f"sqlite:///{home / 'audit.sqlite3'}",
            files_dir=home / "files",
            worker=WorkerSettings(),
            workers=1,
            verify_burst=1000,
            max_wait_s=120,
        )
        ctx = open_context(config)
        store = ctx.store
        keys: dict[str, IssuedKey] = {}
        for tenant in ("acme", "other"):
            store.create_tenant(tenant)
            for role in ROLES:
                keys[role if tenant == "acme" else f"other-{role}"] = store.issue_key(tenant, role)
        keys["revoked"] = store.issue_key("acme", "admin")
        store.revoke_key(keys["revoked"].info.id)
        expiry = datetime.now(UTC) + timedelta(seconds=0.5)
        keys["expired"] = store.issue_key("acme", "admin", expires_at=expiry)

        pipe = load_diffusers_pipeline("embedded:tiny-sd")
        policy = quarantining_pack(home)
        acme = ctx.spaces.audit(keys["admin"].info.tenant_id)
        other = ctx.spaces.audit(keys["other-admin"].info.tenant_id)
        quarantined = quarantine(acme, pipe, policy, NASTY_PROMPT, "acme/alice", QUARANTINED)
        other_quarantined = quarantine(other, pipe, policy, OTHER_PROMPT, "other/bob", 1)

        logs = Captured()
        logging.getLogger("genguard.service").addHandler(logs)
        try:
            with TestClient(create_app(config, ctx), base_url="http://testserver") as client:
                released = {}
                for who, prompt in (
                    ("generator", "a red boat <b>bold</b>"),
                    ("other-generator", OTHER_PROMPT),
                ):
                    job = client.post(
                        "/v1/generations",
                        json={"prompt": prompt, "n": 1, "size": "64x64", "steps": 2},
                        headers={"Authorization": f"Bearer {keys[who].secret}"},
                    ).json()
                    released[who] = client.get(
                        f"/v1/generations/{job['id']}?wait=110",
                        headers={"Authorization": f"Bearer {keys[who].secret}"},
                    ).json()
                    assert released[who]["status"] == "done", released[who]
                time.sleep(max(0.0, (expiry - datetime.now(UTC)).total_seconds() + 0.1))
                written = {}
                for space in (acme, other):
                    policy_of = space.auto_checkpoints
                    assert policy_of is not None and home / "tenants" in policy_of.base.parents
                    checkpoint = write_auto_checkpoint(space, policy_of)
                    found = latest_checkpoint(policy_of.folder_for(space.log_id()))
                    assert found is not None and found[0].tree_size == checkpoint.tree_size
                    written[space.log_id()] = found[1]
                yield Service(
                    client=client,
                    url="http://testserver",
                    keys=keys,
                    logs=logs,
                    quarantined=quarantined,
                    other_quarantined=other_quarantined,
                    released=released["generator"],
                    other_released=released["other-generator"],
                    checkpoint_file=written[acme.log_id()],
                    other_checkpoint_file=written[other.log_id()],
                    audit=acme,
                    other_audit=other,
                    db_url=str(config.db_url),
                    files_dir=config.files_dir,
                    acme_entry=entry_of(acme, quarantined),
                    other_entry=entry_of(other, other_quarantined),
                )
        finally:
            logging.getLogger("genguard.service").removeHandler(logs)


def small_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Endpoint:
    """One operation: who may call it, what an allowed call answers, and what another tenant's key with
    an allowed role answers (404 for the acme resource it names; the same success for its own scope)."""

    method: str
    route: str  # the OpenAPI path
    allowed: frozenset[str]  # roles; "open": no key needed
    ok: int
    other: int
    path: Callable[[Service, str], str]
    kwargs: Callable[[Service, str], dict[str, Any]] = lambda s, who: {}


def fixed(path: str) -> Callable[[Service, str], str]:
    return lambda s, who: path


def _released_file(s: Service, who: str) -> str:
    image = s.released["released"][0]
    return f"/v1/files/{s.released['generation_id']}/{image['file']}"


def _review_image(action: str, by_role: dict[str, int]) -> Callable[[Service, str], str]:
    """Approve and reject change state: each allowed role decides its own image of acme's generation."""
    return lambda s, who: f"/v1/review/{s.quarantined}/images/{by_role.get(who, 5)}/{action}"


ANY_ROLE = frozenset(ROLES)
OPEN = frozenset({"open"})
GENERATE = {"json": {"prompt": "a small boat", "n": 1, "size": "64x64", "steps": 2}}
OPENAI = {"json": {"prompt": "a small boat", "size": "64x64", "response_format": "b64_json"}}


def _edit(s: Service, who: str) -> dict[str, Any]:
    """An edit of a plain grey picture (no face: nothing to consent to), the multipart variant."""
    request = json.dumps({"prompt": "a small boat", "n": 1, "size": "64x64", "steps": 2})
    return {"files": {"request": (None, request), "image": ("in.png", small_png(), "image/png")}}


def _openai_edit(s: Service, who: str) -> dict[str, Any]:
    return {
        "files": {"image": ("in.png", small_png(), "image/png")},
        "data": {"prompt": "a small boat", "size": "64x64", "response_format": "b64_json"},
    }


TABLE = [
    Endpoint("GET", "/healthz", OPEN, 200, 200, fixed("/healthz")),
    Endpoint("GET", "/readyz", OPEN, 200, 200, fixed("/readyz")),
    Endpoint(
        "POST",
        "/v1/verify",
        OPEN,
        200,
        200,
        fixed("/v1/verify"),
        lambda s, who: {"content": small_png(), "headers_extra": {"content-type": "image/png"}},
    ),
    Endpoint(
        "GET",
        "/v1/matches/byBinding",
        OPEN,
        200,
        200,
        lambda s, who: (
            "/v1/matches/byBinding?alg=org.genguard.watermark.pixel.v3"
            f"&value={s.released['released'][0]['mark_id']}"
        ),
    ),
    Endpoint(
        "POST",
        "/v1/matches/byContent",
        OPEN,
        200,
        200,
        fixed("/v1/matches/byContent"),
        lambda s, who: {"content": small_png(), "headers_extra": {"content-type": "image/png"}},
    ),
    Endpoint(
        "GET",
        "/v1/manifests/{manifestId}",
        OPEN,
        200,
        200,
        lambda s, who: f"/v1/manifests/urn:genguard:mark:{s.released['released'][0]['mark_id']}",
    ),
    Endpoint(
        "GET", "/v1/services/supportedAlgorithms", OPEN, 200, 200, fixed("/v1/services/supportedAlgorithms")
    ),
    Endpoint("GET", "/v1/me", ANY_ROLE, 200, 200, fixed("/v1/me")),
    Endpoint(
        "POST",
        "/v1/generations",
        frozenset({"generator"}),
        202,
        202,
        fixed("/v1/generations"),
        lambda s, who: GENERATE,
    ),
    Endpoint(  # the edit variant of the same operation (multipart: request, image)
        "POST", "/v1/generations", frozenset({"generator"}), 202, 202, fixed("/v1/generations"), _edit
    ),
    Endpoint(
        "GET",
        "/v1/generations/{job_id}",
        frozenset({"generator"}),
        200,
        404,
        lambda s, who: f"/v1/generations/{s.released['id']}",
    ),
    Endpoint("GET", "/v1/files/{generation_id}/{file}", frozenset({"generator"}), 200, 404, _released_file),
    Endpoint(
        "POST",
        "/v1/images/generations",
        frozenset({"generator"}),
        200,
        200,
        fixed("/v1/images/generations"),
        lambda s, who: OPENAI,
    ),
    Endpoint(
        "POST",
        "/v1/images/edits",
        frozenset({"generator"}),
        200,
        200,
        fixed("/v1/images/edits"),
        _openai_edit,
    ),
    Endpoint("GET", "/v1/audit/chain", frozenset({"auditor", "admin"}), 200, 200, fixed("/v1/audit/chain")),
    Endpoint(
        "GET",
        "/v1/audit/generations",
        frozenset({"auditor", "admin"}),
        200,
        200,
        fixed("/v1/audit/generations"),
    ),
    Endpoint(
        "GET",
        "/v1/audit/generations/{generation_id}",
        frozenset({"auditor", "admin"}),
        200,
        404,
        lambda s, who: f"/v1/audit/generations/{s.quarantined}",
    ),
    Endpoint("GET", "/v1/review", frozenset({"reviewer", "admin"}), 200, 200, fixed("/v1/review")),
    Endpoint(
        "GET",
        "/v1/review/{generation_id}",
        frozenset({"reviewer", "admin"}),
        200,
        404,
        lambda s, who: f"/v1/review/{s.quarantined}",
    ),
    Endpoint(
        "GET",
        "/v1/review/{generation_id}/images/{index}",
        frozenset({"reviewer"}),
        200,
        404,
        lambda s, who: f"/v1/review/{s.quarantined}/images/0",
    ),
    Endpoint(
        "POST",
        "/v1/review/{generation_id}/images/{index}/approve",
        frozenset({"reviewer", "admin"}),
        200,
        404,
        _review_image("approve", {"reviewer": 1, "admin": 2}),
        lambda s, who: {"json": {"reason": "fine"}},
    ),
    Endpoint(
        "POST",
        "/v1/review/{generation_id}/images/{index}/reject",
        frozenset({"reviewer", "admin"}),
        200,
        404,
        _review_image("reject", {"reviewer": 3, "admin": 4}),
        lambda s, who: {"json": {"reason": NASTY_REASON}},
    ),
    Endpoint("GET", "/v1/reports/bias", frozenset({"auditor", "admin"}), 200, 200, fixed("/v1/reports/bias")),
    Endpoint(
        "GET", "/v1/reports/safety", frozenset({"auditor", "admin"}), 200, 200, fixed("/v1/reports/safety")
    ),
    # Each tenant's own chain: its auditor's and admin's; another tenant's key gets its own chain's.
    Endpoint("GET", "/v1/checkpoint", frozenset({"auditor", "admin"}), 200, 200, fixed("/v1/checkpoint")),
    Endpoint(
        "GET",
        "/v1/proofs/inclusion",
        frozenset({"auditor", "admin"}),
        200,
        200,
        lambda s, who: f"/v1/proofs/inclusion?seq={s.acme_entry}",
    ),
    Endpoint(
        "GET",
        "/v1/proofs/consistency",
        frozenset({"auditor", "admin"}),
        200,
        200,
        fixed("/v1/proofs/consistency?first=1"),
    ),
]
CALLERS = (*ROLES, "none", "bogus", "revoked", "expired", "other")


def expected(endpoint: Endpoint, who: str) -> int:
    if endpoint.allowed == OPEN:
        return endpoint.ok
    if who in ("none", "bogus", "revoked", "expired"):
        return 401
    if who == "other":
        return endpoint.other
    return endpoint.ok if who in endpoint.allowed else 403


def caller(endpoint: Endpoint, who: str) -> str:
    """The key to use: "other" is the other tenant's key of the endpoint's first allowed role."""
    if who != "other":
        return who
    role = next((r for r in ROLES if r in endpoint.allowed), "generator")
    return f"other-{role}"


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("endpoint", TABLE, ids=[f"{e.method} {e.route}" for e in TABLE])
def test_security_table(service: Service, endpoint: Endpoint, who: str) -> None:
    options = dict(endpoint.kwargs(service, who))
    headers = service.headers(caller(endpoint, who))
    headers.update(options.pop("headers_extra", {}))
    answer = service.client.request(endpoint.method, endpoint.path(service, who), headers=headers, **options)
    service.responses.append(
        answer.text if answer.headers.get("content-type", "").startswith(("application", "text")) else ""
    )
    assert answer.status_code == expected(endpoint, who), (who, answer.text[:500])
    if answer.status_code == 401:
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"]["type"] == "authentication_error"
    if answer.status_code == 403:
        assert answer.json()["error"]["code"] == "forbidden_role"
    if answer.status_code == 404:  # another tenant's resource: the answer of a missing one
        assert answer.json()["error"]["code"] == "not_found"


def test_the_table_covers_every_operation(service: Service) -> None:
    schema = service.client.get("/openapi.json").json()
    operations = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    assert operations == {(e.method, e.route) for e in TABLE}


# ------------------------------------------------------------------------ tenant isolation


def test_another_tenants_ids_answer_exactly_as_missing_ones(service: Service) -> None:
    for path, missing, role in (
        (f"/v1/audit/generations/{service.quarantined}", "/v1/audit/generations/nope", "other-auditor"),
        (f"/v1/review/{service.quarantined}", "/v1/review/nope", "other-reviewer"),
        (f"/v1/review/{service.quarantined}/images/0", "/v1/review/nope/images/0", "other-reviewer"),
    ):
        theirs = service.call("GET", path, role).json()["error"]
        absent = service.call("GET", missing, role).json()["error"]
        assert theirs["code"] == absent["code"] == "not_found"
        # The same words but for the id asked for: nothing tells "someone else's" from "none".
        assert theirs["message"].replace(service.quarantined, "ID").replace(
            str(service.acme_entry), "ID"
        ) == (absent["message"].replace("nope", "ID").replace("999999", "ID"))


def test_another_tenant_never_reads_counts_or_infers(service: Service) -> None:
    acme_ids = {service.quarantined, service.released["generation_id"]}
    secrets = ("harbour", "DROP TABLE", "<b>bold</b>", "red boat", "alice", *acme_ids)
    texts = [
        service.call("GET", "/v1/audit/generations?limit=100", "other-auditor").text,
        service.call("GET", "/v1/review", "other-reviewer").text,
        service.call("GET", "/v1/reports/bias?group_by=prompt", "other-auditor").text,
        service.call("GET", "/v1/reports/safety", "other-auditor").text,
        service.call("GET", "/v1/reports/bias?format=html", "other-auditor").text,
        service.call("GET", "/v1/reports/safety?format=html", "other-auditor").text,
        service.call("GET", "/v1/audit/chain", "other-auditor").text,
    ]
    for text in texts:
        for secret in secrets:
            assert secret not in text, secret
    page = service.call("GET", "/v1/audit/generations?limit=100", "other-auditor").json()
    listed = {row["generation_id"] for row in page["items"]}
    assert {service.other_quarantined, service.other_released["generation_id"]} <= listed
    assert not listed & acme_ids
    assert all(row["actor"].startswith("other/") for row in page["items"])
    # Counts are the tenant's own: a prompt only acme used counts 0 for other, 1 for acme.
    theirs = service.call("GET", "/v1/reports/safety?prompt_like=harbour", "other-auditor").json()
    ours = service.call("GET", "/v1/reports/safety?prompt_like=harbour", "auditor").json()
    assert theirs["requests"] == 0 and theirs["images"] == 0
    assert ours["requests"] == 1 and ours["images"] == QUARANTINED
    queue = service.call("GET", "/v1/review", "other-reviewer").json()
    assert [item["generation_id"] for item in queue["items"]] == [service.other_quarantined]
    # Each chain is the tenant's own: its sizes are its own entries only.
    chain = service.call("GET", "/v1/audit/chain", "other-auditor").json()
    assert chain["ok"] is True and chain["head_seq"] == service.other_audit.reader().head().seq
    assert chain["log_key_id"] != service.call("GET", "/v1/audit/chain", "auditor").json()["log_key_id"]


def test_generator_keys_of_another_tenant_get_no_file_or_job(service: Service) -> None:
    image = service.released["released"][0]
    url = f"/v1/files/{service.released['generation_id']}/{image['file']}"
    assert service.call("GET", url, "other-generator").status_code == 404
    assert (
        service.call("GET", f"/v1/generations/{service.released['id']}", "other-generator").status_code == 404
    )
    assert service.call("GET", url, "generator").status_code == 200


# ------------------------------------------------------------------------------------- review


def test_review_queue_and_show_give_what_the_cli_gives(service: Service) -> None:
    from genguard.audit.review import show

    queue = service.call("GET", "/v1/review?limit=2", "reviewer").json()
    assert queue["limit"] == 2 and len(queue["items"]) <= 2
    assert all(item["generation_id"] == service.quarantined for item in queue["items"])
    detail = service.call("GET", f"/v1/review/{service.quarantined}", "reviewer").json()
    assert [image["index"] for image in detail["images"]] == list(range(QUARANTINED))
    first = detail["images"][0]
    cli = show(service.audit, f"{service.quarantined}:0").to_json()
    for key in ("review_id", "generation_id", "index", "actor", "prompt", "policy", "scores", "kept"):
        assert first[key] == cli[key], key
    assert first["flagged"] == [["violence", 0.7]] and first["prompt"] == NASTY_PROMPT
    assert first["scores"][0]["model_id"] == "test:fixed@v1"


def test_review_image_is_the_recorded_png_and_its_export_is_recorded(service: Service) -> None:
    answer = service.call("GET", f"/v1/review/{service.quarantined}/images/0", "reviewer")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.headers["cache-control"] == "no-store"
    audit = service.audit
    detail = audit.reader().generation(service.quarantined, with_events=False)
    assert detail is not None
    assert hashlib.sha256(answer.content).hexdigest() == detail.images[0].sha256
    exported = audit.reader().events((EXPORTED,), generation_ids=[service.quarantined])
    assert exported and exported[-1].payload["reviewer"] == f"apikey:{service.keys['reviewer'].info.id}"
    assert exported[-1].payload["sha256"] == detail.images[0].sha256
    assert "http response" in exported[-1].payload["path"]


def test_approve_and_reject_record_the_key_id_and_the_reason_inert(service: Service) -> None:
    reviewer = service.keys["reviewer"].info.id
    approved = service.call(
        "POST", f"/v1/review/{service.quarantined}/images/5/approve", "reviewer", json={"reason": "harmless"}
    )
    assert approved.status_code == 200, approved.text
    decision = approved.json()["decision"]
    assert decision["decision"] == "approved" and decision["reviewer"] == f"apikey:{reviewer}"
    assert decision["file"] == f"{service.quarantined}-5.png" and "/" not in decision["file"]
    again = service.call(
        "POST", f"/v1/review/{service.quarantined}/images/5/reject", "reviewer", json={"reason": "late"}
    )
    assert again.status_code == 400 and "already approved" in again.json()["error"]["message"]
    empty = service.call(
        "POST", f"/v1/review/{service.quarantined}/images/5/reject", "reviewer", json={"reason": ""}
    )
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "reason"
    # Rejections carry SQL and HTML metacharacters (this one, and the table's): stored and shown exactly.
    nasty = service.call(
        "POST", f"/v1/review/{service.quarantined}/images/6/reject", "reviewer", json={"reason": NASTY_REASON}
    )
    assert nasty.status_code == 200, nasty.text
    shown = service.call("GET", f"/v1/review/{service.quarantined}", "reviewer").json()
    rejected = [
        i["decision"] for i in shown["images"] if i["decision"] and i["decision"]["decision"] == "rejected"
    ]
    assert rejected and all(d["reason"] == NASTY_REASON for d in rejected)
    queue = service.call("GET", "/v1/review", "reviewer").json()
    assert f"{service.quarantined}:5" not in {item["review_id"] for item in queue["items"]}
    # The approved file is in the tenant's files folder, marked and signed like any released image.
    written = service.files_dir / service.keys["reviewer"].info.tenant_id / decision["file"]
    assert hashlib.sha256(written.read_bytes()).hexdigest() == decision["released_sha256"]
    verified = service.call(
        "POST", "/v1/verify", "none", content=written.read_bytes(), headers={"content-type": "image/png"}
    )
    assert verified.json()["ours"] is True and verified.json()["changed"] is False


def test_review_bad_ids_are_400_naming_the_field(service: Service) -> None:
    answer = service.call("GET", "/v1/review/bad:id", "reviewer")
    assert answer.status_code == 400 and "review id" in answer.json()["error"]["message"]
    assert service.call("GET", f"/v1/review/{service.quarantined}/images/x", "reviewer").status_code == 400


# -------------------------------------------------------------------------------------- audit


def test_audit_list_filters_and_pages(service: Service) -> None:
    everything = service.call("GET", "/v1/audit/generations?limit=100", "auditor").json()
    ids = [row["generation_id"] for row in everything["items"]]
    assert service.quarantined in ids and service.released["generation_id"] in ids
    assert everything["next_offset"] is None
    assert all(row["actor"].startswith("acme/") for row in everything["items"])
    first = service.call("GET", "/v1/audit/generations?limit=1", "auditor").json()
    second = service.call("GET", "/v1/audit/generations?limit=1&offset=1", "auditor").json()
    assert (
        first["next_offset"] == 1
        and [first["items"][0]["generation_id"], second["items"][0]["generation_id"]] == ids[:2]
    )
    completed = service.call("GET", "/v1/audit/generations?status=completed", "auditor").json()
    assert {row["status"] for row in completed["items"]} == {"completed"}
    allowed = service.call("GET", "/v1/audit/generations?decision=allow", "auditor").json()["items"]
    assert allowed and {row["decision_action"] for row in allowed} == {"allow"}
    assert service.call("GET", "/v1/audit/generations?decision=block", "auditor").json()["items"] == []
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert (
        service.call("GET", "/v1/audit/generations", "auditor", params={"since": future}).json()["items"]
        == []
    )
    assert len(
        service.call("GET", "/v1/audit/generations", "auditor", params={"until": future}).json()["items"]
    ) == len(ids)
    for bad, param in (
        ("status=done", "status"),
        ("limit=101", "limit"),
        ("since=yesterday", "since"),
        ("decision=x", "decision"),
    ):
        answer = service.call("GET", f"/v1/audit/generations?{bad}", "auditor")
        assert answer.status_code == 400 and answer.json()["error"]["param"] == f"query.{param}", bad


def test_audit_show_is_the_cli_record_with_the_prompt_inert(service: Service) -> None:
    from click.testing import CliRunner

    from genguard.pipeline.cli import cli

    answer = service.call("GET", f"/v1/audit/generations/{service.quarantined}", "auditor").json()
    from genguard.audit.tenant_spaces import layout

    acme_db = layout(service.db_url, service.keys["admin"].info.tenant_id).audit_url  # acme's audit space
    shown = CliRunner().invoke(cli, ["audit", "show", service.quarantined, "--db", acme_db])
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.stdout)
    for key in ("generation_id", "actor", "status", "prompt", "decision", "params", "policy", "images"):
        assert answer[key] == json.loads(json.dumps(record[key])), key
    assert answer["prompt"]["text"] == NASTY_PROMPT
    # The SQL in the prompt did nothing: the tables are there and the chain verifies.
    chain = service.call("GET", "/v1/audit/chain", "admin").json()
    assert chain["ok"] and chain["entries_checked"] >= 1 and chain["first_bad_seq"] is None


def test_chain_reports_like_audit_verify(service: Service) -> None:
    chain = service.call("GET", "/v1/audit/chain", "admin").json()
    assert chain["ok"] and chain["log_key_id"] and chain["batches_verified"] >= 1
    assert chain["checkpoint"]["ok"] and chain["checkpoint"]["file"] == service.checkpoint_file.name
    assert chain["head_seq"] >= chain["checkpoint"]["tree_size"]


# ------------------------------------------------------------------------------------ reports


def test_reports_json_and_html_are_the_clis_for_the_tenant(service: Service) -> None:
    from genguard.audit.reports import safety_report

    audit = service.audit
    answer = service.call("GET", "/v1/reports/safety?bucket=week", "auditor")
    assert answer.headers["content-type"].startswith("application/json")
    expected_report = safety_report(audit, bucket="week", tenant="acme").to_json()
    body = answer.json()
    for key in ("requests", "images", "by_category", "by_policy", "trend", "bucket"):
        assert body[key] == expected_report[key], key
    whole = safety_report(audit, bucket="week").to_json()
    assert whole["requests"] == body["requests"]  # the tenant's space holds its generations only
    theirs = safety_report(service.other_audit, bucket="week", tenant="other").to_json()
    assert theirs["requests"] >= 1 and "harbour" not in json.dumps(theirs)
    html = service.call("GET", "/v1/reports/bias", "auditor", headers={"accept": "text/html,*/*;q=0.8"})
    assert html.headers["content-type"].startswith("text/html") and "<table" in html.text
    assert "<script>" not in html.text and "&lt;script&gt;" in html.text  # the prompt, escaped
    as_json = service.call("GET", "/v1/reports/bias", "auditor", headers={"accept": "application/json"})
    assert as_json.json()["label"] == "perceived"
    assert any(group["group"] == NASTY_PROMPT for group in as_json.json()["groups"])
    safety_html = service.call("GET", "/v1/reports/safety?format=html", "auditor")
    assert safety_html.headers["content-type"].startswith("text/html") and "<script" not in safety_html.text
    injected = service.call("GET", "/v1/reports/safety", "auditor", params={"prompt_like": "' OR 1=1 --"})
    assert injected.status_code == 200 and injected.json()["requests"] == 0
    bad = service.call("GET", "/v1/reports/bias?bucket=year", "auditor")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "query.bucket"


# ---------------------------------------------------------------------------- checkpoints, proofs


def test_checkpoint_is_the_signed_note_as_written(service: Service) -> None:
    answer = service.call("GET", "/v1/checkpoint", "admin")
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.content == service.checkpoint_file.read_bytes()
    note = parse_checkpoint(answer.content)
    lines = answer.text.split("\n")
    assert lines[0] == note.origin and lines[1] == str(note.tree_size) and "\u2014 " in answer.text


def test_inclusion_and_consistency_proofs_verify_offline(service: Service) -> None:
    note: Checkpoint = parse_checkpoint(service.checkpoint_file.read_bytes())
    answer = service.call(
        "GET", f"/v1/proofs/inclusion?seq={service.acme_entry}&tree_size={note.tree_size}", "admin"
    )
    assert answer.status_code == 200, answer.text
    proof = parse_inclusion_proof(answer.content)
    assert proof.checkpoint is not None and proof.checkpoint.root_hash == note.root_hash
    assert check_inclusion_proof(proof).ok
    now = parse_inclusion_proof(
        service.call("GET", f"/v1/proofs/inclusion?seq={service.acme_entry}", "admin").content
    )
    assert now.checkpoint is None and check_inclusion_proof(now, now.root_hash).ok
    by_auditor = service.call("GET", f"/v1/proofs/inclusion?seq={service.acme_entry}", "auditor")
    assert (
        by_auditor.status_code == 200 and parse_inclusion_proof(by_auditor.content).root_hash == now.root_hash
    )

    consistency = service.call("GET", f"/v1/proofs/consistency?first={note.tree_size}", "admin").json()
    first_root = base64.b64decode(consistency["first_root"])
    assert first_root == note.root_hash
    path = [base64.b64decode(node) for node in consistency["path"]]
    assert verify_consistency(
        consistency["first"],
        consistency["second"],
        first_root,
        base64.b64decode(consistency["second_root"]),
        path,
    )
    audit = service.audit
    assert base64.b64decode(consistency["second_root"]) == MerkleTree(audit.entry_hashes()).root(
        consistency["second"]
    )
    backwards = service.call("GET", f"/v1/proofs/consistency?first={note.tree_size}&second=1", "admin")
    assert backwards.status_code == 400 and "first" in backwards.json()["error"]["message"]
    beyond = service.call("GET", "/v1/proofs/consistency?first=1&second=99999999", "admin")
    assert beyond.status_code == 404


def test_each_tenants_checkpoint_and_proofs_are_of_its_own_chain(service: Service) -> None:
    """A tenant's auditor gets its own chain's checkpoint and proofs, never another tenant's."""
    from genguard.audit.checkpoint import log_origin

    ours = service.call("GET", "/v1/checkpoint", "auditor")
    theirs = service.call("GET", "/v1/checkpoint", "other-auditor")
    assert ours.content == service.checkpoint_file.read_bytes()
    assert theirs.content == service.other_checkpoint_file.read_bytes() != ours.content
    acme_note, other_note = parse_checkpoint(ours.content), parse_checkpoint(theirs.content)
    assert (
        acme_note.origin == log_origin(service.audit) != other_note.origin == log_origin(service.other_audit)
    )
    # The same position asked by the other tenant's auditor: an entry of its own chain, in its own tree.
    answer = service.call("GET", f"/v1/proofs/inclusion?seq={service.acme_entry}", "other-auditor")
    proof = parse_inclusion_proof(answer.content)
    assert proof.origin == other_note.origin and proof.tree_size == service.other_audit.reader().head().seq
    assert check_inclusion_proof(proof, proof.root_hash).ok
    assert service.quarantined not in answer.text and "harbour" not in answer.text
    mine = service.other_audit.reader().entry(service.acme_entry)
    assert mine is not None and proof.entry.entry_hash == mine.entry_hash
    sizes = service.call("GET", "/v1/proofs/consistency?first=1", "other-auditor").json()
    assert sizes["origin"] == other_note.origin and sizes["second"] == proof.tree_size


def test_the_read_functions_the_routes_use(service: Service) -> None:
    """The audit functions the routes call, directly: tenant scoping, proof bounds."""
    from genguard.audit.checkpoint import prove_consistency, prove_inclusion
    from genguard.audit.reader import in_tenant
    from genguard.guard.errors import BadInputError, NotFoundError

    assert in_tenant("acme", "acme") and in_tenant("acme/apikey:key_1", "acme")
    assert not in_tenant("acme-2/bob", "acme") and not in_tenant("acmex", "acme")
    with pytest.raises(BadInputError, match="tenant"):
        in_tenant("a/b", "a/b")
    reader = service.audit.reader()
    theirs = service.other_audit.reader()
    assert {q.generation_id for q in theirs.quarantined_images(tenant="other")} == {service.other_quarantined}
    assert not reader.quarantined_images(tenant="other")  # acme's space holds none of other's
    assert service.quarantined not in {g.generation_id for g in theirs.generations(100)}
    size = reader.head().seq
    with pytest.raises(NotFoundError, match="tree_size"):
        prove_inclusion(service.audit, 1, tree_size=size + 1)
    with pytest.raises(NotFoundError, match="entry 3"):
        prove_inclusion(service.audit, 3, tree_size=2)
    with pytest.raises(BadInputError, match="both"):
        prove_inclusion(service.audit, 1, parse_checkpoint(service.checkpoint_file.read_bytes()), tree_size=2)
    with pytest.raises(BadInputError, match="first"):
        prove_consistency(service.audit, 3, 2)
    same = prove_consistency(service.audit, 2, 2)
    assert same.path == () and same.first_root == same.second_root


# ------------------------------------------------------------------------------- secrets


def test_keys_never_in_responses_or_logs(service: Service) -> None:
    """Runs last: every response this module saw, and every log line, are free of every key."""
    assert service.call("GET", "/v1/review", "reviewer").status_code == 200  # also when run alone
    log_text = "\n".join(service.logs.lines)
    assert service.keys["reviewer"].info.id in log_text  # the key's id is logged...
    seen = "\n".join(service.responses)
    assert seen  # the table's answers were collected
    for issued in service.keys.values():
        secret = issued.secret
        for text in (log_text, seen):
            assert secret not in text and secret.split(".")[2] not in text  # ...never the key
