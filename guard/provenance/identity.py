"""The organisation's CAWG identity assertion (X.509): who generated an image, signed by its own key.

Configured per deployment with GENGUARD_IDENTITY_KEY and GENGUARD_IDENTITY_CHAIN (PEM paths; both or
neither). The certificate names the organisation (subject CN and O); the same checks apply as to the
claim signer (a key that matches, a CA-issued end-entity certificate in its validity, an accepted
EKU: documentSigning is the usual one for identities). c2pa writes the `cawg.identity` assertion
(sig_type `cawg.x509.cose`) over the manifest's hard binding when it signs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from genguard.guard.errors import BadInputError
from genguard.guard.provenance.keys import LocalKeySigner


@dataclass(frozen=True)
class IdentityConfig:
    """The identity signer: its key and chain (PEM, end-entity first). Build with `from_pem`."""

    signer: LocalKeySigner = field(repr=False)

    @classmethod
    def from_pem(cls, key_pem: bytes, chain_pem: bytes, *, source: str = "identity") -> IdentityConfig:
        return cls(
            LocalKeySigner(key_pem, chain_pem, key_source=f"{source} key", chain_source=f"{source} chain")
        )

    @classmethod
    def from_env(cls) -> IdentityConfig | None:
        key, chain = os.environ.get("GENGUARD_IDENTITY_KEY"), os.environ.get("GENGUARD_IDENTITY_CHAIN")
        if not key and not chain:
            return None
        if not key or not chain:
            given, missing = ("GENGUARD_IDENTITY_KEY", "GENGUARD_IDENTITY_CHAIN")[:: 1 if key else -1]
            raise BadInputError(f"{missing}: expected a path when {given} is set, found nothing")
        return cls(LocalKeySigner.from_files(Path(key).expanduser(), Path(chain).expanduser()))
