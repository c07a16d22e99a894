"""A model the user already loaded: a TransformerBridge or a LoadedModel, taken as it is.

`loaded_from_bridge` describes a bridge for the results without touching it; `resolve_model`
takes whatever `seqprobe.notebook.run`'s `model=` takes. On the tiny models of tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from seqprobe.errors import ModelLoadError
from seqprobe.loading.models import BRIDGE_SOURCE, ModelInfo, loaded_from_bridge, resolve_model

pytestmark = pytest.mark.filterwarnings("ignore")


def test_a_bridge_is_described_by_its_config_and_parameters(tiny_bridge) -> None:
    loaded = loaded_from_bridge(tiny_bridge)
    assert loaded.bridge is tiny_bridge
    assert loaded.info == ModelInfo(
        name=str(tiny_bridge.cfg.model_name), source=BRIDGE_SOURCE, sha256="", dtype="float32", device="cpu"
    )
    assert loaded_from_bridge(tiny_bridge, name="tiny-base").info.name == "tiny-base"


def test_the_name_of_a_bridge_booted_from_a_folder_is_the_folder(tiny_llama_bridge, tiny_llama_dir: Path) -> None:
    """So the known failures a case file keys by that folder apply, as they do with --model FOLDER."""
    assert loaded_from_bridge(tiny_llama_bridge).info.name == str(tiny_llama_dir)


def test_a_bridge_in_training_mode_is_refused_and_left_as_it_was(tiny_gpt2_bridge) -> None:
    tiny_gpt2_bridge.train()
    try:
        with pytest.raises(ModelLoadError, match=r"training mode \(dropout on\); call bridge.eval\(\)"):
            loaded_from_bridge(tiny_gpt2_bridge)
        assert tiny_gpt2_bridge.training
    finally:
        tiny_gpt2_bridge.eval()


def test_resolve_model_takes_a_bridge_a_loaded_model_or_a_name(tiny_llama_bridge, tiny_llama_dir: Path) -> None:
    from_bridge = resolve_model(tiny_llama_bridge, device="cuda", dtype="float16")  # apply to names only
    assert from_bridge.bridge is tiny_llama_bridge
    assert (from_bridge.info.source, from_bridge.info.dtype) == (BRIDGE_SOURCE, "float32")
    assert resolve_model(from_bridge) is from_bridge

    by_path = resolve_model(tiny_llama_dir, device="cpu", dtype="bfloat16")
    assert (by_path.info.name, by_path.info.source) == (str(tiny_llama_dir), f"path:{tiny_llama_dir.resolve()}")
    assert by_path.info.dtype == "bfloat16"
    assert loaded_from_bridge(by_path.bridge).info.dtype == "bfloat16"


def test_resolve_model_refuses_what_is_not_a_model() -> None:
    with pytest.raises(ModelLoadError, match="unknown model 'no-such-model'"):
        resolve_model("no-such-model")
    with pytest.raises(TypeError, match=r"model=42 \(int\): expected a model name"):
        resolve_model(42)  # type: ignore[arg-type]
