"""Provenance: Content Credentials (C2PA) signing and reading, and the keys they use.

The pixel watermark lives in guard.watermark; this package names its algorithm and mark id in the
manifest's soft-binding assertion.
"""

from genguard.guard.provenance.content_credentials import (
    ContentCredentials,
    EditFacts,
    ManifestFacts,
    ManifestReading,
    ManifestState,
    SignedImage,
    read_manifest,
)
from genguard.guard.provenance.identity import IdentityConfig
from genguard.guard.provenance.keys import (
    CallbackSigner,
    LocalKeySigner,
    Signer,
    init_keys,
    trust_anchors_from_config,
)
from genguard.guard.provenance.tsa import TsaConfig

__all__ = [
    "CallbackSigner",
    "ContentCredentials",
    "EditFacts",
    "IdentityConfig",
    "LocalKeySigner",
    "ManifestFacts",
    "ManifestReading",
    "ManifestState",
    "SignedImage",
    "Signer",
    "TsaConfig",
    "init_keys",
    "read_manifest",
    "trust_anchors_from_config",
]
