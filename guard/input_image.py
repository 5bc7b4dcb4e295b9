"""An edit's input image and mask, checked before any sampling (pure: no model, no store).

An edit (img2img, or inpainting with a mask) starts from somebody's picture, often a photograph of
a real person, so its input is read as untrusted data: its size in bytes and pixels is bounded
before it is decoded (`genguard.guard.imageio.load_image`), a corrupt file is a clear error, the
mask must have the image's size, and faces are found in it (OpenCV's Haar cascade, as
`genguard.guard.bias` uses it). What the pack then decides (`decide_edit`) joins the prompt
policy's decision (`merge_decision`) under the category `deceptive_real_people`.

What needs more than pixels (the input's Content Credentials, our own watermark and the generation
it links to, the model's size) is `genguard.pipeline.edit_input`.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from genguard.guard import config
from genguard.guard.bias import detect_faces
from genguard.guard.errors import BadInputError, ImageInputError, NotFoundError
from genguard.guard.imageio import LoadedImage, load_image
from genguard.guard.policy.schema import EditAction, EditsSpec
from genguard.guard.quarantine import QuarantineVault
from genguard.guard.types import CategoryScore, PromptAction, PromptDecision, RuleHit

EDIT_CATEGORY = "deceptive_real_people"
# The input formats an edit accepts: those Content Credentials can be read from and carried as an
# ingredient (c2pa), and that Pillow decodes.
INPUT_MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
DEFAULT_STRENGTH = {"img2img": 0.75, "inpaint": 1.0}
MAX_CONSENT_CHARS = 500
_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
# A mask pixel at or above this grey level is repainted.
MASK_LEVEL = 128

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class EditInput:
    """A checked edit input. `data`: the input file as it came (never recorded in clear); `sha256` of it.

    `rgb`: its pixels (H, W, 3) uint8. `mask`: (H, W) bool, True where the edit repaints (None for
    img2img). `mask_share`: the share of the image the edit may change (1.0 for img2img).
    `faces`: detected faces (x, y, w, h); `face_share`: the largest share of one face's box that the
    edit may change (0.0 without faces).
    """

    data: bytes = field(repr=False)
    sha256: str
    mime_type: str
    rgb: npt.NDArray[np.uint8] = field(repr=False)
    mask: npt.NDArray[np.bool_] | None = field(repr=False)
    mask_sha256: str | None
    mask_share: float
    faces: tuple[Box, ...]
    face_share: float
    strength: float
    consent: str | None

    @property
    def mode(self) -> str:
        """ "inpaint" with a mask, else "img2img"."""
        return "img2img" if self.mask is None else "inpaint"

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the input."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


@dataclass(frozen=True)
class EditDecision:
    """What the pack's `edits:` section decided for one edit, before the prompt's decision joins it.

    `photograph`: the input was treated as a photograph (see `EditsSpec`). `rules`: the rules that
    applied (category `deceptive_real_people`, layer "edit"), with their scores. `consent_missing`:
    a rule asked for a consent attestation and none was given.
    """

    action: PromptAction
    photograph: bool
    rules: tuple[RuleHit, ...]
    consent_missing: bool = False


def read_input(source: bytes | str | Path, field_name: str, max_bytes: int) -> bytes:
    """The file's bytes, refusing more than `max_bytes` before reading them."""
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
        if len(data) > max_bytes:
            raise ImageInputError(f"{field_name}: expected at most {max_bytes} bytes, found {len(data)}")
    elif isinstance(source, str | Path):
        path = Path(source)
        try:
            size = path.stat().st_size
            if path.is_dir():
                raise ImageInputError(f"{field_name}: expected an image file, found a directory at {path}")
            if size > max_bytes:
                raise ImageInputError(
                    f"{field_name}: expected at most {max_bytes} bytes, found {size} in {path}"
                )
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageInputError(f"{field_name}: expected an image file, found no file at {path}") from None
        except OSError as error:
            raise ImageInputError(f"{field_name}: cannot read {path} ({error.strerror})") from None
    else:
        raise BadInputError(
            f"{field_name}: expected the image's bytes or a path, found {type(source).__name__}"
        )
    if not data:
        raise ImageInputError(f"{field_name}: expected an image file, found an empty one")
    return data


def input_size(data: bytes, field_name: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the header alone (nothing decoded), with the format and pixel bounds checked."""
    return _header(data, field_name, max_pixels)[0]


def check_strength(strength: object, mode: str) -> float:
    """`strength` as a float in (0, 1]; None gives the mode's default."""
    if strength is None:
        return DEFAULT_STRENGTH[mode]
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not math.isfinite(strength):
        raise BadInputError(f"strength: expected a number in (0, 1], found {strength!r}")
    if not 0.0 < float(strength) <= 1.0:
        raise BadInputError(f"strength: expected a number in (0, 1], found {strength}")
    return float(strength)


def check_consent(consent: object) -> str | None:
    if consent is None:
        return None
    if not isinstance(consent, str) or not consent.strip() or "\x00" in consent:
        raise BadInputError(f"consent: expected a non-empty reference without NUL, found {consent!r}")
    if len(consent) > MAX_CONSENT_CHARS:
        raise BadInputError(f"consent: expected at most {MAX_CONSENT_CHARS} characters, found {len(consent)}")
    return consent


def load_edit_input(
    image: bytes | str | Path | None,
    mask: bytes | str | Path | None,
    *,
    strength: object,
    consent: object,
    spec: EditsSpec,
) -> EditInput:
    """Read, bound, decode and inspect an edit's input and mask (BadInputError naming the field)."""
    if image is None:
        raise BadInputError("init_image: expected the image to edit (a mask needs one), found none")
    if not spec.enabled:
        raise BadInputError(
            "init_image: expected no input image (the pack's edits.enabled is false), found one"
        )
    mode = "img2img" if mask is None else "inpaint"
    strength_value = check_strength(strength, mode)
    consent_value = check_consent(consent)
    data = read_input(image, "init_image", spec.max_input_bytes)
    (width, height), file_format = _header(data, "init_image", spec.max_input_pixels)
    mime_type = INPUT_MIME_TYPES.get(file_format or "")
    if mime_type is None:
        raise ImageInputError(
            f"init_image: expected a {', '.join(INPUT_MIME_TYPES)} image, found {file_format or 'an unknown format'}"
        )
    rgb = _decode(data, "init_image", spec.max_input_pixels).rgb
    mask_bits: npt.NDArray[np.bool_] | None = None
    mask_sha256: str | None = None
    if mask is not None:
        mask_data = read_input(mask, "mask", spec.max_input_bytes)
        (mask_width, mask_height), _ = _header(mask_data, "mask", spec.max_input_pixels)
        if (mask_width, mask_height) != (width, height):
            raise ImageInputError(
                f"mask: expected the input image's size {width}x{height}, found {mask_width}x{mask_height}"
            )
        grey = _decode(mask_data, "mask", spec.max_input_pixels).rgb.mean(axis=2)
        mask_bits = np.asarray(grey >= MASK_LEVEL)
        if not mask_bits.any():
            raise ImageInputError(
                f"mask: expected some pixels at grey level {MASK_LEVEL} or above (the region to repaint), found none"
            )
        mask_sha256 = hashlib.sha256(mask_data).hexdigest()
    faces = tuple(detect_faces(rgb))
    return EditInput(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        mime_type=mime_type,
        rgb=rgb,
        mask=mask_bits,
        mask_sha256=mask_sha256,
        mask_share=1.0 if mask_bits is None else float(mask_bits.mean()),
        faces=faces,
        face_share=max((_changed_share(mask_bits, box) for box in faces), default=0.0),
        strength=strength_value,
        consent=consent_value,
    )


def decide_edit(edit: EditInput, spec: EditsSpec, *, photograph: bool) -> EditDecision:
    """The pack's decision for an edit: `real_people` for a photograph with faces, `face_edit` when the
    edit changes a face region (the stricter wins); ALLOW for anything else."""
    if not photograph or not edit.faces:
        return EditDecision(PromptAction.ALLOW, photograph, ())
    rules: list[tuple[str, EditAction, float]] = [("edits.real_people", spec.real_people, 1.0)]
    if edit.face_share >= spec.face_edit.threshold:
        rules.append(("edits.face_edit", spec.face_edit.action, round(edit.face_share, 4)))
    action, hits, missing = PromptAction.ALLOW, [], False
    for rule, wanted, score in rules:
        if wanted == "consent":
            resolved = PromptAction.ALLOW if edit.consent is not None else PromptAction.BLOCK
            missing = missing or edit.consent is None
            rule_id = rule if edit.consent is not None else f"{rule}.consent_missing"
        else:
            resolved, rule_id = PromptAction(wanted), rule
        hits.append(RuleHit(EDIT_CATEGORY, "edit", rule_id, score))
        if resolved.rank > action.rank:
            action = resolved
    return EditDecision(action, photograph, tuple(hits), missing)


def merge_decision(decision: PromptDecision, edit: EditDecision) -> PromptDecision:
    """The prompt's decision with the edit's joined: the stricter action, its rules and category."""
    if not edit.rules:
        return decision
    action = edit.action if edit.action.rank > decision.action.rank else decision.action
    score = max(hit.score for hit in edit.rules)
    categories = [c for c in decision.categories if c.category != EDIT_CATEGORY]
    earlier = next((c for c in decision.categories if c.category == EDIT_CATEGORY), None)
    if earlier is not None:  # the prompt's own evidence for the category: the stronger of the two
        score = max(score, earlier.score)
        edit_action = edit.action if edit.action.rank > earlier.action.rank else earlier.action
    else:
        edit_action = edit.action
    categories.append(CategoryScore(EDIT_CATEGORY, score, edit_action))
    return replace(
        decision, action=action, categories=tuple(categories), rules=(*decision.rules, *edit.rules)
    )


def resized(
    edit: EditInput, width: int, height: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None]:
    """The input (RGB uint8) and its mask (uint8 0/255) at the size the model samples."""
    if edit.size == (width, height):
        rgb = edit.rgb
    else:
        rgb = np.asarray(Image.fromarray(edit.rgb).resize((width, height), Image.Resampling.LANCZOS))
    if edit.mask is None:
        return rgb, None
    mask = edit.mask.astype(np.uint8) * 255
    if edit.size != (width, height):
        mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
    return rgb, mask


@dataclass(frozen=True)
class InputStore:
    """Where edit inputs are kept when the pack says `encrypted` or `kept`. `root` None:
    `genguard_home()/edit-inputs` (folder 0700, files 0600)."""

    root: Path | None = None

    @property
    def folder(self) -> Path:
        return self.root if self.root is not None else config.genguard_home() / "edit-inputs"

    def keep(self, storage: str, generation_id: str, edit: EditInput) -> str | None:
        """Store the input as `storage` says; returns the file's name in `folder` (None for `hash`)."""
        if storage == "hash":
            return None
        if storage == "encrypted":
            return QuarantineVault(self.folder).keep(generation_id, 0, edit.data).name
        if storage == "kept":
            target = (
                QuarantineVault(self.folder).path(generation_id, 0).with_suffix(_SUFFIXES[edit.mime_type])
            )
            config.private_dir(target.parent)
            tmp = target.with_name(f".{target.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(edit.data)
            os.replace(tmp, target)
            return target.name
        raise BadInputError(f"edits.input_storage: expected hash, encrypted or kept, found {storage!r}")

    def load(self, generation_id: str, name: str, sha256: str | None = None) -> bytes:
        """A stored input's bytes (decrypted when sealed); with `sha256`, checked against it."""
        expected = QuarantineVault(self.folder).path(generation_id, 0)
        if name not in (expected.name, *(expected.with_suffix(s).name for s in _SUFFIXES.values())):
            raise BadInputError(
                f"stored input: expected a file of generation {generation_id}, found {name!r}"
            )
        try:
            if name.endswith(".ggq"):
                data = QuarantineVault(self.folder).load_png(generation_id, 0)
            else:
                data = (self.folder / name).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"stored input {name}: expected it in {self.folder}, found none") from None
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise ImageInputError(
                f"stored input {name}: expected SHA-256 {sha256}, found other bytes (altered)"
            )
        return data

    def discard(self, name: str | None) -> None:
        if name is not None:
            (self.folder / name).unlink(missing_ok=True)


# -- internals -------------------------------------------------------------------------------------


def _header(data: bytes, field_name: str, max_pixels: int) -> tuple[tuple[int, int], str | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:  # lazy: the header only
                width, height = image.size
                file_format = image.format
        except UnidentifiedImageError:
            raise ImageInputError(
                f"{field_name}: expected an image file, found an unrecognised format"
            ) from None
        except Image.DecompressionBombError:
            raise ImageInputError(
                f"{field_name}: expected at most {max_pixels} pixels, found more (refused before decoding)"
            ) from None
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageInputError(f"{field_name}: expected a readable image header, found {error}") from None
    if width * height > max_pixels:
        raise ImageInputError(
            f"{field_name}: expected at most {max_pixels} pixels, found {width}x{height} = {width * height} "
            "(refused before decoding)"
        )
    return (width, height), file_format


def _decode(data: bytes, field_name: str, max_pixels: int) -> LoadedImage:
    try:
        return load_image(data, max_pixels=max_pixels)
    except ImageInputError as error:  # load_image names the source "<bytes>"; name the field instead
        text = str(error).removeprefix("<bytes>: ")
        raise ImageInputError(f"{field_name}: {text}") from None


def _changed_share(mask: npt.NDArray[np.bool_] | None, box: Box) -> float:
    """The share of `box` the edit may change: all of it for img2img, the mask's share inside it else."""
    if mask is None:
        return 1.0
    x, y, w, h = box
    region = mask[y : y + h, x : x + w]
    return float(region.mean()) if region.size else 0.0


__all__ = [
    "DEFAULT_STRENGTH",
    "EDIT_CATEGORY",
    "INPUT_MIME_TYPES",
    "EditDecision",
    "EditInput",
    "InputStore",
    "check_consent",
    "check_strength",
    "decide_edit",
    "input_size",
    "load_edit_input",
    "merge_decision",
    "read_input",
    "resized",
]
