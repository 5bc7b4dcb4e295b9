"""Upper bounds from the model family AND the pack (`limits:`): a pack only tightens; shipped packs keep
their digests; `policy check --file` is bounded (prompts, bytes per file and per line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genguard.audit.store import AuditStore
from genguard.guard.policy import load_pack
from genguard.guard.policy.schema import LimitsSpec
from genguard.pipeline.families import FAMILY_BOUNDS, Bounds, Family, bounds_for
from tests.test_cli import cli_env, run  # noqa: F401 (fixture)


def pack_with_limits(folder: Path, env: dict[str, str], limits: str) -> Path:
    proc = run(["policy", "init", "limited", "--dir", str(folder)], env)
    assert proc.returncode == 0, proc.stderr
    path = folder / "limited.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\nlimits:\n" + limits, encoding="utf-8")
    return path


def test_a_pack_only_tightens_the_family_bounds() -> None:
    family = FAMILY_BOUNDS[Family.SDXL]
    limits = LimitsSpec(max_side=1024, max_pixels_per_image=10**9, max_steps=50, max_images=1000)
    assert bounds_for(Family.SDXL, limits=limits) == Bounds(
        max_side=1024,
        max_pixels=family.max_pixels,  # above the family's: the family's
        max_request_pixels=family.max_request_pixels,  # not set
        max_steps=50,
        max_images=family.max_images,
    )
    assert bounds_for(Family.SDXL) == family
    assert bounds_for(None, embedded=True, limits=LimitsSpec(max_images=2)).max_images == 2


def test_shipped_packs_keep_their_canonical_form() -> None:
    for name in ("default", "strict"):
        pack = load_pack(name)
        assert pack.spec.limits is None and "limits" not in pack.canonical_dict()


def test_limits_must_be_positive_and_named() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_steps"):
        LimitsSpec(max_steps=0)
    with pytest.raises(ValidationError, match="max_stepz"):
        LimitsSpec.model_validate({"max_stepz": 3})


def test_generate_over_the_pack_limit_is_refused_and_recorded_invalid(
    cli_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    pack = pack_with_limits(
        tmp_path, cli_env, "  max_images: 2\n  max_steps: 5\n  max_images_typo_free: null\n"
    )
    proc = run(["policy", "show", str(pack)], cli_env)
    assert proc.returncode == 2 and "max_images_typo_free" in proc.stderr  # unknown keys are errors
    pack = pack_with_limits(tmp_path / "ok", cli_env, "  max_images: 2\n  max_steps: 500000\n")
    assert load_pack(str(pack)).canonical_dict()["limits"]["max_images"] == 2
    proc = run(
        ["generate", "a boat", "--policy", str(pack), "-n", "3", "--out", str(tmp_path / "o")], cli_env
    )
    assert proc.returncode == 2, proc.stderr
    assert "params.num_images: expected 1 to 2, found 3" in proc.stderr
    store = AuditStore.open(cli_env["GENGUARD_DB"], read_only=True)
    [generation] = store.list_generations(limit=5)
    assert generation.status == "invalid"


def test_policy_check_file_is_bounded_and_names_the_line(
    cli_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a boat\n\n" + "x" * 80_001 + "\na cat\n", encoding="utf-8")
    proc = run(["policy", "check", "--file", str(prompts), "--json"], cli_env)
    assert proc.returncode == 2
    assert "line 3: expected at most 80000 bytes, found more" in proc.stderr
    assert [json.loads(line)["action"] for line in proc.stdout.splitlines()] == [
        "allow"
    ]  # before it: checked

    pack = pack_with_limits(tmp_path, cli_env, "  max_prompts_per_file: 2\n  max_line_bytes: 10\n")
    prompts.write_text("a boat\n\na cat\na dog\n", encoding="utf-8")
    proc = run(["policy", "check", "--file", str(prompts), "--policy", str(pack)], cli_env)
    assert proc.returncode == 2 and "expected at most 2 prompts, found more by line 4" in proc.stderr
    prompts.write_text("a boat\na lighthouse\n", encoding="utf-8")
    proc = run(["policy", "check", "--file", str(prompts), "--policy", str(pack)], cli_env)
    assert proc.returncode == 2 and "line 2: expected at most 10 bytes" in proc.stderr
