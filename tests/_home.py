"""One configuration folder per test module: a module's server keeps the same signing, watermark,
quarantine and checkpoint keys from its first test to its last."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

_CLEARED = ("GENGUARD_DB", "GENGUARD_WATERMARK_KEY", "GENGUARD_CHECKPOINT_DIR")


def module_home(name: str) -> tuple[Callable[..., Path], Callable[..., Path]]:
    """The fixtures `home` (module scope: a folder called `name`) and `genguard_home` (autouse:
    GENGUARD_HOME set to it, the variables that would point elsewhere cleared). In a test module:
    `home, genguard_home = module_home("service-home")`."""

    @pytest.fixture(scope="module")
    def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp(name)

    @pytest.fixture(autouse=True)
    def genguard_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        monkeypatch.setenv("GENGUARD_HOME", str(home))
        for variable in _CLEARED:
            monkeypatch.delenv(variable, raising=False)
        return home

    return home, genguard_home
