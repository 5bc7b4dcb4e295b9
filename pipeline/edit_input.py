"""An edit's input, as the governed path needs it: what the pure checks (`genguard.guard.input_image`)
cannot say alone, and the edit pipelines.

- `inspect_edit`: the checked input with its provenance: its own Content Credentials (read with
  c2pa's Reader, carried into the output's manifest as the ingredient), our pixel watermark in it and
  the generation that watermark (or the input's exact bytes) links it to, and the pack's decision.
- `edit_pipeline`: the img2img or inpainting pipeline built from the loaded pipeline's components
  (diffusers' `AutoPipelineFor*.from_pipe`: no second copy of the weights).
- `edit_call_kwargs`: the keyword arguments of that pipeline's call.
- the input is kept as the pack says by `genguard.guard.input_image.InputStore` (`hash`: nothing;
  `encrypted`: sealed with the quarantine key; `kept`: the file in a private folder), never next to
  the output.

The latent watermark: img2img and inpainting start from the input's latents with noise added at the
strength's timestep, so the planted initial noise is not what sampling starts from and the latent
mark cannot be read back from the output; an edit's output carries the pixel mark only, and its
record says so (`LATENT_MARK_NOTE`).
"""

from __future__ import annotations

import hashlib
import inspect
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from typing import Any

from genguard.audit.store import AuditStore
from genguard.guard.errors import BadInputError, ImageInputError
from genguard.guard.input_image import (
    EditDecision,
    EditInput,
    InputStore,
    decide_edit,
    load_edit_input,
    resized,
)
from genguard.guard.policy import PolicyPack
from genguard.guard.provenance import EditFacts, ManifestReading, ManifestState, read_manifest
from genguard.guard.provenance.content_credentials import AI_SOURCE_TYPES
from genguard.guard.types import GenerationRequest
from genguard.guard.watermark import Watermarker
from genguard.pipeline.families import Family

LATENT_MARK_NOTE = (
    "none: an edit starts from the input's latents, not from the planted noise; pixel mark only"
)


@dataclass(frozen=True)
class InputProvenance:
    """Where an edit's input comes from, as far as can be told.

    `manifest`: its own Content Credentials as read (state ABSENT when none). `mark_id`: our pixel
    watermark read from it (None: not marked with this installation's key). `source_generation_id`,
    `source_image_index`: the generation of ours it is (by that mark, or by its exact bytes).
    """

    manifest: ManifestReading
    mark_id: int | None
    source_generation_id: str | None
    source_image_index: int | None

    @property
    def photograph(self) -> bool:
        """Treated as a photograph unless linked to one of our generations, or a trusted manifest
        declares it made by a model (an untrusted claim could be anybody's)."""
        if self.source_generation_id is not None:
            return False
        declared = self.manifest.digital_source_type
        return not (self.manifest.state is ManifestState.TRUSTED and declared in AI_SOURCE_TYPES)


@dataclass(frozen=True)
class CheckedEdit:
    """An edit's input, checked, with its provenance and the pack's decision on it."""

    input: EditInput
    provenance: InputProvenance
    decision: EditDecision
    # Our watermark's mark id, still being read (see `inspect_edit`); None once resolved.
    pending: Future[int | None] | None = field(default=None, repr=False, compare=False)

    def resolved(self, store: AuditStore) -> CheckedEdit:
        """This edit with the pending watermark reading done and linked to its generation. The
        decision stays (it was the same either way); `provenance` says what the mark links to."""
        if self.pending is None:
            return self
        try:
            mark_id = self.pending.result()
        except Exception:  # noqa: BLE001 - a reading that failed found no mark; the edit is recorded
            mark_id = None
        return replace(self, provenance=linked(self.provenance, mark_id, store), pending=None)

    def facts(self) -> EditFacts:
        """What the output's manifest says about the input."""
        return EditFacts(
            data=self.input.data,
            mime_type=self.input.mime_type,
            sha256=self.input.sha256,
            manifest_state=self.provenance.manifest.state.value,
            mode=self.input.mode,
            mask_share=self.input.mask_share,
            strength=self.input.strength,
            source_generation_id=self.provenance.source_generation_id,
        )

    def to_json(self, storage: str, stored: str | None = None) -> dict[str, Any]:
        """The record's `extra["edit"]`: hashes, never the pixels or the file."""
        edit, provenance, manifest = self.input, self.provenance, self.provenance.manifest
        return {
            "mode": edit.mode,
            "strength": edit.strength,
            "mask_area_share": round(edit.mask_share, 6),
            "latent_mark": LATENT_MARK_NOTE,
            "input": {
                "sha256": edit.sha256,
                "mime_type": edit.mime_type,
                "width": edit.size[0],
                "height": edit.size[1],
                "mask_sha256": edit.mask_sha256,
                "storage": storage,
                "stored": stored,
            },
            "faces": [list(box) for box in edit.faces],
            "face_area_share": round(edit.face_share, 6),
            "photograph": self.decision.photograph,
            "consent": edit.consent,
            "decision": {
                "action": self.decision.action.value,
                "rules": [hit.rule for hit in self.decision.rules],
                "consent_missing": self.decision.consent_missing,
            },
            "credentials": {
                "state": manifest.state.value,
                "codes": list(manifest.codes),
                "signer": manifest.signer,
                "issuer": manifest.issuer,
                "digital_source_type": manifest.digital_source_type,
                "error": manifest.error,
            },
            "source": {
                "mark_id": None if provenance.mark_id is None else f"0x{provenance.mark_id:016x}",
                "generation_id": provenance.source_generation_id,
                "image_index": provenance.source_image_index,
            },
        }


def inspect_edit(
    request: GenerationRequest,
    *,
    pack: PolicyPack,
    store: AuditStore,
    watermarker: Watermarker,
    key: bytes | None,
    trust_anchors_pem: bytes | None = None,
    executor: Executor | None = None,
) -> CheckedEdit:
    """Check an edit's input and mask (BadInputError naming the field), read its provenance, decide.

    Reading our watermark from an unmarked input tries every geometry (about 1.3 s at 256 px on one
    core), so it is read before the decision only when the decision depends on it: when the pack
    would treat the input differently as one of our generations than as a photograph. Otherwise, with
    an `executor`, it is read there while the model samples, and `CheckedEdit.resolved` (called by
    the release stage) adds what it found to the record.
    """
    spec = pack.edits
    edit = load_edit_input(
        request.init_image, request.mask, strength=request.strength, consent=request.consent, spec=spec
    )
    manifest = read_manifest(edit.data, edit.mime_type, trust_anchors_pem=trust_anchors_pem)
    same = store.find_images_by_sha256(edit.sha256)
    if same:  # the very bytes we released: no need to read the mark
        stored = same[0]
        provenance = InputProvenance(manifest, stored.mark_id, stored.generation_id, stored.index)
        return CheckedEdit(edit, provenance, decide_edit(edit, spec, photograph=provenance.photograph))
    unlinked = InputProvenance(manifest, None, None, None)
    decision = decide_edit(edit, spec, photograph=unlinked.photograph)
    ours = decide_edit(edit, spec, photograph=False)
    if executor is not None and ours.action is decision.action:
        pending = executor.submit(read_mark, edit, watermarker, key)
        return CheckedEdit(edit, unlinked, decision, pending)
    provenance = linked(unlinked, read_mark(edit, watermarker, key), store)
    return CheckedEdit(edit, provenance, decide_edit(edit, spec, photograph=provenance.photograph))


def read_mark(edit: EditInput, watermarker: Watermarker, key: bytes | None) -> int | None:
    """Our watermark's mark id in the input, None when it carries none (or is too small to)."""
    try:
        found = watermarker.detect(edit.rgb, key)
    except ImageInputError:
        return None
    return found.mark_id if found.marked else None


def linked(provenance: InputProvenance, mark_id: int | None, store: AuditStore) -> InputProvenance:
    """`provenance` with the mark id read and the generation of ours it names (when recorded)."""
    stored = store.find_image_by_mark_id(mark_id) if mark_id is not None else None
    return replace(
        provenance,
        mark_id=mark_id,
        source_generation_id=stored.generation_id if stored is not None else None,
        source_image_index=stored.index if stored is not None else None,
    )


def refused_edit_json(request: GenerationRequest) -> dict[str, Any]:
    """What a refused edit's record says of its input: the hash of the bytes when they were read
    (never the pixels), the mode and the consent reference."""
    data = request.init_image
    return {
        "mode": "img2img" if request.mask is None else "inpaint",
        "input": {"sha256": hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else None},
        "consent": request.consent if isinstance(request.consent, str) else None,
    }


def edit_pipeline(pipe: Any, mode: str) -> Any:
    """The img2img ("img2img") or inpainting ("inpaint") pipeline over `pipe`'s components."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    from genguard.guard.errors import ModelLoadError
    from genguard.pipeline.families import disable_builtin_safety

    auto = AutoPipelineForImage2Image if mode == "img2img" else AutoPipelineForInpainting
    try:
        derived = auto.from_pipe(pipe)
    except (ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"model: expected a {type(pipe).__name__} that diffusers can turn into an {mode} pipeline, "
            f"found none ({exc})"
        ) from None
    disable_builtin_safety(derived)
    return derived


def check_edit_steps(steps: int, strength: float) -> None:
    """diffusers runs int(steps x strength) denoising steps; none at all is an error there."""
    if int(steps * strength) < 1:
        raise BadInputError(
            f"strength: expected steps x strength of at least 1 (diffusers runs int(steps x strength) "
            f"steps), found {steps} x {strength} = {steps * strength:g}"
        )


def edit_call_kwargs(
    derived: Any,
    family: Family,
    edit: EditInput,
    *,
    prompt: str,
    negative_prompt: str,
    width: int,
    height: int,
    steps: int,
    guidance_scale: float,
    num_images: int,
) -> dict[str, Any]:
    """Keyword arguments for `derived(**kwargs)`: the input (and mask) at the sampled size, as PIL images."""
    from PIL import Image

    rgb, mask = resized(edit, width, height)
    accepted = inspect.signature(derived.__call__).parameters
    kwargs: dict[str, Any] = {
        "prompt": prompt,
        "image": Image.fromarray(rgb),
        "strength": edit.strength,
        "num_inference_steps": steps,
        "guidance_scale": guidance_scale,
        "num_images_per_prompt": num_images,
        "output_type": "pt",
    }
    if mask is not None:
        kwargs["mask_image"] = Image.fromarray(mask)
    if "height" in accepted:
        kwargs["height"], kwargs["width"] = height, width
    if negative_prompt:
        kwargs["negative_prompt"] = negative_prompt
        if family is Family.FLUX:  # as in families.call_kwargs: a negative prompt needs true CFG
            kwargs["true_cfg_scale"] = guidance_scale
    return kwargs


__all__ = [
    "LATENT_MARK_NOTE",
    "CheckedEdit",
    "InputProvenance",
    "InputStore",
    "check_edit_steps",
    "edit_call_kwargs",
    "edit_pipeline",
    "inspect_edit",
    "linked",
    "read_mark",
    "refused_edit_json",
]
