"""`genguard report compliance`: counts from a real audit log, witnesses on loopback, a bench record."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from genguard.audit import AuditStore
from genguard.audit.checkpoint import checkpoint_key, create_checkpoint, log_origin
from genguard.audit.compliance import (
    ROBUSTNESS_FORMAT,
    compliance_report,
    installed_version,
    render_compliance_html,
)
from genguard.audit.records import GenerationRecord
from genguard.audit.witness import WitnessPolicy, request_cosignatures
from genguard.guard.errors import BadInputError
from tests._witness import TestWitness, running
from tests.test_audit_store import make_record
from tests.test_checkpoint import genguard

PROMPT = "a watercolour fox in the snow"


def record(seed: int, actor: str, *, manifest: bool, latent: bool, timestamp: str | None) -> GenerationRecord:
    base = make_record(seed, images=2)  # image 0 released, image 1 quarantined
    images = tuple(
        dataclasses.replace(
            image,
            mark_id=(seed << 8 | image.index) + 1,
            manifest=image.manifest if manifest else None,
            latent_nonce=bytes(16) if latent else None,
        )
        for image in base.images
    )
    extra = {"content_credentials": {"timestamps": {"0": timestamp}}} if timestamp else {}
    return dataclasses.replace(
        base, request=dataclasses.replace(base.request, actor=actor), images=images, extra=extra
    )


def bench_record(path: Path, version: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "format": ROBUSTNESS_FORMAT,
                "genguard_version": version,
                "date": "2026-12-01T10:00:00+00:00",
                "command": "python bench/watermark.py --quick --record x",
                "sizes": {
                    "512": {"trials": 4, "psnr_min_db": 42.2, "exact_read": {"jpeg75": 1.0, "crop75": 0.75}}
                },
            }
        )
    )
    return path


@pytest.fixture()
def filled(sqlite_url: str) -> AuditStore:
    store = AuditStore.open(sqlite_url)
    store.record_generation(record(1, "acme/alice", manifest=True, latent=True, timestamp="timestamped"))
    store.record_generation(record(2, "acme/bob", manifest=False, latent=False, timestamp=None))
    store.record_generation(record(3, "other", manifest=True, latent=False, timestamp="skipped"))
    origin = log_origin(store)
    key = checkpoint_key().public_key().public_bytes_raw()
    with (
        running(TestWitness("witness.test/w1", {origin: key})) as w1,
        running(TestWitness("witness.test/w2", {origin: key})) as w2,
    ):
        policy = WitnessPolicy.parse(f"witness {w1.vkey} {w1.url}\nwitness {w2.vkey} {w2.url}\n")
        request_cosignatures(store, create_checkpoint(store), policy)
    store.record_generation(record(4, "acme", manifest=True, latent=False, timestamp="timestamped"))
    return store


def test_counts_per_tenant_and_period(filled: AuditStore, tmp_path: Path) -> None:
    figures = bench_record(tmp_path / "bench.json", installed_version())
    acme = compliance_report(
        filled, tenant="acme", robustness_path=figures, detection_url="https://detect.example/v1"
    )
    assert (acme.images_released, acme.pixel_marked, acme.latent_marked) == (3, 3, 1)
    assert (acme.signed, acme.timestamped, acme.timestamp_skipped) == (2, 2, 0)
    assert acme.witnessed == 2 and acme.witnesses == ("witness.test/w1", "witness.test/w2")
    assert acme.gaps == (
        "1 released images carry no signed Content Credentials",
        "1 released images are not yet in a witnessed checkpoint",
    )
    everyone = compliance_report(filled, robustness_path=figures, detection_url="https://detect.example/v1")
    assert (everyone.images_released, everyone.signed, everyone.timestamp_skipped, everyone.witnessed) == (
        4,
        3,
        1,
        3,
    )
    assert "1 signed images carry no trusted timestamp" in everyone.gaps
    later = datetime.now(UTC) + timedelta(days=1)
    assert compliance_report(filled, since=later, robustness_path=figures).images_released == 0
    with pytest.raises(BadInputError, match="until: expected a time after since"):
        compliance_report(filled, since=later, until=later - timedelta(days=2))


def test_robustness_figures_must_be_of_the_installed_version(filled: AuditStore, tmp_path: Path) -> None:
    missing = compliance_report(filled, detection_url="https://detect.example/v1")
    assert missing.robustness is None and any(
        "bench/watermark.py --quick --record" in g for g in missing.gaps
    )
    old = compliance_report(filled, robustness_path=bench_record(tmp_path / "old.json", "0.0.1"))
    assert old.robustness is not None and "not the installed" in old.robustness_note
    assert any(g.startswith("watermark robustness: from genguard 0.0.1") for g in old.gaps)
    assert any("GENGUARD_DETECTION_URL" in g for g in old.gaps)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(BadInputError, match="expected format 'genguard/watermark-robustness/v1'"):
        compliance_report(filled, robustness_path=tmp_path / "bad.json")


def test_cli_json_and_html(
    filled: AuditStore, sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = bench_record(tmp_path / "bench.json", installed_version())
    args = ["report", "compliance", "--db", sqlite_url, "--tenant", "acme", "--robustness", str(figures)]
    code, out, _ = genguard([*args, "--json", "--detection-url", "https://detect.example/v1"], capsys)
    data = json.loads(out)
    assert code == 0 and data["format"] == "genguard/compliance-report/v1"
    assert (data["images_released"], data["witnessed"], data["detection_url"]) == (
        3,
        2,
        "https://detect.example/v1",
    )
    page = tmp_path / "compliance.html"
    code, out, _ = genguard([*args, "-o", str(page), "--since", "2026-01-01"], capsys)
    html = page.read_text()
    assert code == 0 and "Marking and provenance" in html and "tenant acme" in html and "jpeg75" in html
    assert "Not configured" in html and PROMPT not in html and "alice" not in html
    code, _, err = genguard([*args, "--json", "--tenant", "a/b"], capsys)
    assert code == 2 and "tenant: expected a name without '/'" in err
    assert render_compliance_html(compliance_report(filled, robustness_path=figures)).startswith(
        "<!DOCTYPE html>"
    )
