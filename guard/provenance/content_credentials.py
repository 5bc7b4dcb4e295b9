"""Content Credentials (C2PA manifests) with c2pa-python: sign a released image, read any image.

A manifest holds the `c2pa.created` action (digital source type trainedAlgorithmicMedia, software
agent = genguard version, pipeline class, model id), the governance assertion (`org.genguard.governance`:
generation id, image index, policy name/version/digest, classifier verdict; never the prompt) and a
`c2pa.soft-binding` assertion naming the pixel watermark algorithm and the mark id, announced by a
`c2pa.watermarked.bound` action (C2PA 2.3: the watermark's value is bound to this manifest). No
thumbnails (they cost 35-50 times the signing time); remote manifests are never fetched.

Soft-binding algorithm names: the C2PA soft-binding algorithm list holds registered names; until
genguard's is registered it writes an entity-specific name in reverse-domain form
(`org.genguard.watermark.pixel.v3`, see docs/provenance.md for the registry entry). Readers accept
that name and the older internal one (`genguard.pixel.v3`), and report the internal one.

With a time-stamp authority configured (genguard.guard.provenance.tsa), the signature carries an RFC 3161
timestamp; a TSA that cannot be reached refuses the release unless the TSA is configured optional.

With an identity configured (genguard.guard.provenance.identity), the manifest also carries a CAWG identity
assertion naming the organisation, signed with its X.509 identity key. c2pa-python exposes that only
through settings-based signing (`signer.local` and `cawg_x509_signer.local` in a Context's settings),
so the signing key must then be a local PEM key, and the Context is handed to the Builder through
c2pa's public `ContextProvider` seam, saying that it holds a signer. Reading: c2pa-rs 0.91.3 reports
the identity credential as `cawg.x509.credential.untrusted` whatever `cawg_trust` holds (observed), so
that code alone does not lower the claim's state; the identity's name, issuer and whether its
signature validated are reported beside it.

c2pa-python 0.38 keeps settings per `Context` (the process-wide `load_settings` is deprecated and not
read by Reader or Builder), so signing and reading contexts are built here with explicit settings and
are safe to share between threads; one native signer is reused, one `Builder` is made per image.
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import metadata
from typing import Any

import c2pa

from genguard.guard.errors import BadInputError, InfrastructureError
from genguard.guard.markid import format_mark_id, read_mark_id
from genguard.guard.provenance.identity import IdentityConfig
from genguard.guard.provenance.keys import (
    LocalKeySigner,
    Signer,
    configured_signer,
    trust_anchors_from_config,
)
from genguard.guard.provenance.tsa import TimestampState, TsaConfig
from genguard.guard.types import ImageVerdict, PolicyRef

GOVERNANCE_LABEL = "org.genguard.governance"
SOFT_BINDING_LABEL = "c2pa.soft-binding"
WATERMARKED_BOUND = "c2pa.watermarked.bound"
# genguard's internal algorithm names (they also seed key derivation, so they never change) and the
# entity-specific names written in C2PA soft-binding assertions until the list assigns registered ones.
C2PA_SOFT_BINDING_NAMES = {
    "genguard.pixel.v3": "org.genguard.watermark.pixel.v3",
    "genguard.latent.gaussian-shading.v1": "org.genguard.watermark.latent.gaussianshading.v1",
}
_INTERNAL_NAMES = {c2pa_name: internal for internal, c2pa_name in C2PA_SOFT_BINDING_NAMES.items()}
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
# An edit's output: a composite of the input with parts made by a trained model (IPTC, as C2PA names it).
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)
# The source types that say "made by a model" when a trusted manifest declares them for an input.
AI_SOURCE_TYPES = frozenset(
    (
        TRAINED_ALGORITHMIC_MEDIA,
        COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
        "http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia",
        "http://cv.iptc.org/newscodes/digitalsourcetype/compositeSynthetic",
    )
)
EDIT_INGREDIENT_LABEL = "org.genguard.edit.input"
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
class EditFacts:
    """What the manifest of an edit's output says about its input.

    `data`: the input file as it came, carried as the C2PA ingredient (c2pa hashes it and keeps its
    manifest and that manifest's validation state; the pixels are not embedded); None when only its
    hash was kept (a review approval under `input_storage: hash`): the ingredient then names the
    input by `sha256` alone. `sha256`: of the input file.
    `manifest_state`: what reading the input's own manifest found (a ManifestState value).
    `mode`: "img2img" or "inpaint"; `mask_share`: the share of the image the edit may change.
    `source_generation_id`: the generation of ours that our watermark in the input links it to.
    """

    data: bytes | None = field(repr=False)
    mime_type: str
    sha256: str
    manifest_state: str
    mode: str
    mask_share: float
    strength: float
    source_generation_id: str | None = None


@dataclass(frozen=True)
class ManifestFacts:
    """What a manifest says about one released image (`edit`: its input, for an edit's output)."""

    generation_id: str
    image_index: int
    policy: PolicyRef
    verdict: ImageVerdict
    model_id: str
    pipeline_class: str
    mark_id: int | None
    watermark_algorithm: str | None
    edit: EditFacts | None = None


@dataclass(frozen=True)
class SignedImage:
    """`data`: the file that leaves (manifest embedded, or untouched with a sidecar); `manifest`: the
    manifest store bytes (what a `.c2pa` sidecar holds)."""

    data: bytes
    manifest: bytes
    timestamp: str = TimestampState.OFF  # a TimestampState value


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
    timestamped: bool = False  # the signature carries an RFC 3161 timestamp that validated
    watermark_bound: bool = False  # a c2pa.watermarked.bound action announces the soft binding
    identity: str | None = None  # the CAWG identity assertion's signer (certificate CN), if any
    identity_issuer: str | None = None
    identity_valid: bool = False  # its X.509 signature over the referenced assertions validated
    # The digital source type of the first action that states one (c2pa.created / c2pa.edited ...).
    digital_source_type: str | None = None
    actions: tuple[str, ...] = ()  # the active manifest's actions, in order
    ingredients: int = 0  # how many ingredients the active manifest names


class ContentCredentials:
    """Signs released images. Holds one native c2pa signer, reused for every image; build it once.

    `tsa`: time-stamp every signature there. When it cannot be reached, `sign` raises
    InfrastructureError if `tsa.required`, else signs without a timestamp and says so in
    `SignedImage.timestamp`.
    """

    def __init__(
        self, signer: Signer, *, tsa: TsaConfig | None = None, identity: IdentityConfig | None = None
    ) -> None:
        if signer.algorithm not in _ALGORITHMS:
            raise BadInputError(
                f"signer.algorithm: expected one of {sorted(_ALGORITHMS)}, found {signer.algorithm!r}"
            )
        if identity is not None and not isinstance(signer, LocalKeySigner):
            raise BadInputError(
                "identity: expected a local signing key with a CAWG identity (c2pa signs both from "
                f"settings), found {type(signer).__name__}"
            )
        self.signer = signer
        self.tsa = tsa
        self.identity = identity
        self._plain: c2pa.Signer | _SettingsSigner | None = None
        self._native: c2pa.Signer | _SettingsSigner
        try:
            if identity is not None:
                assert isinstance(signer, LocalKeySigner)
                self._native = _SettingsSigner(signer, identity.signer, tsa.url if tsa else None)
                if tsa is not None and not tsa.required:
                    self._plain = _SettingsSigner(signer, identity.signer, None)
            else:
                self._native = _native_signer(signer, tsa.url if tsa else None)
                if tsa is not None and not tsa.required:  # the fallback when the TSA is unreachable
                    self._plain = _native_signer(signer, None)
            self._context = c2pa.Context.from_dict(_SIGNING_SETTINGS)
        except c2pa.C2paError as error:
            raise BadInputError(
                f"signer: c2pa refused the key, certificate chain, identity or TSA URL ({_short(error)})"
            ) from None

    @classmethod
    def from_config(cls) -> ContentCredentials:
        """The configured key and chain (development keys are created on first use, see keys.py),
        TSA (GENGUARD_TSA_URL, GENGUARD_TSA_OPTIONAL; tsa.py) and identity (GENGUARD_IDENTITY_KEY,
        GENGUARD_IDENTITY_CHAIN; identity.py)."""
        return cls(configured_signer(), tsa=TsaConfig.from_env(), identity=IdentityConfig.from_env())

    def sign(self, image: bytes, mime_type: str, facts: ManifestFacts, *, embed: bool = True) -> SignedImage:
        """Sign `image` (PNG, JPEG or WebP bytes). `embed=False`: the image is left untouched and the
        manifest is meant for a `.c2pa` sidecar."""
        if mime_type not in MIME_TYPES.values():
            raise BadInputError(
                f"mime_type: expected one of {sorted(MIME_TYPES.values())}, found {mime_type!r}"
            )
        definition = _manifest_definition(facts)
        edit = facts.edit
        try:
            data, manifest = self._sign_with(self._native, definition, image, mime_type, embed, edit)
        except c2pa.C2paError as error:
            if self.tsa is None:
                raise InfrastructureError(
                    f"c2pa: signing a {mime_type} image failed ({_short(error)})"
                ) from None
            if self._plain is None:
                raise InfrastructureError(
                    f"tsa: signing a {mime_type} image with a timestamp from {self.tsa.display_url} failed "
                    f"({_short(self.tsa.scrub(str(error)))}); the release is refused because GENGUARD_TSA_OPTIONAL is not set"
                ) from None
            try:
                data, manifest = self._sign_with(self._plain, definition, image, mime_type, embed, edit)
            except c2pa.C2paError as plain_error:
                raise InfrastructureError(
                    f"c2pa: signing a {mime_type} image failed ({_short(plain_error)})"
                ) from None
            return SignedImage(data, manifest, TimestampState.SKIPPED)
        state = TimestampState.OFF if self.tsa is None else TimestampState.TIMESTAMPED
        return SignedImage(data, manifest, state)

    def _sign_with(
        self,
        native: c2pa.Signer | _SettingsSigner,
        definition: str,
        image: bytes,
        mime_type: str,
        embed: bool,
        edit: EditFacts | None = None,
    ) -> tuple[bytes, bytes]:
        context: c2pa.ContextProvider = native if isinstance(native, _SettingsSigner) else self._context
        builder = c2pa.Builder(definition, context)
        try:
            if edit is not None and edit.data is not None:  # c2pa reads the input's manifest into it
                ingredient = {
                    "title": f"input-{edit.sha256[:16]}",
                    "relationship": "parentOf",
                    "label": EDIT_INGREDIENT_LABEL,
                }
                builder.add_ingredient(json.dumps(ingredient), edit.mime_type, io.BytesIO(edit.data))
            if not embed:
                builder.set_no_embed()
            out = io.BytesIO()
            if isinstance(native, _SettingsSigner):
                manifest = builder.sign(mime_type, io.BytesIO(image), out)
            else:
                manifest = builder.sign(native, mime_type, io.BytesIO(image), out)
        finally:
            builder.close()
        return (out.getvalue() if embed else image), manifest

    def close(self) -> None:
        self._native.close()
        if self._plain is not None:
            self._plain.close()
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
    active = _dict(_dict(results).get("activeManifest"))
    failures = _list(active.get("failure"))
    codes = tuple(dict.fromkeys(str(item.get("code")) for item in failures if isinstance(item, dict)))
    successes = {str(item.get("code")) for item in _list(active.get("success")) if isinstance(item, dict)}
    by_state = {"Trusted": ManifestState.TRUSTED, "Valid": ManifestState.VALID}
    reading_state = by_state.get(str(state), ManifestState.INVALID)
    if (  # an untrusted identity credential alone says nothing about the claim's signer (see above)
        reading_state is ManifestState.VALID
        and set(codes) == {_CAWG_UNTRUSTED}
        and "signingCredential.trusted" in successes
    ):
        reading_state = ManifestState.TRUSTED
    return ManifestReading(
        reading_state,
        codes,
        timestamped=bool(successes & {"timeStamp.validated", "timeStamp.trusted"}),
        identity_valid=bool(successes & {"cawg.x509.signature.validated"}),
        **_facts_from(manifest),
    )


# -- internals -------------------------------------------------------------------------------------


_CAWG_UNTRUSTED = "cawg.x509.credential.untrusted"


class _SettingsSigner(c2pa.ContextProvider):  # type: ignore[misc]  # c2pa ships no type hints
    """A signing Context whose signer c2pa builds from settings: the claim signer and the CAWG X.509
    identity signer (the only way c2pa-python writes an identity assertion). It tells the Builder it
    holds a signer, so `Builder.sign(format, source, dest)` signs with it."""

    has_signer = True

    def __init__(self, signer: LocalKeySigner, identity: LocalKeySigner, tsa_url: str | None) -> None:
        def local(key: LocalKeySigner) -> dict[str, Any]:
            entry: dict[str, Any] = {
                "alg": key.algorithm,
                "sign_cert": key.certificate_chain_pem.decode(),
                "private_key": key.private_key_pem.decode(),
            }
            if tsa_url:
                entry["tsa_url"] = tsa_url
            return entry

        settings = {**_SIGNING_SETTINGS, "signer": {"local": local(signer)}}
        settings["cawg_x509_signer"] = {"local": local(identity)}
        self._context = c2pa.Context.from_dict(settings)

    @property
    def is_valid(self) -> bool:
        return bool(self._context.is_valid)

    @property
    def execution_context(self) -> Any:
        return self._context.execution_context

    def close(self) -> None:
        self._context.close()


def _native_signer(signer: Signer, tsa_url: str | None) -> c2pa.Signer:
    if isinstance(signer, LocalKeySigner):  # native signing: no Python round trip per image
        info = c2pa.C2paSignerInfo(
            signer.algorithm.encode(), signer.certificate_chain_pem, signer.private_key_pem, tsa_url
        )
        return c2pa.Signer.from_info(info)
    return c2pa.Signer.from_callback(
        signer.sign, _ALGORITHMS[signer.algorithm], signer.certificate_chain_pem.decode(), tsa_url
    )


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
    governance: dict[str, Any] = {
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
    actions: list[dict[str, Any]]
    if facts.edit is None:
        actions = [
            {"action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA, "softwareAgent": agent}
        ]
    else:  # opened (the input, as the parentOf ingredient), then edited by a model
        edit = facts.edit
        governance["edit"] = {
            "mode": edit.mode,
            "mask_area_share": round(edit.mask_share, 6),
            "strength": edit.strength,
            "input": {
                "sha256": edit.sha256,
                "manifest_state": edit.manifest_state,
                "generation_id": edit.source_generation_id,
            },
        }
        actions = [
            {"action": "c2pa.opened", "parameters": {"ingredientIds": [EDIT_INGREDIENT_LABEL]}},
            {
                "action": "c2pa.edited",
                "digitalSourceType": COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": agent,
            },
        ]
    assertions: list[dict[str, Any]] = [
        {"label": "c2pa.actions", "data": {"actions": actions}},
        {"label": GOVERNANCE_LABEL, "data": governance},
    ]
    if facts.mark_id is not None and facts.watermark_algorithm is not None:
        algorithm = C2PA_SOFT_BINDING_NAMES.get(facts.watermark_algorithm, facts.watermark_algorithm)
        actions.append({"action": WATERMARKED_BOUND, "softwareAgent": agent})
        assertions.append(
            {
                "label": SOFT_BINDING_LABEL,
                "data": {"alg": algorithm, "blocks": [{"scope": {}, "value": format_mark_id(facts.mark_id)}]},
            }
        )
    definition: dict[str, Any] = {
        "claim_generator_info": [agent],
        "title": f"{facts.generation_id}-{facts.image_index}",
        "assertions": assertions,
    }
    if facts.edit is not None and facts.edit.data is None:  # the input known by its hash alone
        definition["ingredients"] = [
            {
                "title": f"input-{facts.edit.sha256[:16]}",
                "format": facts.edit.mime_type,
                "relationship": "parentOf",
                "label": EDIT_INGREDIENT_LABEL,
                "instance_id": f"sha256:{facts.edit.sha256}",
            }
        ]
    return json.dumps(definition)


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
    identity = _dict(assertions.get("cawg.identity", {}).get("signature_info"))
    binding = assertions.get(SOFT_BINDING_LABEL, {})
    blocks = _list(binding.get("blocks"))
    mark = _dict(blocks[0]).get("value") if blocks else None
    algorithm = _str(binding.get("alg"))
    action_items = [
        _dict(action)
        for label, data in assertions.items()
        if label.startswith("c2pa.actions")
        for action in _list(data.get("actions"))
    ]
    actions = [item.get("action") for item in action_items]
    source_type = next(
        (_str(item.get("digitalSourceType")) for item in action_items if _str(item.get("digitalSourceType"))),
        None,
    )
    return {
        "digital_source_type": source_type,
        "actions": tuple(a for a in actions if isinstance(a, str)),
        "ingredients": len(_list(manifest.get("ingredients"))),
        "signer": _str(signature.get("common_name")),
        "issuer": _str(signature.get("issuer")),
        "signed_at": _str(signature.get("time")),
        "generation_id": _str(governance.get("generation_id")),
        "image_index": _int(governance.get("image_index")),
        "mark_id": read_mark_id(mark),  # 0x form, or decimal as manifests before it said
        "watermark_algorithm": _INTERNAL_NAMES.get(algorithm, algorithm) if algorithm else None,
        "policy_digest": _str(_dict(governance.get("policy")).get("digest")),
        "watermark_bound": WATERMARKED_BOUND in actions and bool(binding),
        "identity": _str(identity.get("common_name")),
        "identity_issuer": _str(identity.get("issuer")),
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _short(error: BaseException | str) -> str:
    return str(error)[:_MAX_ERROR_TEXT]
