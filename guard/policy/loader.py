"""Loading packs by name (shipped in `policies/`) or by path, with errors that name the field.

A category may say `rule_files: [terms/sexual.yaml, ...]`: YAML files holding `rules` and
`cooccurrence` lists, inlined into the category (files first) before validation, so that the
canonical form and the digest cover the terms themselves, not file names.

Rule files resolve inside the pack's folder; a name the folder does not hold falls back to the
shipped term files (`policies/terms`), so that a copied pack keeps working. A name that leads
outside those folders (`..`, an absolute path, a link) is refused unless the operator allows its
folder (`rule_roots=`, or `GENGUARD_POLICY_RULE_ROOTS`, folders separated by the OS path separator).

Packs and rule files are untrusted input: read with a YAML loader that refuses anchors and aliases
(billion laughs), nesting deeper than `MAX_DEPTH`, files larger than `MAX_BYTES` and duplicate keys;
errors about a file's content name the field and the kind of value found, never the value itself
for a rule file (it could be a key the pack was pointed at), and only short scalars for a pack.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from genguard import policies
from genguard.guard.errors import PolicyError
from genguard.guard.policy.normalize import term_key
from genguard.guard.policy.pack import PolicyPack
from genguard.guard.policy.scanners import (
    MIN_PREFIX_LETTERS,
    PREFIX_MARK,
    SUBSTRING_LANGUAGES,
    is_prefix_term,
)
from genguard.guard.policy.schema import (
    REQUIRED_CATEGORIES,
    CooccurrenceRule,
    PackSpec,
    RuleFileSpec,
    TermRule,
)

_PACK_SUFFIXES = (".yaml", ".yml")
MAX_BYTES = 1024 * 1024  # a shipped pack is ~8 KB, its largest term file ~4 KB
MAX_DEPTH = 32  # the shipped packs nest 7 levels deep
RULE_ROOTS_ENV = "GENGUARD_POLICY_RULE_ROOTS"
SHIPPED_TERMS = policies.PACK_DIR / "terms"


def list_shipped_packs() -> list[str]:
    """Names of the packs shipped in `policies/`, sorted."""
    return sorted(path.stem for path in policies.PACK_DIR.glob("*.yaml"))


def load_pack(name_or_path: str | Path, *, rule_roots: Sequence[str | Path] = ()) -> PolicyPack:
    """Load a shipped pack by name ("default", "strict") or any pack file by path.

    `rule_roots`: folders outside the pack's own from which its `rule_files` may also be read (added to
    those in $GENGUARD_POLICY_RULE_ROOTS)."""
    path = pack_file(name_or_path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: expected a mapping at the top level, found {_kind(raw)}")
    raw = _inline_rule_files(raw, path, _rule_roots(rule_roots))
    try:
        spec = PackSpec.model_validate(raw)
    except ValidationError as error:
        raise PolicyError(_describe(path, error)) from None
    check_pack(spec, str(path))
    return PolicyPack.from_spec(spec, source=path)


def pack_file(name_or_path: str | Path) -> Path:
    """The file of a shipped pack's name, or the given path; PolicyError when there is none."""
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


def _rule_roots(extra: Sequence[str | Path]) -> tuple[Path, ...]:
    from_env = [part for part in os.environ.get(RULE_ROOTS_ENV, "").split(os.pathsep) if part.strip()]
    return tuple(Path(root).expanduser().resolve() for root in (*extra, *from_env))


# -- reading YAML safely ---------------------------------------------------------------------------


class _Refused(Exception):
    """What the safe loader refuses; `_read_yaml` prefixes the file."""


class _UniqueKeys:
    """Refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeConstructor reports it
                break
            if duplicate:
                found = (
                    repr(key) if isinstance(key, (str, int, float, bool)) and len(str(key)) <= 40 else "a key"
                )
                raise _Refused(
                    f"expected each key once in a mapping; found {found} again at {_where(key_node)}"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc,no-any-return]


class _SafeLoader(_UniqueKeys, yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints
    """PyYAML's SafeLoader without anchors and aliases, bounded in depth, refusing duplicate keys
    (pure Python: used where PyYAML was built without libyaml)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        _refuse_alias(event)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(
                    f"expected YAML nested at most {MAX_DEPTH} levels deep; found more at {_where(event)}"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_CSafeLoader: Any = getattr(yaml, "CSafeLoader", None)


def _refuse_alias(event: Any) -> None:
    if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
        what = "an alias" if isinstance(event, yaml.AliasEvent) else "an anchor"
        raise _Refused(f"expected YAML without anchors or aliases; found {what} at {_where(event)}")


def _load_checked(text: str) -> Any:
    """The YAML document in `text`, with the same refusals as `_SafeLoader`. With libyaml, its events
    are checked first (anchors, aliases, depth: the C composer itself has no depth bound), then the C
    composer builds the nodes and the Python constructor refuses duplicate keys: about 4x faster on
    the shipped packs, which matters for a one-prompt `policy check`."""
    if _CSafeLoader is None:
        return yaml.load(text, Loader=_SafeLoader)  # a SafeLoader subclass
    try:
        _check_events(text)
    except yaml.YAMLError as error:
        if "nesting depth" in str(error):  # libyaml's own bound (1000) reads ahead of the events
            raise _Refused(f"expected YAML nested at most {MAX_DEPTH} levels deep; found more") from None
        raise
    return yaml.load(text, Loader=_FastSafeLoader)


def _check_events(text: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=_CSafeLoader):
        _refuse_alias(event)
        if isinstance(event, yaml.NodeEvent) and depth + 1 > MAX_DEPTH:  # counted as compose_node does
            raise _Refused(
                f"expected YAML nested at most {MAX_DEPTH} levels deep; found more at {_where(event)}"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


if _CSafeLoader is not None:

    class _FastSafeLoader(_UniqueKeys, _CSafeLoader):  # type: ignore[misc]
        """libyaml's parser and composer with PyYAML's safe constructor, refusing duplicate keys."""


def _where(item: Any) -> str:
    mark = getattr(item, "start_mark", None)
    return "an unknown place" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}"


def _read_yaml(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise PolicyError(f"{path}: expected a readable YAML file, found {error.strerror}") from None
    if len(data) > MAX_BYTES:
        raise PolicyError(f"{path}: expected a file of at most {MAX_BYTES} bytes, found a larger one")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PolicyError(
            f"{path}: expected UTF-8 text, found a byte that is not at offset {error.start}"
        ) from None
    try:
        return _load_checked(text)
    except _Refused as error:
        raise PolicyError(f"{path}: {error}") from None
    except RecursionError:
        raise PolicyError(
            f"{path}: expected YAML nested at most {MAX_DEPTH} levels deep; found more"
        ) from None
    except yaml.YAMLError as error:
        where = ""
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(error, "problem", None) or type(error).__name__
        problem = re.sub(r"(['\"]).*?\1", "...", str(problem))  # the text quoted from the file is left out
        raise PolicyError(f"{path}: expected valid YAML, found a syntax error{where}: {problem}") from None


# -- rule files ------------------------------------------------------------------------------------


def _inline_rule_files(raw: dict[str, Any], path: Path, roots: tuple[Path, ...]) -> dict[str, Any]:
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
            raise PolicyError(f"{path}: field {field}: expected a list of file paths, found {_found(files)}")
        gathered: dict[str, list[Any]] = {"rules": [], "cooccurrence": []}
        for index, name in enumerate(files):
            rule_file = _rule_file_path(path, name, f"{field}.{index}", roots)
            for key, rules in _read_rule_file(rule_file, f"{field}.{index}").items():
                gathered[key].extend(rules)
        for key, rules in gathered.items():
            own = category.get(key, [])
            if not isinstance(own, list):
                raise PolicyError(
                    f"{path}: field categories.{category_id}.{key}: expected a list, found {_kind(own)}"
                )
            category[key] = rules + own
        inlined[category_id] = category
    return {**raw, "categories": inlined}


def _rule_file_path(pack: Path, name: str, field: str, roots: tuple[Path, ...]) -> Path:
    """Where rule file `name` of `pack` is: inside the pack's folder (or an allowed root), else among
    the shipped term files; never elsewhere."""
    folder = pack.parent.resolve()
    candidate = (folder / Path(name).expanduser()).resolve()  # an absolute name replaces the folder
    if not any(candidate.is_relative_to(root) for root in (folder, *roots)):
        raise PolicyError(
            f"{pack}: field {field}: expected a rule file inside the pack's folder {str(folder)!r} "
            f"(or a folder allowed by {RULE_ROOTS_ENV}); found {name!r}, which leads outside it"
        )
    if candidate.is_file():
        return candidate
    shipped_root = SHIPPED_TERMS.resolve()
    shipped = (policies.PACK_DIR / name).resolve()
    if not Path(name).is_absolute() and shipped.is_relative_to(shipped_root) and shipped.is_file():
        return shipped
    raise PolicyError(
        f"{pack}: field {field}: expected an existing rule file; found no file {name!r} in {str(folder)!r} "
        f"nor among the shipped term files ({str(shipped_root)!r}); copy it next to the pack, or start "
        "from `genguard policy init NAME`, which copies a pack with its term files"
    )


def _read_rule_file(path: Path, field: str) -> dict[str, list[Any]]:
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise PolicyError(
            f"{path} (named by field {field}): expected a mapping with `rules` and `cooccurrence` lists "
            f"at the top level, found {_kind(raw)}"
        )
    try:
        spec = RuleFileSpec.model_validate(raw)
    except ValidationError as error:
        raise PolicyError(_describe(path, error, quote=False)) from None
    data: dict[str, list[Any]] = spec.model_dump(mode="json")
    return data


def _kind(value: Any) -> str:
    """What a value is, without its content: "a str of 120 characters", "a list of 3 items"."""
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"a str of {len(value)} characters"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} keys"
    return f"a {type(value).__name__}"


def _found(value: Any, quote: bool = True) -> str:
    """The value found, quoted only when `quote` and it is a short scalar; else its kind."""
    if quote and (value is None or isinstance(value, (bool, int, float)) or value in ([], {})):
        return repr(value)
    if quote and isinstance(value, str) and len(value) <= 40 and "\n" not in value:
        return repr(value)
    return _kind(value)


def _describe(path: Path, error: ValidationError, quote: bool = True) -> str:
    """One line per problem: file, field path, what was expected, what was found (`_found`)."""
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
        found_text = found if isinstance(found, str) and found == "nothing" else _found(found, quote)
        lines.append(f"{path}: field {field}: expected {expected}; found {found_text}")
    return "\n".join(lines)


def check_pack(spec: PackSpec, source: str) -> None:
    """Checks beyond the schema: required categories, unique rule ids, usable terms. (The sexual_minors
    floor is checked by `PolicyPack.from_spec` on every pack.)"""
    missing = [c for c in REQUIRED_CATEGORIES if c not in spec.categories]
    if missing:
        raise PolicyError(
            f"{source}: field categories: expected every required category "
            f"({', '.join(REQUIRED_CATEGORIES)}); found none for {', '.join(missing)}"
        )
    languages = [rule.language for category in spec.categories.values() for rule in category.rules] + [
        rule.language for category in spec.categories.values() for rule in category.cooccurrence
    ]
    covered = {language for language in languages if language is not None}
    listed = spec.semantic.lexical_languages if spec.semantic is not None else None
    for index, code in enumerate(listed or []):
        if code not in covered:
            raise PolicyError(
                f"{source}: field semantic.lexical_languages.{index}: expected a language the pack's term "
                f"rules cover ({', '.join(sorted(covered)) or 'none'}); found {code!r}"
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
        term_lists = [
            (f"rules.{index}.terms", rule.language, rule.terms) for index, rule in enumerate(category.rules)
        ] + [
            (f"cooccurrence.{index}.all_of.{group}", rule.language, terms)
            for index, rule in enumerate(category.cooccurrence)
            for group, terms in rule.all_of.items()
        ]
        for where, language, terms in term_lists:
            for term in terms:
                _check_term_length(term, language, f"{source}: field categories.{category_id}.{where}")


def _check_term_length(term: str, language: str | None, field: str) -> None:
    """A prefix term ("nackt*") or a term matched anywhere (Chinese, Japanese) must be long enough
    not to match ordinary words by chance."""
    words = term_key(term.rstrip().rstrip(PREFIX_MARK)).split()
    if is_prefix_term(term) and (not words or len(words[-1]) < MIN_PREFIX_LETTERS):
        raise PolicyError(
            f"{field}: expected a prefix term (ending in {PREFIX_MARK!r}) whose last word has at least "
            f"{MIN_PREFIX_LETTERS} letters before it; found {term!r}"
        )
    if language in SUBSTRING_LANGUAGES and (len("".join(words)) < 2 or term.isascii()):
        raise PolicyError(
            f"{field}: expected terms of at least 2 characters, not all ASCII, for language {language!r} "
            f"(matched anywhere in the text, so a Latin term would match inside English words); found {term!r}"
        )
