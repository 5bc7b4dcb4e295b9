"""Red-team findings (issue 25) on policy packs: each test reproduces an attack and checks it is refused.

Real files only: keys generated here with `cryptography`, packs written to tmp folders, the CLI run in-process.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from genguard import policies
from genguard.guard.errors import BadInputError, PolicyError
from genguard.guard.policy import PolicyEngine, load_pack
from genguard.guard.policy.pack import PolicyPack
from genguard.guard.policy.schema import PackSpec
from genguard.guard.types import ImageAction, PromptAction, validate_prompt
from genguard.pipeline.cli import main
from tests.test_verify import KEY, Org, check, decode, make_org, release


@pytest.fixture(scope="module")
def inlined() -> dict[str, Any]:
    return load_pack("default").canonical_dict()


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def with_rule_file(data: dict[str, Any], name: str) -> dict[str, Any]:
    data = {**data, "categories": dict(data["categories"])}
    data["categories"]["hate"] = {**data["categories"]["hate"], "rule_files": [name]}
    return data


def genguard(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the command line in-process as the console script does: (exit code, stdout + stderr)."""
    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out + captured.err


def pem_private(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# ------------------------------------------------------------------- 1. key material in error messages


def test_a_rule_file_naming_a_private_key_never_quotes_it(tmp_path: Path, inlined: dict[str, Any]) -> None:
    secrets = {
        "keys/checkpoint.ed25519": pem_private(ed25519.Ed25519PrivateKey.generate()),
        "keys/c2pa-signer.pem": pem_private(ec.generate_private_key(ec.SECP256R1())),
    }
    for name, secret in secrets.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(secret)
        pack = write(tmp_path / "pack.yaml", with_rule_file(inlined, name))
        with pytest.raises(PolicyError) as caught:
            load_pack(pack)
        message = str(caught.value)
        assert name in message and "categories.hate.rule_files" in message
        assert "expected a mapping" in message
        body = b"".join(secret.splitlines()[1:-1]).decode()
        for start in range(0, len(body) - 8, 4):  # not even 8 characters of the key's body
            assert body[start : start + 8] not in message, (name, message)
        assert "PRIVATE KEY" not in message


def test_rule_files_stay_inside_the_pack_folder(tmp_path: Path, inlined: dict[str, Any]) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("root:x:0:0:root:/root:/bin/bash\n")
    folder = tmp_path / "packs"
    for name in ("../secret.txt", str(outside), "../../../../etc/passwd", "/etc/passwd"):
        pack = write(folder / "pack.yaml", with_rule_file(inlined, name))
        with pytest.raises(PolicyError) as caught:
            load_pack(pack)
        message = str(caught.value)
        assert "inside the pack's folder" in message, message
        assert "root:x" not in message
    # a link inside the folder to a file outside is outside too
    (folder / "terms").mkdir()
    (folder / "terms" / "link.yaml").symlink_to(outside)
    with pytest.raises(PolicyError, match="inside the pack's folder"):
        load_pack(write(folder / "pack.yaml", with_rule_file(inlined, "terms/link.yaml")))
    # the operator may allow a folder outside
    good = write(tmp_path / "shared" / "hate.yaml", {"rules": [{"id": "hate.extra", "terms": ["zorblax"]}]})
    pack = write(folder / "pack.yaml", with_rule_file(inlined, str(good)))
    with pytest.raises(PolicyError, match="inside the pack's folder"):
        load_pack(pack)
    loaded = load_pack(pack, rule_roots=[tmp_path / "shared"])
    assert any(rule.id == "hate.extra" for rule in loaded.category("hate").rules)


def test_a_bad_rule_file_names_the_field_without_quoting_content(
    tmp_path: Path, inlined: dict[str, Any]
) -> None:
    write(
        tmp_path / "terms" / "bad.yaml", {"rules": [{"id": "x", "terms": ["a"], "score": "secretvalue123"}]}
    )
    with pytest.raises(PolicyError) as caught:
        load_pack(write(tmp_path / "pack.yaml", with_rule_file(inlined, "terms/bad.yaml")))
    message = str(caught.value)
    assert "rules.0.score" in message and "secretvalue123" not in message and "a str" in message


# ------------------------------------------------------------- 2. no field relaxes the sexual_minors floor


def without_nudenet(data: dict[str, Any]) -> dict[str, Any]:
    """The pack with its own NudeNet entry taken out, so that the test's entry is the one read."""
    checks = [c for c in data["image_checks"]["classifiers"] if c["kind"] != "nudenet"]
    return {**data, "image_checks": {**data["image_checks"], "classifiers": checks}}


def nudenet_relaxing(data: dict[str, Any], **override: Any) -> dict[str, Any]:
    data = {**data, "image_checks": dict(data["image_checks"])}
    entry = {"kind": "nudenet", "model": "bundled", "labels": {"FEMALE_GENITALIA_EXPOSED": "sexual_minors"}}
    data["image_checks"]["classifiers"] = [*data["image_checks"]["classifiers"], {**entry, **override}]
    return data


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"thresholds": {"sexual_minors": 1.0}, "action": {"sexual_minors": "release"}}, "thresholds"),
        ({"action": {"sexual_minors": "release"}}, "action"),
        ({"action": {"sexual_minors": "quarantine"}}, "action"),
        ({"thresholds": {"sexual_minors": 0.51}}, "thresholds"),
    ],
)
def test_classifier_overrides_cannot_relax_the_floor(
    tmp_path: Path, inlined: dict[str, Any], override: dict[str, Any], field: str
) -> None:
    base = without_nudenet(inlined)
    index = len(base["image_checks"]["classifiers"])
    with pytest.raises(PolicyError) as caught:
        load_pack(write(tmp_path / "pack.yaml", nudenet_relaxing(base, **override)))
    assert f"image_checks.classifiers.{index}.{field}.sexual_minors" in str(caught.value)
    assert "no pack can relax it" in str(caught.value)
    # built in memory, skipping the loader: refused all the same
    with pytest.raises(PolicyError, match="no pack can relax it"):
        PolicyPack.from_spec(PackSpec.model_validate(nudenet_relaxing(inlined, **override)))


def test_a_stricter_override_is_allowed(tmp_path: Path, inlined: dict[str, Any]) -> None:
    data = nudenet_relaxing(
        without_nudenet(inlined), thresholds={"sexual_minors": 0.2}, action={"sexual_minors": "block"}
    )
    pack = load_pack(write(tmp_path / "pack.yaml", data))
    assert pack.classifier_threshold("nudenet", "sexual_minors") == 0.2
    assert pack.classifier_action("nudenet", "sexual_minors") is ImageAction.BLOCK


def test_other_fields_cannot_relax_the_floor(tmp_path: Path, inlined: dict[str, Any]) -> None:
    # a second entry of the same kind is checked too (the first one is the one the pipeline reads today)
    base = without_nudenet(inlined)
    second = len(base["image_checks"]["classifiers"]) + 1
    data = nudenet_relaxing(nudenet_relaxing(base), action={"sexual_minors": "release"})
    with pytest.raises(PolicyError, match=rf"image_checks\.classifiers\.{second}\.action\.sexual_minors"):
        load_pack(write(tmp_path / "pack.yaml", data))
    categories = dict(inlined["categories"])
    categories["sexual_minors"] = {**categories["sexual_minors"], "enabled": False}
    with pytest.raises(PolicyError, match=r"categories\.sexual_minors\.enabled"):
        PolicyPack.from_spec(PackSpec.model_validate({**inlined, "categories": categories}))


# ---------------------------------------------------------------------- 6. YAML bombs, nesting, duplicates


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_yaml_aliases_are_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    started = time.perf_counter()
    with pytest.raises(PolicyError, match=r"bomb\.yaml: expected YAML without anchors or aliases"):
        load_pack(path)
    assert time.perf_counter() - started < 5


def test_deep_nesting_and_huge_files_are_refused(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(PolicyError, match=r"deep\.yaml: expected YAML nested at most 32 levels deep"):
        load_pack(deep)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(PolicyError, match=r"big\.yaml: expected a file of at most 1048576 bytes"):
        load_pack(big)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    text = (policies.PACK_DIR / "default.yaml").read_text()
    path.write_text(text.replace("categories:\n", "categories:\n  sexual_minors: {}\n", 1))
    shutil.copytree(policies.PACK_DIR / "terms", tmp_path / "terms")
    with pytest.raises(
        PolicyError,
        match=r"dup\.yaml: expected each key once in a mapping; found 'sexual_minors' again at line \d+",
    ):
        load_pack(path)


# ---------------------------------------------------------------- 8. one prompt validator for every path


def test_one_prompt_validator() -> None:
    assert validate_prompt("a lighthouse") == "a lighthouse"
    with pytest.raises(BadInputError, match="prompt: expected text without NUL characters, found one at 3"):
        validate_prompt("abc\x00def")
    with pytest.raises(BadInputError, match="negative_prompt: expected non-empty text"):
        validate_prompt("  ", "negative_prompt")
    assert validate_prompt("", "negative_prompt", allow_empty=True) == ""


def test_policy_check_refuses_nul_like_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a lighthouse\nchild\x00 porn\na quiet harbour\n", encoding="utf-8")
    code, output = genguard(["policy", "check", "--file", str(prompts)], capsys)
    assert code == 2, output
    assert "line 2: prompt: expected text without NUL characters, found one at 5" in output
    assert "a lighthouse" in output and "a quiet harbour" in output  # the others are checked
    code, output = genguard(["policy", "check", "bad\x00"], capsys)
    assert code == 2 and "found one at 3" in output


# ---------------------------------------------------------------------- K. a copied pack works; policy init


def test_a_copied_pack_finds_the_shipped_terms(tmp_path: Path) -> None:
    copy = tmp_path / "mine.yaml"
    copy.write_text(
        (policies.PACK_DIR / "default.yaml").read_text().replace("name: default", "name: mine", 1)
    )
    pack = load_pack(copy)
    assert pack.name == "mine"
    assert pack.category("sexual_minors").rules == load_pack("default").category("sexual_minors").rules
    assert PolicyEngine(pack).check("child porn").action is PromptAction.BLOCK
    # the copy's own terms win over the shipped ones
    write(tmp_path / "terms" / "hate.yaml", {"rules": [{"id": "hate.mine", "terms": ["zorblax"]}]})
    ids = [rule.id for rule in load_pack(copy).category("hate").rules]
    assert ids[0] == "hate.mine" and "hate.slurs" not in ids  # the copy's hate.yaml replaced the shipped one
    assert "hate.de.slurs" in ids  # a file the copy's folder lacks still comes from the package
    # a term file neither the copy's folder nor the package holds: the error says what to do
    copy.write_text(copy.read_text().replace("terms/violence.yaml", "terms/violenz.yaml", 1))
    with pytest.raises(
        PolicyError, match=r"no file 'terms/violenz\.yaml' in .* nor among the shipped term files"
    ):
        load_pack(copy)


def test_policy_init_writes_an_editable_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = genguard(["policy", "init", "acme", "--dir", str(tmp_path)], capsys)
    assert code == 0, output
    written = tmp_path / "acme.yaml"
    assert written.is_file() and (tmp_path / "terms" / "sexual_minors.yaml").is_file()
    assert "# genguard default policy pack" in written.read_text()  # the comments are kept
    pack = load_pack(written)
    assert pack.name == "acme" and pack.spec.categories == load_pack("default").spec.categories
    code, output = genguard(["policy", "init", "tight", "--from", "strict", "--dir", str(tmp_path)], capsys)
    assert code == 0, output
    assert load_pack(tmp_path / "tight.yaml").prompt_storage == load_pack("strict").prompt_storage
    code, output = genguard(["policy", "init", "acme", "--dir", str(tmp_path)], capsys)
    assert code == 2 and "already exists" in output
    code, output = genguard(["policy", "init", "../evil", "--dir", str(tmp_path)], capsys)
    assert code == 2 and "NAME: expected" in output


# ---------------------------------------------------------------- verify: false attribution, crafted files


@pytest.fixture(scope="module")
def ours() -> Org:
    return make_org("genguard redteam org")


@pytest.fixture(scope="module")
def photos() -> dict[str, Any]:
    from tests._photos import photographs

    return photographs(512, ("astronaut", "coffee", "chelsea", "rocket"))


@pytest.fixture
def store(sqlite_url: str) -> Any:
    from genguard.audit.store import AuditStore

    return AuditStore.open(sqlite_url)


def forged(org: Org, pixels: Any, generation_id: str, index: int = 0, mark_id: int | None = None) -> bytes:
    from genguard.guard.imageio import encode_image
    from genguard.guard.provenance import ManifestFacts
    from tests.test_verify import POLICY, VERDICT

    facts = ManifestFacts(generation_id, index, POLICY, VERDICT, "m", "p", mark_id, None)
    return org.credentials.sign(encode_image(pixels), "image/png", facts).data


def test_a_self_signed_claim_on_a_foreign_picture_is_a_claim_not_a_link(
    store: Any, ours: Org, photos: dict[str, Any]
) -> None:
    from genguard.audit.verify import Verdict

    release(store, ours, photos["astronaut"], "gen-ours", mark_id=0x51)
    report = check(forged(make_org("forger"), photos["coffee"], "gen-ours"), store, ours)
    assert report.verdict is Verdict.FOREIGN_SIGNED, report.summary
    assert report.record is None and "claims gen-ours/0" in report.summary
    assert any("a claim, not a link" in note for note in report.notes), report.notes
    # the same claim on a near copy of our picture: the phash still finds it, as a near copy only
    near = check(
        forged(
            make_org("forger"),
            decode(release(store, ours, photos["rocket"], "gen-r", 0x52))[::1, ::1] // 2 * 2,
            "gen-r",
        ),
        store,
        ours,
    )
    assert near.verdict in (Verdict.OURS_NEAR_COPY, Verdict.OURS_ALTERED), near.summary


def test_a_released_file_replaced_by_another_of_ours_says_the_name_differs(
    store: Any, ours: Org, photos: dict[str, Any]
) -> None:
    from genguard.audit.verify import Verdict

    release(store, ours, photos["astronaut"], "gen-p", mark_id=0x61)
    other = release(store, ours, photos["coffee"], "gen-q", mark_id=0x62)
    report = check(other, store, ours, name="/downloads/gen-p.png")
    assert report.verdict is Verdict.VERIFIED_ORIGINAL and report.record is not None
    assert report.record.image.generation_id == "gen-q"
    assert any("named 'gen-p.png'" in note and "'gen-q.png'" in note for note in report.notes), report.notes
    same = check(other, store, ours, name="/elsewhere/gen-q.png")
    assert not any("named" in note for note in same.notes), same.notes


def crafted_manifest(org: Org, pixels: Any, monkeypatch: pytest.MonkeyPatch, **governance: Any) -> bytes:
    """A manifest whose soft binding and governance fields are what an attacker writes."""
    import json

    from genguard.guard.provenance import content_credentials

    original = content_credentials._manifest_definition

    def definition(facts: Any) -> str:
        data = json.loads(original(facts))
        for assertion in data["assertions"]:
            if assertion["label"] == content_credentials.SOFT_BINDING_LABEL:
                assertion["data"]["blocks"][0]["value"] = "\u00b2"  # passes str.isdigit(), int() raises
            if assertion["label"] == content_credentials.GOVERNANCE_LABEL:
                assertion["data"].update(governance)
        return json.dumps(data)

    with monkeypatch.context() as patch:
        patch.setattr(content_credentials, "_manifest_definition", definition)
        return forged(org, pixels, "gen-crafted", mark_id=7)


def test_a_crafted_manifest_never_stops_the_others(
    postgres_url: str, ours: Org, photos: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genguard.audit.store import AuditStore
    from genguard.audit.verify import UnreadableImage, Verdict, VerificationReport, verify_images

    crafted = {
        "superscript.png": {"image_index": -1},
        "nul-claim.png": {"generation_id": "gen\x00x", "image_index": 2**70},
        "long-claim.png": {"generation_id": "g" * 5000, "image_index": -1},
    }
    with AuditStore.open(postgres_url) as store:
        good = tmp_path / "z-good.png"
        good.write_bytes(release(store, ours, photos["astronaut"], "gen-good", mark_id=0x71))
        for name, governance in crafted.items():
            (tmp_path / name).write_bytes(
                crafted_manifest(make_org("crafty"), photos["coffee"], monkeypatch, **governance)
            )
        paths = sorted(tmp_path.glob("*.png"))
        outcomes = {
            Path(o.name).name: o
            for o in verify_images(paths, store=store, trust_anchors_pem=ours.anchors, key=KEY)
        }
    assert set(outcomes) == {*crafted, "z-good.png"}
    assert isinstance(outcomes["z-good.png"], VerificationReport)
    assert outcomes["z-good.png"].verdict is Verdict.VERIFIED_ORIGINAL
    for name in crafted:
        report = outcomes[name]
        assert isinstance(report, VerificationReport), (name, report)
        assert report.manifest.mark_id is None and report.verdict is Verdict.FOREIGN_SIGNED, (
            name,
            report.summary,
        )
    nul_claim, long_claim, superscript = (
        outcomes[n] for n in ("nul-claim.png", "long-claim.png", "superscript.png")
    )
    assert isinstance(nul_claim, VerificationReport) and not isinstance(long_claim, UnreadableImage)
    assert any("generation id" in note and "ignored" in note for note in nul_claim.notes)
    assert isinstance(superscript, VerificationReport) and superscript.manifest.image_index is None
    assert any("image index is out of range" in note for note in superscript.notes)
