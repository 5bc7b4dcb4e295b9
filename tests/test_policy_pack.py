"""Policy packs: shipped packs load, malformed packs fail naming file/field/expected/found,
the sexual_minors floor cannot be relaxed, and the digest follows content, not formatting."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from genguard.guard.errors import PolicyError
from genguard.guard.policy import list_shipped_packs, load_pack
from genguard.guard.policy.pack import PolicyPack
from genguard.guard.types import ImageAction, PromptAction, PromptStorage

# The categories the issue names, written out here rather than imported so that the test checks them.
TAXONOMY = {"sexual", "sexual_minors", "violence", "hate", "self_harm", "harassment", "illegal_weapons"}
REQUIRED = TAXONOMY | {"deceptive_real_people", "artist_style"}


@pytest.fixture(scope="module")
def inlined(default_pack: PolicyPack) -> dict[str, Any]:
    """The default pack with its term files inlined: a self-contained pack to mutate."""
    return default_pack.canonical_dict()


def write(tmp_path: Path, data: dict[str, Any], name: str = "pack.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_error(tmp_path: Path, data: dict[str, Any]) -> str:
    path = write(tmp_path, data)
    with pytest.raises(PolicyError) as caught:
        load_pack(path)
    message = str(caught.value)
    assert str(path) in message
    return message


def test_shipped_packs_load_with_every_category() -> None:
    assert {"default", "strict"} <= set(list_shipped_packs())
    for name in ("default", "strict"):
        pack = load_pack(name)
        assert set(pack.category_ids) >= REQUIRED
        assert pack.ref.name == name
        assert len(pack.ref.digest) == 64
        assert pack.category("sexual_minors").action == PromptAction.BLOCK


def test_strict_is_stricter_than_default(default_pack: PolicyPack) -> None:
    strict = load_pack("strict")
    assert strict.prompt_storage == PromptStorage.HASHED
    assert default_pack.prompt_storage == PromptStorage.FULL
    for category in REQUIRED:
        loose, tight = default_pack.category(category), strict.category(category)
        assert tight.action.rank >= loose.action.rank
        for layer in ("lexical", "semantic", "model", "image"):
            assert getattr(tight.thresholds, layer) <= getattr(loose.thresholds, layer)
        assert len(tight.rules) >= len(loose.rules)


def test_accessors(default_pack: PolicyPack) -> None:
    violence = default_pack.category("violence")
    factor = default_pack.spec.uncertain.image_threshold_factor
    assert default_pack.image_threshold("violence", heightened=False) == violence.thresholds.image
    assert default_pack.image_threshold("violence", heightened=True) == pytest.approx(
        violence.thresholds.image * factor
    )
    assert default_pack.output_action("sexual_minors") is ImageAction.BLOCK
    assert default_pack.output_action("violence") is ImageAction(violence.output_action)
    assert default_pack.prompt_threshold("violence", "cooccurrence") == violence.thresholds.lexical
    with pytest.raises(PolicyError, match="'nope'"):
        default_pack.category("nope")


def test_unknown_pack_name_lists_shipped_ones() -> None:
    with pytest.raises(PolicyError) as caught:
        load_pack("defualt")
    assert "'defualt'" in str(caught.value)
    assert "default" in str(caught.value) and "strict" in str(caught.value)


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="absent.yaml"):
        load_pack(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("edit", "field", "expected", "found"),
    [
        (
            lambda d: d["categories"]["violence"]["thresholds"].update(lexical=1.5),
            "categories.violence.thresholds.lexical",
            "less than or equal to 1",
            "1.5",
        ),
        (
            lambda d: d["categories"]["violence"]["thresholds"].update(lexical="high"),
            "categories.violence.thresholds.lexical",
            "a valid number",
            "'high'",
        ),
        (
            lambda d: d["categories"]["hate"].update(action="ban"),
            "categories.hate.action",
            "'allow', 'rewrite', 'review' or 'block'",
            "'ban'",
        ),
        (
            lambda d: d["categories"]["hate"].update(treshold=0.5),
            "categories.hate.treshold",
            "no such field",
            "0.5",
        ),
        (
            lambda d: d["categories"]["hate"].update(output_action="release"),
            "categories.hate.output_action",
            "'quarantine' or 'block'",
            "'release'",
        ),
        (
            lambda d: d["audit"].update(prompt_storage="encrypted"),
            "audit.prompt_storage",
            "'full', 'hashed' or 'redacted'",
            "'encrypted'",
        ),
        (lambda d: d.pop("version"), "version", "required field", "nothing"),
        (
            lambda d: d["categories"]["hate"]["rules"][0].update(terms=[]),
            "categories.hate.rules.0.terms",
            "at least 1 item",
            "[]",
        ),
        (
            lambda d: d["image_checks"]["classifiers"].insert(0, {"model": "x"}),
            "image_checks.classifiers.0.kind",
            "required field",
            "nothing",
        ),
    ],
)
def test_malformed_pack_names_file_field_expected_found(
    tmp_path: Path, inlined: dict[str, Any], edit: Any, field: str, expected: str, found: str
) -> None:
    data = copy.deepcopy(inlined)
    edit(data)
    message = load_error(tmp_path, data)
    assert f"field {field}:" in message
    assert expected in message
    assert f"found {found}" in message


def test_missing_required_category(tmp_path: Path, inlined: dict[str, Any]) -> None:
    data = copy.deepcopy(inlined)
    del data["categories"]["harassment"]
    message = load_error(tmp_path, data)
    assert "field categories" in message and "harassment" in message


def test_duplicate_rule_id(tmp_path: Path, inlined: dict[str, Any]) -> None:
    data = copy.deepcopy(inlined)
    data["categories"]["hate"]["rules"].append({"id": "violence.gore", "terms": ["x y z"]})
    message = load_error(tmp_path, data)
    assert "categories.hate.rules" in message and "'violence.gore'" in message


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ncategories: [unclosed\n", encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_pack(path)
    assert str(path) in str(caught.value) and "line" in str(caught.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="expected a mapping"):
        load_pack(path)


def test_bad_rule_file_names_that_file(tmp_path: Path, inlined: dict[str, Any]) -> None:
    data = copy.deepcopy(inlined)
    (tmp_path / "terms").mkdir()
    (tmp_path / "terms" / "extra.yaml").write_text(
        "rules:\n  - id: extra.one\n    term: [x]\n", encoding="utf-8"
    )
    data["categories"]["hate"]["rule_files"] = ["terms/extra.yaml"]
    path = write(tmp_path, data)
    with pytest.raises(PolicyError) as caught:
        load_pack(path)
    assert "extra.yaml" in str(caught.value) and "field rules.0.term:" in str(caught.value)
    data["categories"]["hate"]["rule_files"] = ["terms/none.yaml"]
    with pytest.raises(PolicyError, match="categories.hate.rule_files"):
        load_pack(write(tmp_path, data))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda c: c.update(action="review"), "action"),
        (lambda c: c.update(action="allow"), "action"),
        (lambda c: c.update(enabled=False), "enabled"),
        (lambda c: c.update(output_action="quarantine"), "output_action"),
        (lambda c: c["thresholds"].update(lexical=0.9), "thresholds.lexical"),
        (lambda c: c["thresholds"].update(image=0.95), "thresholds.image"),
        (lambda c: c.update(rules=[r for r in c["rules"] if r["id"] != "sexual_minors.explicit"]), "rules"),
        (lambda c: c["rules"][0].update(score=0.1), "rules"),
        (lambda c: c.update(cooccurrence=[]), "cooccurrence"),
        (lambda c: c["cooccurrence"][0]["all_of"].update(minor=["toddler"]), "cooccurrence"),
        (lambda c: c["cooccurrence"][0]["all_of"].update(sexual=["nude"]), "cooccurrence"),
    ],
)
def test_sexual_minors_cannot_be_relaxed(
    tmp_path: Path, inlined: dict[str, Any], edit: Any, field: str
) -> None:
    data = copy.deepcopy(inlined)
    edit(data["categories"]["sexual_minors"])
    message = load_error(tmp_path, data)
    assert f"field categories.sexual_minors.{field}:" in message
    assert "no pack can relax it" in message


def test_sexual_minors_may_be_tightened(tmp_path: Path, inlined: dict[str, Any]) -> None:
    data = copy.deepcopy(inlined)
    data["categories"]["sexual_minors"]["thresholds"]["lexical"] = 0.2
    data["categories"]["sexual_minors"]["rules"][0]["terms"].append("another banned phrase")
    assert load_pack(write(tmp_path, data)).category("sexual_minors").thresholds.lexical == 0.2


def test_digest_ignores_key_order_and_formatting(tmp_path: Path, inlined: dict[str, Any]) -> None:
    first = tmp_path / "a.yaml"
    first.write_text(yaml.safe_dump(inlined, sort_keys=True, default_flow_style=False), encoding="utf-8")
    second = tmp_path / "b.yaml"
    reordered = dict(reversed(list(inlined.items())))
    second.write_text("# a comment\n" + json.dumps(reordered, indent=7), encoding="utf-8")  # JSON is YAML
    digest = load_pack(first).digest
    assert load_pack(second).digest == digest
    # The default pack with term files and the same pack inlined are the same content.
    assert load_pack("default").digest == digest


def test_digest_changes_with_content(tmp_path: Path, inlined: dict[str, Any]) -> None:
    base = load_pack(write(tmp_path, inlined, "base.yaml")).digest
    edits: list[Callable[[dict[str, Any]], object]] = [
        lambda d: d["categories"]["violence"]["thresholds"].update(lexical=0.45),
        lambda d: d["categories"]["hate"]["rules"][0]["terms"].append("new term"),
        lambda d: d.update(version="1.0.1"),
    ]
    for edit in edits:
        data = copy.deepcopy(inlined)
        edit(data)
        assert load_pack(write(tmp_path, data, "changed.yaml")).digest != base


def test_to_yaml_round_trips(tmp_path: Path, default_pack: PolicyPack) -> None:
    path = tmp_path / "shown.yaml"
    path.write_text(default_pack.to_yaml(), encoding="utf-8")
    assert load_pack(path).digest == default_pack.digest


# ---------------------------------------------------------------------- the two YAML readers


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("a: &x 1\nb: *x\n", "without anchors or aliases; found an anchor at line 1, column 4"),
        ("a: [1]\nb: 2\na: 3\n", "each key once in a mapping; found 'a' again at line 3, column 1"),
        ("a:" + " [" * 40 + " 1" + " ]" * 40 + "\n", "nested at most 32 levels deep"),
        ("a:" + " [" * 2000 + " 1" + " ]" * 2000 + "\n", "nested at most 32 levels deep"),
    ],
)
@pytest.mark.parametrize("libyaml", [True, False])
def test_both_yaml_readers_refuse_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, refusal: str, libyaml: bool
) -> None:
    """Packs are read by libyaml when PyYAML has it, else by the pure-Python reader: same refusals."""
    from genguard.guard.policy import loader

    if not libyaml:
        monkeypatch.setattr(loader, "_CSafeLoader", None)
    elif loader._CSafeLoader is None:
        pytest.fail("PyYAML without libyaml: the fast reader is not tested")
    path = tmp_path / "pack.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as refused:
        load_pack(path)
    assert str(refused.value).startswith(f"{path}: expected") and refusal in str(refused.value)


def test_both_yaml_readers_read_the_shipped_files_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    from genguard import policies
    from genguard.guard.policy import loader

    files = sorted(policies.PACK_DIR.rglob("*.yaml"))
    assert len(files) > 10
    fast = [loader._read_yaml(path) for path in files]
    monkeypatch.setattr(loader, "_CSafeLoader", None)
    assert [loader._read_yaml(path) for path in files] == fast
