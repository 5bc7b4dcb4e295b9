"""A file that could not be written after the commit (a real failed write: the output folder replaced by a
file before the commit) is shown as not released by verify and by the safety report."""

from __future__ import annotations

from pathlib import Path

import pytest

from genguard.audit.records import RELEASE_FAILED_EVENT
from genguard.audit.reports import safety_report
from genguard.audit.verify import Verdict, verify_image
from genguard.guard.types import GenerationRequest
from genguard.pipeline.outcomes import ReleaseFailedError
from tests.test_generate_promises import SMALL, FolderRemover, governed, tiny_sd  # noqa: F401 (fixture)


def test_an_image_never_written_is_shown_as_not_released(
    tiny_sd: object,  # noqa: F811
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    assert RELEASE_FAILED_EVENT == "release.failed"
    written = governed(tiny_sd, sqlite_url, tmp_path)(GenerationRequest("a lighthouse", params=SMALL))
    out = tmp_path / "out"
    gp = governed(tiny_sd, sqlite_url, tmp_path, classifiers=[FolderRemover(out)])
    with pytest.raises(ReleaseFailedError) as raised:
        gp(GenerationRequest("a boat", params=SMALL), out_dir=out)
    failed = raised.value.result
    assert [image.index for image in failed.released] == [0, 1]

    # a copy of the bytes that were never written (the pipeline's own, signed): not called released
    report = verify_image(failed.released[0].data, store=gp.audit, record=False)
    assert report.record is not None and report.record.image.generation_id == failed.generation_id
    assert report.record.image_status == "release-failed" and not report.record.released
    assert report.verdict is Verdict.VERIFIED_ORIGINAL  # the credentials are ours and intact...
    assert "recorded as released and never written (release.failed)" in report.summary  # ...but it says so
    assert any("recorded as released but never written (release.failed)" in note for note in report.notes)
    assert report.to_json()["record"]["released"] is False
    # an image that was written reads as before
    normal = verify_image(written.released[0].data, store=gp.audit, record=False)
    assert normal.record is not None and normal.record.image_status == "released"
    assert "release.failed" not in normal.summary + " ".join(normal.notes)

    safety = safety_report(gp.audit)
    assert dict(
        dict(safety.by_policy)[f"{failed.decision.policy.name} {failed.decision.policy.version}"]
    ) == {
        "released": 2,
        "not released (write failed)": 2,
    }
