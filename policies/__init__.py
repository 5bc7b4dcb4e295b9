"""The YAML policy packs shipped with genguard. Load them with `guard.policy.load_pack(name)`."""

from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent
