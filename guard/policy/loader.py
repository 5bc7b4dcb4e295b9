"""Loading packs by name (shipped in `policies/`) or by path, with errors that name the field.

A category may say `rule_files: [terms/sexual.yaml, ...]`: YAML files (relative to the pack's
folder) holding `rules` and `cooccurrence` lists, inlined into the category (files first) before
validation, so that the canonical form and the digest cover the terms themselves, not file names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

import policies
from guard.errors import PolicyError
from guard.policy import floor
from guard.policy.normalize import term_key
from guard.policy.pack import PolicyPack
from guard.policy.schema import REQUIRED_CATEGORIES, CooccurrenceRule, PackSpec, RuleFileSpec, TermRule
from guard.types import ImageAction, PromptAction

_PACK_SUFFIXES = (".yaml", ".yml")


def list_shipped_packs() -> list[str]:
    """Names of the packs shipped in `policies/`, sorted."""
    return sorted(path.stem for path in policies.PACK_DIR.glob("*.yaml"))


def load_pack(name_or_path: str | Path) -> PolicyPack:
    """Load a shipped pack by name ("default", "strict") or any pack file by path."""
    path = _resolve(name_or_path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}")
    raw = _inline_rule_files(raw, path)
    try:
        spec = PackSpec.model_validate(raw)
    except ValidationError as error:
        raise PolicyError(_describe(path, error)) from None
    check_pack(spec, str(path))
    return PolicyPack.from_spec(spec, source=path)


def _resolve(name_or_path: str | Path) -> Path:
    if isinstance(name_or_path, Path) or "/" in name_or_path or name_or_path.endswith(_PACK_SUFFIXES):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise PolicyError(f"policy pack file {str(path)!r}: expected an existing file, found none")
        return path
    shipped = list_shipped_packs()
    if name_or_path not in shipped:
        raise PolicyError(
            f"policy pack name: expected one of {', '.join(shipped)} (or a path to a .yaml file); "
            f"found {name_or_path!r}"
        )
    return policies.PACK_DIR / f"{name_or_path}.yaml"


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError(f"{path}: expected a readable UTF-8 YAML file, found {error}") from None
    try:
        # libyaml's safe loader when PyYAML has it: ten times faster (a cold `policy check` reads 10 files)
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as error:
        where = ""
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(error, "problem", None) or str(error)
        raise PolicyError(f"{path}: expected valid YAML, found a syntax error{where}: {problem}") from None


def _inline_rule_files(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    categories = raw.get("categories")
    if not isinstance(categories, dict):
        return raw  # validation reports it with the field path
    inlined: dict[str, Any] = {}
    for category_id, category in categories.items():
        if not isinstance(category, dict) or "rule_files" not in category:
            inlined[category_id] = category
            continue
        category = dict(category)
        field = f"categories.{category_id}.rule_files"
        files = category.pop("rule_files")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise PolicyError(f"{path}: field {field}: expected a list of file paths, found {files!r}")
        gathered: dict[str, list[Any]] = {"rules": [], "cooccurrence": []}
        for name in files:
            for key, rules in _read_rule_file(path.parent / name, field).items():
                gathered[key].extend(rules)
        for key, rules in gathered.items():
            own = category.get(key, [])
            if not isinstance(own, list):
                raise PolicyError(
                    f"{path}: field categories.{category_id}.{key}: expected a list, found {own!r}"
                )
            category[key] = rules + own
        inlined[category_id] = category
    return {**raw, "categories": inlined}


def _read_rule_file(path: Path, field: str) -> dict[str, list[Any]]:
    if not path.is_file():
        raise PolicyError(f"field {field}: expected an existing rule file, found no file {str(path)!r}")
    try:
        spec = RuleFileSpec.model_validate(_read_yaml(path))
    except ValidationError as error:
        raise PolicyError(_describe(path, error)) from None
    data: dict[str, list[Any]] = spec.model_dump(mode="json")
    return data


def _describe(path: Path, error: ValidationError) -> str:
    """One line per problem: file, field path, what was expected, what was found."""
    lines = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        found = item.get("input")
        if item["type"] == "extra_forbidden":
            expected = "no such field (unknown key; check the spelling)"
        elif item["type"] == "missing":
            expected = "a value (required field)"
            found = "nothing"
        else:
            message = str(item["msg"])
            expected = message.removeprefix("Input should be ")
        found_text = found if isinstance(found, str) and found == "nothing" else repr(found)
        if len(found_text) > 120:
            found_text = found_text[:117] + "..."
        lines.append(f"{path}: field {field}: expected {expected}; found {found_text}")
    return "\n".join(lines)


def check_pack(spec: PackSpec, source: str) -> None:
    """Checks beyond the schema: required categories, unique rule ids, usable terms, the floor."""
    missing = [c for c in REQUIRED_CATEGORIES if c not in spec.categories]
    if missing:
        raise PolicyError(
            f"{source}: field categories: expected every required category "
            f"({', '.join(REQUIRED_CATEGORIES)}); found none for {', '.join(missing)}"
        )
    seen: dict[str, str] = {}
    for category_id, category in spec.categories.items():
        named: list[tuple[str, Sequence[TermRule | CooccurrenceRule]]] = [
            ("rules", category.rules),
            ("cooccurrence", category.cooccurrence),
        ]
        for kind, rules in named:
            for index, rule in enumerate(rules):
                field = f"categories.{category_id}.{kind}.{index}.id"
                if rule.id in seen:
                    raise PolicyError(
                        f"{source}: field {field}: expected a rule id unique in the pack; "
                        f"found {rule.id!r}, already used at {seen[rule.id]}"
                    )
                seen[rule.id] = field
        for index, term_rule in enumerate(category.rules):
            for term in term_rule.terms:
                if term_key(term).strip() == "":
                    raise PolicyError(
                        f"{source}: field categories.{category_id}.rules.{index}.terms: expected terms "
                        f"with at least one letter or digit; found {term!r}"
                    )
    _check_floor(spec, source)


def _check_floor(spec: PackSpec, source: str) -> None:
    prefix = f"categories.{floor.CATEGORY}"
    category = spec.categories[floor.CATEGORY]

    def refuse(field: str, expected: str, found: object) -> PolicyError:
        return PolicyError(
            f"{source}: field {prefix}.{field}: expected {expected} (built-in floor for sexual "
            f"content involving minors; no pack can relax it); found {found!r}"
        )

    if not category.enabled:
        raise refuse("enabled", "true", category.enabled)
    if category.action != PromptAction.BLOCK:
        raise refuse("action", "block", str(category.action))
    if ImageAction(category.output_action) != ImageAction.BLOCK:
        raise refuse("output_action", "block", str(category.output_action))
    for layer in ("lexical", "semantic", "model", "image"):
        value = getattr(category.thresholds, layer)
        if value > floor.THRESHOLD_CEILING:
            raise refuse(f"thresholds.{layer}", f"at most {floor.THRESHOLD_CEILING}", value)
    lexical = category.thresholds.lexical
    listed = {term_key(t) for rule in category.rules if rule.score >= lexical for t in rule.terms}
    absent = [t for t in floor.EXPLICIT_TERMS if term_key(t) not in listed]
    if absent:
        raise refuse(
            "rules", f"terms scored at least {lexical} including {', '.join(absent)}", "them missing"
        )
    minors = {term_key(t) for t in floor.MINOR_TERMS}
    sexual = {term_key(t) for t in floor.SEXUAL_TERMS}
    for rule in category.cooccurrence:
        groups = [{term_key(t) for t in terms} for terms in rule.all_of.values()]
        if rule.score >= lexical and any(minors <= g for g in groups) and any(sexual <= g for g in groups):
            return
    raise refuse(
        "cooccurrence",
        f"a rule scored at least {lexical} with a group holding all of ({', '.join(floor.MINOR_TERMS)}) "
        f"and a group holding all of ({', '.join(floor.SEXUAL_TERMS)})",
        [rule.id for rule in category.cooccurrence],
    )
