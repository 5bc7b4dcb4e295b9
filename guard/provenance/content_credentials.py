"""Content Credentials (C2PA manifests) with c2pa-python: sign a released image, read any image.

A manifest holds the `c2pa.created` action (digital source type trainedAlgorithmicMedia, software
agent = genguard version, pipeline class, model id), the governance assertion (`org.genguard.governance`:
generation id, image index, policy name/version/digest, classifier verdict; never the prompt) and a
`c2pa.soft-binding` assertion naming the pixel watermark algorithm and the mark id. No thumbnails
(they cost 35-50 times the signing time); remote manifests are never fetched.

c2pa-python 0.38 keeps settings per `Context` (the process-wide `load_settings` is deprecated and not
read by Reader or Builder), so signing and reading contexts are built here with explicit settings and
are safe to share between threads; one native signer is reused, one `Builder` is made per image.
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from typing import Any

import c2pa

from guard.errors import BadInputError, InfrastructureError
from guard.markid import format_mark_id, read_mark_id
from guard.provenance.keys import LocalKeySigner, Signer, configured_signer, trust_anchors_from_config
from guard.types import ImageVerdict, PolicyRef

GOVERNANCE_LABEL = "org.genguard.governance"
SOFT_BINDING_LABEL = "c2pa.soft-binding"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

_SIGNING_SETTINGS = {
    "builder": {"thumbnail": {"enabled": False}},
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False, "verify_after_sign": False},
}
_READING_SETTINGS = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
_ALGORITHMS = {
    "es256": c2pa.C2paSigningAlg.ES256,
    "es384": c2pa.C2paSigningAlg.ES384,
    "ed25519": c2pa.C2paSigningAlg.ED25519,
}
_MAX_ERROR_TEXT = 300


@dataclass(frozen=True)
class ManifestFacts:
    """What a manifest says about one released image."""

    generation_id: str
    image_index: int
    policy: PolicyRef
    verdict: ImageVerdict
    model_id: str
    pipeline_class: str
    mark_id: int | None
    watermark_algorithm: str | None


@dataclass(frozen=True)
class SignedImage:
    """`data`: the file that leaves (manifest embedded, or untouched with a sidecar); `manifest`: the
    manifest store bytes (what a `.c2pa` sidecar holds)."""

    data: bytes
    manifest: bytes


class ManifestState(StrEnum):
    TRUSTED = "trusted"  # intact, signed by a chain to a configured trust anchor
    VALID = "valid"  # intact, signer unknown
    INVALID = "invalid"  # altered, expired without timestamp, or unreadable
    ABSENT = "absent"  # no manifest


@dataclass(frozen=True)
class ManifestReading:
    """What reading an image's manifest found. `codes`: c2pa failure codes (e.g.
    "assertion.dataHash.mismatch", "signingCredential.untrusted"). `error`: why a corrupt or truncated
    manifest could not be read (or, with ABSENT, why the format cannot carry one). The other fields
    come from the manifest, whatever its state: they are claims, checked only when TRUSTED."""

    state: ManifestState
    codes: tuple[str, ...] = ()
    signer: str | None = None
    issuer: str | None = None
    signed_at: str | None = None
    generation_id: str | None = None
    image_index: int | None = None
    mark_id: int | None = None
    watermark_algorithm: str | None = None
    policy_digest: str | None = None
    error: str | None = None


class ContentCredentials:
    """Signs released images. Holds one native c2pa signer, reused for every image; build it once."""

    def __init__(self, signer: Signer) -> None:
        if signer.algorithm not in _ALGORITHMS:
            raise BadInputError(
                f"signer.algorithm: expected one of {sorted(_ALGORITHMS)}, found {signer.algorithm!r}"
            )
        self.signer = signer
        try:
            if isinstance(signer, LocalKeySigner):  # native signing: no Python round trip per image
                info = c2pa.C2paSignerInfo(
                    signer.algorithm.encode(), signer.certificate_chain_pem, signer._key_pem, None
                )
                self._native = c2pa.Signer.from_info(info)
            else:
                self._native = c2pa.Signer.from_callback(
                    signer.sign, _ALGORITHMS[signer.algorithm], signer.certificate_chain_pem.decode()
                )
            self._context = c2pa.Context.from_dict(_SIGNING_SETTINGS)
        except c2pa.C2paError as error:
            raise BadInputError(
                f"signer: c2pa refused the key or certificate chain ({_short(error)})"
            ) from None

    @classmethod
    def from_config(cls) -> ContentCredentials:
        """The configured key and chain (development keys are created on first use, see keys.py)."""
        return cls(configured_signer())

    def sign(self, image: bytes, mime_type: str, facts: ManifestFacts, *, embed: bool = True) -> SignedImage:
        """Sign `image` (PNG, JPEG or WebP bytes). `embed=False`: the image is left untouched and the
        manifest is meant for a `.c2pa` sidecar."""
        if mime_type not in MIME_TYPES.values():
            raise BadInputError(
                f"mime_type: expected one of {sorted(MIME_TYPES.values())}, found {mime_type!r}"
            )
        builder = c2pa.Builder(_manifest_definition(facts), self._context)
        if not embed:
            builder.set_no_embed()
        out = io.BytesIO()
        try:
            manifest = builder.sign(self._native, mime_type, io.BytesIO(image), out)
        except c2pa.C2paError as error:
            raise InfrastructureError(f"c2pa: signing a {mime_type} image failed ({_short(error)})") from None
        finally:
            builder.close()
        return SignedImage(data=out.getvalue() if embed else image, manifest=manifest)

    def close(self) -> None:
        self._native.close()
        self._context.close()


def read_manifest(
    data: bytes,
    mime_type: str,
    *,
    trust_anchors_pem: bytes | None = None,
    sidecar: bytes | None = None,
) -> ManifestReading:
    """Read and validate the manifest embedded in `data` (or in `sidecar`, for an image that carries none).

    `mime_type` is a hint: c2pa detects the container from the bytes when they disagree.
    `trust_anchors_pem`: the roots that make a signer "ours" (None: the configured ones; b"": none).
    Never raises on a bad manifest: a corrupt or truncated one reads as INVALID with `error` set.
    """
    anchors = trust_anchors_pem if trust_anchors_pem is not None else trust_anchors_from_config() or b""
    try:
        reader = c2pa.Reader(mime_type, io.BytesIO(data), sidecar, _reading_context(anchors))
    except c2pa.C2paError.ManifestNotFound:
        return ManifestReading(ManifestState.ABSENT)
    except c2pa.C2paError.NotSupported as error:  # a format that cannot carry a manifest (BMP, ...)
        return ManifestReading(ManifestState.ABSENT, error=_short(error))
    except c2pa.C2paError as error:
        return ManifestReading(ManifestState.INVALID, error=_short(error))
    with reader:
        try:
            state = reader.get_validation_state()
            results = reader.get_validation_results() or {}
            manifest = reader.get_active_manifest() or {}
        except c2pa.C2paError as error:
            return ManifestReading(ManifestState.INVALID, error=_short(error))
    failures = results.get("activeManifest", {}).get("failure", [])
    codes = tuple(dict.fromkeys(str(item.get("code")) for item in failures if isinstance(item, dict)))
    by_state = {"Trusted": ManifestState.TRUSTED, "Valid": ManifestState.VALID}
    return ManifestReading(by_state.get(str(state), ManifestState.INVALID), codes, **_facts_from(manifest))


# -- internals -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _reading_context(anchors: bytes) -> c2pa.Context:
    settings: dict[str, Any] = dict(_READING_SETTINGS)
    if anchors:
        settings["trust"] = {"trust_anchors": anchors.decode()}
    try:
        return c2pa.Context.from_dict(settings)
    except c2pa.C2paError as error:
        raise BadInputError(f"trust anchors: c2pa refused them ({_short(error)})") from None


@functools.cache
def _genguard_version() -> str:
    try:
        return metadata.version("genguard")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _manifest_definition(facts: ManifestFacts) -> str:
    agent = {
        "name": "genguard",
        "version": _genguard_version(),
        "org.genguard.pipeline_class": facts.pipeline_class,
        "org.genguard.model_id": facts.model_id,
    }
    verdict = facts.verdict
    governance = {
        "generation_id": facts.generation_id,
        "image_index": facts.image_index,
        "policy": {"name": facts.policy.name, "version": facts.policy.version, "digest": facts.policy.digest},
        "model_id": facts.model_id,
        "pipeline_class": facts.pipeline_class,
        "verdict": {
            "action": verdict.action.value,
            "scores": [
                {"classifier": s.classifier, "model_id": s.model_id, "category": s.category, "score": s.score}
                for s in verdict.scores
            ],
            "flagged": [
                {"category": category, "threshold": threshold} for category, threshold in verdict.flagged
            ],
            "checks": [
                {"classifier": c.classifier, "model_id": c.model_id, "ran": c.ran, "reason": c.reason}
                for c in verdict.checks
            ],
        },
    }
    assertions: list[dict[str, Any]] = [
        {
            "label": "c2pa.actions",
            "data": {
                "actions": [
                    {
                        "action": "c2pa.created",
                        "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                        "softwareAgent": agent,
                    }
                ]
            },
        },
        {"label": GOVERNANCE_LABEL, "data": governance},
    ]
    if facts.mark_id is not None and facts.watermark_algorithm is not None:
        assertions.append(
            {
                "label": SOFT_BINDING_LABEL,
                "data": {
                    "alg": facts.watermark_algorithm,
                    "blocks": [{"scope": {}, "value": format_mark_id(facts.mark_id)}],
                },
            }
        )
    return json.dumps(
        {
            "claim_generator_info": [agent],
            "title": f"{facts.generation_id}-{facts.image_index}",
            "assertions": assertions,
        }
    )


def _facts_from(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fields of ManifestReading that the manifest states. Its content is untrusted input: every
    value is type-checked, anything unexpected is left None."""
    signature = _dict(manifest.get("signature_info"))
    assertions = {
        str(a.get("label")): _dict(a.get("data"))
        for a in _list(manifest.get("assertions"))
        if isinstance(a, dict)
    }
    governance = assertions.get(GOVERNANCE_LABEL, {})
    binding = assertions.get(SOFT_BINDING_LABEL, {})
    blocks = _list(binding.get("blocks"))
    mark = _dict(blocks[0]).get("value") if blocks else None
    return {
        "signer": _str(signature.get("common_name")),
        "issuer": _str(signature.get("issuer")),
        "signed_at": _str(signature.get("time")),
        "generation_id": _str(governance.get("generation_id")),
        "image_index": _int(governance.get("image_index")),
        "mark_id": read_mark_id(mark),  # 0x form, or decimal as manifests before it said
        "watermark_algorithm": _str(binding.get("alg")),
        "policy_digest": _str(_dict(governance.get("policy")).get("digest")),
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _short(error: Exception) -> str:
    return str(error)[:_MAX_ERROR_TEXT]
