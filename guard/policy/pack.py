"""A loaded, validated policy pack and the accessors the engine and the pipeline use."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from genguard.guard.errors import PolicyError
from genguard.guard.policy.floor import check_floor
from genguard.guard.policy.schema import CategorySpec, ClassifierSpec, EditsSpec, PackSpec
from genguard.guard.types import ImageAction, PolicyRef, PromptStorage

# Optional settings added after packs were first digested (paths into the canonical data): left out
# when None, so that every pack written before them keeps its digest.
_OMITTED_WHEN_ABSENT: tuple[tuple[str, ...], ...] = (
    ("semantic",),
    ("uncertain", "review_nonword_share"),
    ("semantic", "languages"),
    ("semantic", "lexical_languages"),
    ("limits",),
    ("edits",),
)


def canonical_data(spec: PackSpec) -> dict[str, Any]:
    """The validated model as plain data; the optional settings of `_OMITTED_WHEN_ABSENT` are left out
    when absent, so that adding such a setting to the schema does not change the digest of packs that
    omit it."""
    data: dict[str, Any] = spec.model_dump(mode="json")
    for *parents, name in _OMITTED_WHEN_ABSENT:
        section: dict[str, Any] | None = data
        for parent in parents:
            section = section.get(parent) if section is not None else None
        if section is not None and section.get(name) is None:
            section.pop(name, None)
    for category in data["categories"].values():
        for rule in [*category["rules"], *category["cooccurrence"]]:
            if rule.get("language") is None:
                rule.pop("language", None)  # English, as every rule was before the setting existed
    return data


def canonical_json(spec: PackSpec) -> bytes:
    """Canonical form: JSON of `canonical_data`, sorted keys, no whitespace, UTF-8."""
    return json.dumps(canonical_data(spec), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def pack_digest(spec: PackSpec) -> str:
    """SHA-256 (hex) of the canonical form."""
    return hashlib.sha256(canonical_json(spec)).hexdigest()


@dataclass(frozen=True)
class PolicyPack:
    """A validated pack. `source` is the file it came from (None when built in memory)."""

    spec: PackSpec
    digest: str
    source: Path | None = None

    @classmethod
    def from_spec(cls, spec: PackSpec, source: Path | None = None) -> PolicyPack:
        """Check what the schema cannot (categories named by classifiers, the sexual_minors floor) and
        digest. Every pack passes here, loaded from a file or built in memory."""
        where = str(source) if source else f"pack {spec.name!r}"
        _check_classifier_categories(spec, where)
        check_floor(spec, where)  # on the fully resolved pack, however it was made
        return cls(spec=spec, digest=pack_digest(spec), source=source)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def ref(self) -> PolicyRef:
        return PolicyRef(name=self.spec.name, version=self.spec.version, digest=self.digest)

    @property
    def prompt_storage(self) -> PromptStorage:
        return self.spec.audit.prompt_storage

    @property
    def edits(self) -> EditsSpec:
        """The pack's `edits:` section, or the schema's defaults when it has none."""
        return self.spec.edits if self.spec.edits is not None else EditsSpec()

    @property
    def category_ids(self) -> tuple[str, ...]:
        return tuple(self.spec.categories)

    def category(self, category_id: str) -> CategorySpec:
        try:
            return self.spec.categories[category_id]
        except KeyError:
            known = ", ".join(sorted(self.spec.categories))
            raise PolicyError(
                f"pack {self.name!r}: category: expected one of {known}; found {category_id!r}"
            ) from None

    def require_category(self, category_id: str, where: str) -> None:
        """Raise a PolicyError naming `where` unless this pack defines `category_id`."""
        if category_id not in self.spec.categories:
            raise PolicyError(
                f"{where}: expected a category of pack {self.name!r} "
                f"({', '.join(sorted(self.spec.categories))}); found {category_id!r}"
            )

    def prompt_threshold(self, category_id: str, layer: str) -> float:
        """The score a prompt layer's hit must reach. Layers without their own threshold
        (co-occurrence, custom term scanners) use the lexical one."""
        thresholds = self.category(category_id).thresholds
        if layer in ("semantic", "model"):
            return float(getattr(thresholds, layer))
        return thresholds.lexical

    def prompt_uncertain_floor(self, category_id: str, layer: str) -> float:
        """The lowest score of a prompt layer's hit that still counts: from here up to the threshold
        the category is uncertain (heightened); below it the hit is no evidence."""
        return self.prompt_threshold(category_id, layer) * self.spec.uncertain.lower_factor

    def image_threshold(self, category_id: str, heightened: bool = False) -> float:
        """The image classifier score at or above which `output_action` applies."""
        threshold = self.category(category_id).thresholds.image
        if heightened:
            threshold *= self.spec.uncertain.image_threshold_factor
        return threshold

    def output_action(self, category_id: str) -> ImageAction:
        return ImageAction(self.category(category_id).output_action)

    def classifier_spec(self, kind: str) -> ClassifierSpec | None:
        """The first `image_checks.classifiers` entry of this kind, None when the pack names none."""
        for spec in self.spec.image_checks.classifiers:
            if spec.kind == kind:
                return spec
        return None

    def classifier_threshold(self, kind: str, category_id: str, heightened: bool = False) -> float:
        """The image threshold for one classifier's score: its own override, else the category's."""
        spec = self.classifier_spec(kind)
        if spec is None or category_id not in spec.thresholds:
            return self.image_threshold(category_id, heightened)
        self.category(category_id)  # an unknown category is an error here too
        threshold = spec.thresholds[category_id]
        if heightened:
            threshold *= self.spec.uncertain.image_threshold_factor
        return threshold

    def classifier_action(self, kind: str, category_id: str) -> ImageAction:
        """The action when one classifier's score crosses: its own override, else the category's."""
        spec = self.classifier_spec(kind)
        if spec is None or category_id not in spec.action:
            return self.output_action(category_id)
        self.category(category_id)
        return ImageAction(spec.action[category_id])

    def canonical_dict(self) -> dict[str, Any]:
        """The validated pack as plain data (what the digest covers), for `policy show`."""
        return canonical_data(self.spec)

    def canonical_json(self) -> bytes:
        return canonical_json(self.spec)

    def to_yaml(self) -> str:
        """The canonical form as YAML (term files already inlined), keys in schema order."""
        text: str = yaml.safe_dump(self.canonical_dict(), sort_keys=False, allow_unicode=True, width=110)
        return text


def _check_classifier_categories(spec: PackSpec, source: str) -> None:
    """Per-classifier overrides, label maps (image and prompt models) and semantic exemplars may only
    name categories the pack defines."""
    named: list[tuple[str, list[str]]] = []
    for index, classifier in enumerate(spec.image_checks.classifiers):
        field = f"image_checks.classifiers.{index}"
        named += [
            (f"{field}.thresholds", list(classifier.thresholds)),
            (f"{field}.action", list(classifier.action)),
            (f"{field}.labels", list(classifier.labels.values())),
            (f"{field}.prompts", list(classifier.prompts)),
        ]
    for index, prompt_model in enumerate(spec.prompt_models):
        named.append((f"prompt_models.{index}.labels", list(prompt_model.labels.values())))
    if spec.semantic is not None:
        named.append(("semantic.exemplars", list(spec.semantic.exemplars)))
    for field, categories in named:
        for category in categories:
            if category not in spec.categories:
                raise PolicyError(
                    f"{source}: field {field}: expected a category "
                    f"the pack defines ({', '.join(sorted(spec.categories))}); found {category!r}"
                )
