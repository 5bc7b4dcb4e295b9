"""Quarantined images kept encrypted until a reviewer decides (AES-256-GCM, `cryptography`).

The key is 32 random bytes in `genguard_home()/keys/quarantine.key` (created 0600 on first use);
files (0600) live in `genguard_home()/quarantine/<generation id>-<index>.ggq` (folder 0700; a wider
existing folder or key is warned about, genguard.guard.config.ExposedFileWarning). A file is
MAGIC | 12-byte nonce | ciphertext of the PNG with its tag; the associated data binds it to its
generation and index, so a file renamed onto another image's name does not decrypt.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genguard.guard import config
from genguard.guard.errors import BadInputError, ImageInputError, NotFoundError

MAGIC = b"GGQ1"
_NONCE = 12
_KEY_BYTES = 32
_GENERATION_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


def quarantine_key() -> bytes:
    """The quarantine key, created with fresh random bytes on first use."""
    path = config.genguard_home() / "keys" / "quarantine.key"
    if not path.exists():
        try:
            config.write_secret_file(path, os.urandom(_KEY_BYTES))
        except FileExistsError:
            pass  # another process created it between the check and the write
    else:
        config.warn_if_exposed(path.parent)
        config.warn_if_exposed(path)
    key = path.read_bytes()
    if len(key) != _KEY_BYTES:
        raise BadInputError(f"{path}: expected a {_KEY_BYTES}-byte AES-256 key, found {len(key)} bytes")
    return key


def _associated_data(generation_id: str, index: int) -> bytes:
    return f"genguard-quarantine:v1:{generation_id}:{index}".encode()


def seal(png: bytes, key: bytes, generation_id: str, index: int) -> bytes:
    """Encrypt one PNG (pure: no files)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(_NONCE)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, png, _associated_data(generation_id, index))


def unseal(blob: bytes, key: bytes, generation_id: str, index: int) -> bytes:
    """Decrypt what `seal` made; a changed file, another image's file or another key is an error."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _NONCE + 16:
        raise ImageInputError(
            f"quarantined image {generation_id}:{index}: expected a {MAGIC!r} file, found other bytes"
        )
    nonce = blob[len(MAGIC) : len(MAGIC) + _NONCE]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + _NONCE :], _associated_data(generation_id, index))
    except InvalidTag:
        raise ImageInputError(
            f"quarantined image {generation_id}:{index}: expected it to decrypt with this installation's "
            "quarantine key, found it altered, moved from another image, or sealed under another key"
        ) from None


@dataclass(frozen=True)
class QuarantineVault:
    """Where quarantined images are kept encrypted. `root` None: `genguard_home()/quarantine`."""

    root: Path | None = None

    @property
    def folder(self) -> Path:
        return self.root if self.root is not None else config.genguard_home() / "quarantine"

    def path(self, generation_id: str, index: int) -> Path:
        if not isinstance(generation_id, str) or not _GENERATION_ID.fullmatch(generation_id):
            raise BadInputError(
                f"generation_id: expected 1 to 64 letters, digits, - or _, found {generation_id!r}"
            )
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise BadInputError(f"index: expected a non-negative integer, found {index!r}")
        return self.folder / f"{generation_id}-{index}.ggq"

    def keep(self, generation_id: str, index: int, png: bytes) -> Path:
        """Encrypt and write atomically (temporary name, then rename); returns the file."""
        target = self.path(generation_id, index)
        config.private_dir(target.parent)  # 0700: only the owner lists the quarantined images
        blob = seal(png, quarantine_key(), generation_id, index)
        tmp = target.with_name(f".{target.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
        os.replace(tmp, target)
        return target

    def load_png(self, generation_id: str, index: int) -> bytes:
        target = self.path(generation_id, index)
        if not target.exists():
            raise NotFoundError(
                f"quarantined image {generation_id}:{index}: expected an encrypted copy at {target}, found none "
                "(the pack may say quarantine.keep: none, or it was already decided)"
            )
        return unseal(target.read_bytes(), quarantine_key(), generation_id, index)

    def load(self, generation_id: str, index: int) -> np.ndarray:
        """The kept pixels (RGB uint8)."""
        from genguard.guard.imageio import load_image

        return load_image(self.load_png(generation_id, index)).rgb

    def discard(self, generation_id: str, index: int) -> bool:
        """Delete the encrypted copy; False when there was none."""
        target = self.path(generation_id, index)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        return True
