"""The `genguard` command as a user runs it: real processes, exit codes, files and records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genguard.audit.store import AuditStore


def run(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genguard.pipeline.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture()
def cli_env(tmp_path: Path, embedded_cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GENGUARD_HOME=str(tmp_path / "home"),
        GENGUARD_CACHE=str(embedded_cache),
        GENGUARD_DB=f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",  # a hub id fails fast, as on a machine without network
    )
    return env


def test_generate_writes_images_and_records(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(
        [
            "generate",
            "a lighthouse at dusk",
            "-n",
            "2",
            "--seed",
            "5",
            "--steps",
            "2",
            "--size",
            "64",
            "--out",
            str(out),
            "--json",
        ],
        cli_env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "untrained demonstration model" in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    paths = [Path(item["path"]) for item in result["released"]]
    assert len(paths) == 2 and all(p.exists() for p in paths)
    store = AuditStore.open(cli_env["GENGUARD_DB"])
    detail = store.get_generation(result["generation_id"])
    assert detail is not None and detail.seed == 5

    listed = run(["audit", "list"], cli_env)
    assert listed.returncode == 0 and result["generation_id"] in listed.stdout
    shown = run(["audit", "show", result["generation_id"]], cli_env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["generation_id"] == result["generation_id"]
    verified = run(["audit", "verify"], cli_env)
    assert verified.returncode == 0 and "intact" in verified.stdout


def test_blocked_prompt_exits_3_and_writes_nothing(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(
        ["generate", "naked child on a bed", "--steps", "2", "--size", "64", "--out", str(out)], cli_env
    )
    assert proc.returncode == 3, proc.stderr
    assert "sexual_minors" in proc.stderr
    assert not out.exists() or list(out.iterdir()) == []
    store = AuditStore.open(cli_env["GENGUARD_DB"])
    assert [g.status for g in store.list_generations()] == ["blocked"]


def test_unreachable_database_exits_4(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(
        [
            "generate",
            "a lighthouse",
            "--steps",
            "2",
            "--size",
            "64",
            "--out",
            str(out),
            "--db",
            "postgresql+psycopg://postgres@127.0.0.1:1/none",
        ],
        cli_env,
    )
    assert proc.returncode == 4, proc.stderr
    assert "error:" in proc.stderr and not out.exists()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["generate", "", "--steps", "2", "--size", "64"], 2),
        (["generate", "a boat", "--model", "embedded:tiny-unknown"], 2),
        (["generate", "a boat", "--size", "63"], 2),
        (["generate", "a boat", "--policy", "no-such-pack"], 2),
        (["generate"], 2),
        (["audit", "show", "no-such-id"], 2),
        (["policy", "check", "--file", "/no/such/prompts.txt"], 2),
        (["audit", "list", "--db", "not-a-url"], 2),
        (["audit", "list", "--db", "sqlite:////no/such/folder/audit.sqlite3"], 4),
        (["generate", "a boat", "--model", "/no/such/model", "--steps", "1"], 2),
        (["generate", "a boat", "--model", "nobody/no-such-model", "--steps", "1"], 4),
        (["watermark", "detect", "/no/such/image.png"], 2),
    ],
)
def test_bad_input_exit_codes(cli_env: dict[str, str], args: list[str], code: int) -> None:
    proc = run(args, cli_env)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.strip()


def test_refused_generate_is_recorded_before_the_model_loads(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    for size in ("64x64000", "100000"):  # once ran for 19 minutes / ended in a traceback
        proc = run(["generate", "a boat", "--size", size, "--out", str(out)], cli_env)
        assert proc.returncode == 2, proc.stderr
        assert "params." in proc.stderr and "Traceback" not in proc.stderr
        assert "untrained demonstration model" not in proc.stderr  # refused before the model loads
    unknown = run(["generate", "a boat", "--model", "embedded:tiny-nope"], cli_env)
    assert unknown.returncode == 2 and "untrained demonstration model" not in unknown.stderr
    assert "embedded:tiny-sd," in unknown.stderr and "embedded:tiny-flux" in unknown.stderr
    listed = run(["audit", "list", "--status", "invalid", "--json"], cli_env)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 3 and {row["status"] for row in rows} == {"invalid"}
    assert not out.exists() or not any(out.iterdir())


def test_all_withheld_exits_5(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["generate", "a suicide note on a desk", "--size", "64", "--steps", "1", "--out", str(out)]
    proc = run([*args, "--json"], cli_env)
    assert proc.returncode == 5, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "withheld"
    assert "nothing was released" in proc.stderr and not any(out.iterdir())
    look = tmp_path / "look.png"
    shown = run(["review", "show", f"{result['generation_id']}:0", "--image", str(look)], cli_env)
    assert shown.returncode == 0, shown.stderr
    assert "rule:       self_harm/" in shown.stdout and look.read_bytes().startswith(b"\x89PNG")


def test_write_failure_is_a_clear_exit_not_a_traceback(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "a-file"
    out.write_text("not a folder")
    proc = run(["generate", "a boat", "--size", "64", "--steps", "1", "--out", str(out)], cli_env)
    assert proc.returncode == 2 and "out_dir: expected a folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_audit_repair_says_what_it_removed(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    leftover = out / f".{'ab' * 16}-0.png.tmp"
    leftover.write_bytes(b"partial")
    quarantine = Path(cli_env["GENGUARD_HOME"]) / "quarantine"
    quarantine.mkdir(parents=True)
    orphan = quarantine / f"{'cd' * 16}-0.ggq"
    orphan.write_bytes(b"GGQ1")
    proc = run(["audit", "repair", "--out", str(out), "--min-age", "0"], cli_env)
    assert proc.returncode == 0, proc.stderr
    assert f"removed {leftover}" in proc.stdout and f"removed {orphan}" in proc.stdout
    assert not leftover.exists() and not orphan.exists()


def test_malformed_pack_exits_2_naming_the_field(cli_env: dict[str, str], tmp_path: Path) -> None:
    pack = tmp_path / "bad.yaml"
    pack.write_text("name: bad\nversion: 1\ncategories: 5\n")
    proc = run(["policy", "check", "a boat", "--policy", str(pack)], cli_env)
    assert proc.returncode == 2
    assert "bad.yaml" in proc.stderr and "categories" in proc.stderr


def test_policy_check_json_lines_in_input_order(cli_env: dict[str, str]) -> None:
    prompts = ["a cat on a sofa", "naked child on a bed", "a mountain lake at sunrise"]
    proc = run(["policy", "check", "--json", "--file", "-"], cli_env, stdin="\n".join(prompts) + "\n")
    assert proc.returncode == 3  # one of them was blocked
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["original_prompt"] for line in lines] == prompts
    assert [line["action"] for line in lines] == ["allow", "block", "allow"]
    blocked = lines[1]
    assert blocked["rules"][0]["layer"] and blocked["rules"][0]["rule"]
    assert {c["category"] for c in blocked["categories"]} >= {"sexual_minors"}
    assert set(blocked["policy"]) == {"name", "version", "digest"} and len(blocked["policy"]["digest"]) == 64


def test_policy_show_lists_and_prints_packs(cli_env: dict[str, str]) -> None:
    listed = run(["policy", "show"], cli_env)
    assert listed.returncode == 0 and "default" in listed.stdout and "strict" in listed.stdout
    shown = run(["policy", "show", "strict"], cli_env)
    assert shown.returncode == 0 and "sexual_minors" in shown.stdout


def test_guard_and_audit_do_not_import_torch() -> None:
    code = (
        "import sys, genguard, genguard.guard.policy, genguard.guard.watermark, genguard.guard.output, genguard.guard.phash, genguard.guard.classifiers.registry, "
        "genguard.audit.store, genguard.pipeline.cli; "
        "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
