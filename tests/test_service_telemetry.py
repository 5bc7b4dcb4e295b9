"""OpenTelemetry: the SDK's in-memory span exporter and metric reader on a real app (the embedded model,
a real SQLite store): a span per request, a job span with one child per Governor stage, the stage
histogram, decisions by category and verify verdicts; nothing at all when not configured."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from PIL import Image
from skimage import data as skdata

from genguard.guard.errors import BadInputError
from genguard.pipeline.service.app import create_app, open_context
from genguard.pipeline.service.context import ServiceConfig
from genguard.pipeline.service.stages import STAGES
from genguard.pipeline.service.telemetry import Telemetry

torch.set_num_threads(1)


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def wait_done(client: TestClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"{url}?wait=5", headers=headers).json()
        if job["status"] not in ("queued", "running"):
            return job
    raise AssertionError("the job did not finish")


def test_spans_and_metrics_with_the_in_memory_exporter(tmp_path: Path, embedded_cache: Path) -> None:
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    telemetry = Telemetry.with_sdk([SimpleSpanProcessor(spans)], [reader])
    config = ServiceConfig(db_url=f"sqlite:///{tmp_path / 'a.sqlite3'}", files_dir=tmp_path / "f", workers=1)
    ctx = open_context(config, telemetry)
    ctx.store.create_tenant("acme")
    key = ctx.store.issue_key("acme", "generator")
    headers = {"Authorization": f"Bearer {key.secret}"}
    with TestClient(create_app(config, ctx)) as client:
        body = {"prompt": "a red boat", "n": 1, "size": "64x64", "steps": 2}
        accepted = client.post("/v1/generations", json=body, headers={**headers, "X-Request-ID": "rid-otel"})
        assert accepted.status_code == 202
        job = wait_done(client, accepted.json()["url"], headers)
        assert job["status"] == "done", job
        blocked = client.post(
            "/v1/generations", json={**body, "prompt": "naked child on a bed"}, headers=headers
        )
        assert wait_done(client, blocked.json()["url"], headers)["status"] == "blocked"
        photo = io.BytesIO()
        Image.fromarray(skdata.astronaut()[:256, :256]).save(photo, format="PNG")  # type: ignore[no-untyped-call]
        verified = client.post("/v1/verify", content=photo.getvalue(), headers={"content-type": "image/png"})
        assert verified.status_code == 200

    finished = spans.get_finished_spans()
    requests = [s for s in finished if s.name == "HTTP POST /v1/generations"]
    assert any(s.attributes and s.attributes.get("genguard.request_id") == "rid-otel" for s in requests)
    assert all(s.attributes and s.attributes["http.response.status_code"] == 202 for s in requests)
    jobs = [s for s in finished if s.name == "genguard.job"]
    done_job = next(s for s in jobs if s.attributes and s.attributes["genguard.job.id"] == job["id"])
    children = [s for s in finished if s.parent is not None and s.parent.span_id == done_job.context.span_id]
    assert [s.name for s in sorted(children, key=lambda s: s.start_time or 0)] == [
        f"genguard.stage.{stage}" for stage in STAGES
    ]
    assert "a red boat" not in str([dict(s.attributes or {}) for s in finished])

    stages = {p.attributes["stage"]: p for p in points(reader, "genguard.stage.duration")}
    assert set(stages) == set(STAGES)
    assert stages["admit"].count == 2 and stages["sample"].count == 1 and stages["sample"].sum > 0
    decisions = {
        (p.attributes["action"], p.attributes["category"]): p.value
        for p in points(reader, "genguard.decisions")
    }
    assert decisions[("allow", "none")] == 1 and decisions[("block", "sexual_minors")] == 1
    verdicts = {p.attributes["verdict"]: p.value for p in points(reader, "genguard.verify.verdicts")}
    assert verdicts == {verified.json()["verdict"]: 1}


def test_not_configured_is_disabled_and_a_bad_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENGUARD_OTEL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    off = Telemetry.from_env()
    assert not off.enabled and off.tracer_provider is None
    with off.span("x") as span, off.stage("admit"):
        assert span is None
    off.decision("allow", [])  # no-ops
    monkeypatch.setenv("GENGUARD_OTEL", "zipkin")
    with pytest.raises(BadInputError, match="GENGUARD_OTEL: expected 'otlp'"):
        Telemetry.from_env()
    monkeypatch.setenv("GENGUARD_OTEL", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert not Telemetry.from_env().enabled
    monkeypatch.delenv("GENGUARD_OTEL")
    on = Telemetry.from_env()  # the standard endpoint variable alone turns export on
    try:
        assert on.enabled
    finally:
        on.shutdown()
