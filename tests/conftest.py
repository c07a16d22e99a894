"""Fixtures shared by seqprobe's tests: tiny local models (default-init and sharp), and the real offline model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests._sharp_models import ARCHITECTURES, save_sharp_model
from tests._tiny_models import build_tiny_gpt2, build_tiny_llama

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from seqprobe.loading.models import LoadedModel

REAL_MODEL = "smollm2-135m"


def _saved(builder, path: Path) -> Path:
    builder(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT-2-architecture model folder in hub format (safetensors + tokenizer)."""
    return _saved(build_tiny_gpt2, tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama-architecture model folder with grouped-query attention, like SmolLM2."""
    return _saved(build_tiny_llama, tmp_path_factory.mktemp("tiny-llama"))


def _bridge(model_dir: Path) -> TransformerBridge:
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(str(model_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_gpt2_bridge(tiny_gpt2_dir: Path) -> TransformerBridge:
    return _bridge(tiny_gpt2_dir)


@pytest.fixture(scope="session")
def tiny_llama_bridge(tiny_llama_dir: Path) -> TransformerBridge:
    return _bridge(tiny_llama_dir)


@pytest.fixture(params=["gpt2", "llama"])
def tiny_bridge(request: pytest.FixtureRequest) -> TransformerBridge:
    """Each tiny architecture in turn."""
    return request.getfixturevalue(f"tiny_{request.param}_bridge")


@pytest.fixture(scope="session", params=ARCHITECTURES)
def sharp_model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each three-layer sharp model of tests/_sharp_models.py in turn, saved once per session.

    Pick one architecture with `@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)`.
    """
    return save_sharp_model(request.param, tmp_path_factory.mktemp(f"sharp-{request.param}"))


@pytest.fixture(scope="session")
def sharp_bridge(sharp_model_dir: Path) -> TransformerBridge:
    """A bridge on `sharp_model_dir`'s model, booted once per session and architecture; tests must not change it."""
    return _bridge(sharp_model_dir)


@pytest.fixture(scope="session")
def real_model() -> LoadedModel:
    """smollm2-135m, loaded once per test session (from seqprobe's cache after the first time)."""
    from seqprobe.loading.models import load_model

    return load_model(REAL_MODEL, device="cpu")


@pytest.fixture(scope="session")
def model_stack_imported() -> None:
    import transformer_lens.model_bridge  # noqa: F401

    import seqprobe.loading.models  # noqa: F401


@pytest.fixture
def pytester(model_stack_imported: None, pytester: pytest.Pytester) -> pytest.Pytester:
    """pytester, with the model stack imported before its sys.modules snapshot is taken.

    In-process runs restore `sys.modules` afterwards, so a library first imported inside a run
    is imported again by the next one; pyarrow (under transformer_lens) refuses that.
    """
    return pytester
