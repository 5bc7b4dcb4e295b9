"""One mark-id form on output and every reasonable form on input; readable `audit show` and reprs;
JSON lines for many inputs; third-party loading bars only with --verbose."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genguard.audit import AuditStore
from genguard.guard.errors import BadInputError
from genguard.guard.markid import format_mark_id, parse_mark_id, read_mark_id
from genguard.guard.types import ImageAction, ImageVerdict
from genguard.pipeline.cli import main
from tests._photos import photographs
from tests.test_audit_store import make_record

MARK = 0x9E3779B97F4A7C15


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.mark.parametrize(
    "text",
    [
        "0x9e3779b97f4a7c15",
        "0X9E3779B97F4A7C15",
        " 0x9e37_79b9_7f4a_7c15 ",
        "9e3779b97f4a7c15",  # bare hex as `verify` and `generate` printed it
        str(MARK),  # decimal, as `audit show` and manifests said
        f"{MARK} (0x{MARK:016x})",  # as `watermark detect` printed it
    ],
)
def test_every_printed_form_parses(text: str) -> None:
    assert parse_mark_id(text) == MARK
    assert format_mark_id(parse_mark_id(text)) == "0x9e3779b97f4a7c15"


def test_bad_and_ambiguous_mark_ids_are_named() -> None:
    with pytest.raises(
        BadInputError, match=r"--id: expected an unambiguous mark id.*0x1234567890123456 \(hex\)"
    ):
        parse_mark_id("1234567890123456", "--id")
    assert parse_mark_id("0x1234567890123456") == 0x1234567890123456
    with pytest.raises(BadInputError, match=r"expected an integer in 0 \.\. 2\*\*64-1"):
        parse_mark_id(str(1 << 64))
    with pytest.raises(BadInputError, match="halves to agree"):
        parse_mark_id("12 (0x0d)")
    with pytest.raises(BadInputError, match=r"mark id: expected 0x"):
        parse_mark_id("mark-7")
    with pytest.raises(BadInputError):
        format_mark_id(-1)
    # manifests before the 0x form wrote decimal of any width, 16 digits included
    assert read_mark_id("1234567890123456") == 1234567890123456
    assert read_mark_id("0x0000000000003039") == 12345
    assert read_mark_id("not a mark") is None and read_mark_id(42) is None


def test_watermark_embed_takes_what_detect_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "coffee.png"
    Image.fromarray(photographs(512, ("coffee",))["coffee"]).save(source)
    code, out, err = run_cli(
        ["watermark", "embed", str(source), str(tmp_path / "a.png"), "--id", str(MARK)], capsys
    )
    assert code == 0 and "0x9e3779b97f4a7c15" in out, err
    code, out, err = run_cli(["watermark", "detect", str(tmp_path / "a.png")], capsys)
    assert code == 0 and "id 0x9e3779b97f4a7c15," in out
    printed = out.split("id ")[1].split(",")[0]
    code, out, err = run_cli(
        ["watermark", "embed", str(source), str(tmp_path / "b.png"), "--id", printed], capsys
    )
    assert code == 0, err  # refused before: int("9e37...", 0) is no integer
    code, out, err = run_cli(
        ["watermark", "detect", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--json"], capsys
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["mark_id"] for line in lines] == ["0x9e3779b97f4a7c15"] * 2
    code, out, err = run_cli(
        ["watermark", "embed", str(source), str(tmp_path / "c.png"), "--id", "x1"], capsys
    )
    assert code == 2 and "--id: expected 0x" in err


def test_verify_json_is_one_line_per_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, pixels in photographs(256, ("coffee", "camera")).items():
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    AuditStore.open(url).close()
    _code, out, _err = run_cli(["verify", str(tmp_path), "--json", "--no-record", "--db", url], capsys)
    lines = out.strip().splitlines()
    assert len(lines) == 2, out
    assert sorted(Path(json.loads(line)["name"]).name for line in lines) == ["camera.png", "coffee.png"]


def test_audit_show_summarises_bytes_unless_raw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    record = make_record(7, images=1)
    with AuditStore.open(url) as store:
        store.record_generation(record)
    manifest = record.images[0].manifest
    assert manifest is not None and len(manifest) == 512
    code, out, err = run_cli(["audit", "show", "gen-000007", "--db", url], capsys)
    assert code == 0, err
    image = json.loads(out)["images"][0]
    assert image["manifest"] == {"sha256": hashlib.sha256(manifest).hexdigest(), "length": 512}
    assert image["mark_id"] == format_mark_id(record.images[0].mark_id or 0)
    assert manifest.hex() not in out and len(out) < 8000
    _code, out, _err = run_cli(["audit", "show", "gen-000007", "--raw", "--db", url], capsys)
    assert json.loads(out)["images"][0]["manifest"] == manifest.hex()


def test_generated_image_repr_is_readable() -> None:
    from genguard.pipeline.governed import GeneratedImage

    image = GeneratedImage(
        index=0,
        pixels=np.zeros((1024, 1024, 3), np.uint8),
        data=b"\x89PNG" + bytes(300_000),
        sha256="ab" * 32,
        phash=1,
        mark_id=MARK,
        latent_nonce=bytes(16),
        verdict=ImageVerdict(ImageAction.RELEASE, (), ()),
        manifest=bytes(9000),
    )
    text = repr(image)
    assert len(text) < 400 and "1024x1024x3 uint8" in text and "300004 bytes image/png" in text
    assert "mark_id=0x9e3779b97f4a7c15" in text and "9000 bytes" in text


@pytest.mark.parametrize("verbose", [False, True])
def test_loading_bars_only_with_verbose(verbose: bool, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GENGUARD_HOME": str(tmp_path),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    # A fresh cache too: with the semantic layer's ONNX export already cached, no model library loads.
    for variable in (
        "TRANSFORMERS_VERBOSITY",
        "DIFFUSERS_VERBOSITY",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "GENGUARD_CACHE",
    ):
        env.pop(variable, None)
    args = [
        sys.executable,
        "-m",
        "genguard.pipeline.cli",
        *(["--verbose"] if verbose else []),
        "policy",
        "check",
        "a cat",
    ]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("allow")
    assert ("Loading weights" in proc.stderr) is verbose, proc.stderr
