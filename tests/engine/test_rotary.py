"""Rotary tables computed once and sliced are bit-identical to the model's rotary embedding, per layer type."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from seqprobe.engine.architectures import resumable_forward
from seqprobe.engine.rotary import RotaryTables, rotate
from tests._sharp_models import BUILDERS

CPU = torch.device("cpu")


def _gemma3_linear() -> PreTrainedModel:
    """Gemma 3 as the 4B and larger are configured: linear scaling (factor 8) on the full-attention layers only."""
    config = Gemma3TextConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, sliding_window=4, layer_types=["sliding_attention", "full_attention"],
        rope_scaling={"rope_type": "linear", "factor": 8.0}, max_position_embeddings=128,
    )  # fmt: skip
    return Gemma3ForCausalLM(config)


def _llama_dynamic() -> PreTrainedModel:
    """Dynamic scaling rescales by the longest position asked: the one kind that is not sliced from a table."""
    config = LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rope_scaling={"rope_type": "dynamic", "factor": 2.0},
    )  # fmt: skip
    return LlamaForCausalLM(config)


MODELS = {"llama": BUILDERS["llama"], "gemma3": BUILDERS["gemma3"], "gemma3-linear": _gemma3_linear}
MODELS["llama-dynamic"] = _llama_dynamic


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> PreTrainedModel:
    return MODELS[request.param]().eval()


def _direct(model: PreTrainedModel, layer: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What the engine asked the model for on every attention step before tables were sliced."""
    dummy = torch.empty(0, dtype=model.dtype)
    layer_types = getattr(model.config, "layer_types", None)
    by_key = (layer_types[layer],) if model.config.model_type == "gemma3_text" else ()
    cos, sin = model.model.rotary_emb(dummy, torch.arange(start, stop)[None], *by_key)
    return cos[0], sin[0]


@settings(max_examples=25, deadline=None)
@given(spans=st.lists(st.tuples(st.integers(0, 150), st.integers(1, 40)), min_size=1, max_size=6))
def test_slices_equal_the_model_rotary_embedding_bit_for_bit(
    model: PreTrainedModel, spans: list[tuple[int, int]]
) -> None:
    forward = resumable_forward(model)
    for start, length in spans:
        for layer in range(forward.n_layers):
            cos, sin = forward._rotary(layer, start, length, device=CPU)
            expected_cos, expected_sin = _direct(model, layer, start, start + length)
            assert torch.equal(cos, expected_cos) and torch.equal(sin, expected_sin)
            # Rows of one position each (a prefix tree's nodes) get their own positions' rows.
            rows = torch.arange(start, start + length).flip(0)
            cos, sin = forward._rotary(layer, rows, 1, device=CPU)
            assert cos.shape == (length, 1, 1, expected_cos.shape[-1])
            assert torch.equal(cos[:, 0, 0], expected_cos.flip(0)) and torch.equal(sin[:, 0, 0], expected_sin.flip(0))


def test_gemma3_layer_types_have_their_own_tables() -> None:
    model = _gemma3_linear()
    assert model.model.rotary_emb.rope_type == {"sliding_attention": "default", "full_attention": "linear"}
    forward = resumable_forward(model)
    sliding, full = (forward._rotary(layer, 0, 20, device=CPU)[0] for layer in (0, 1))
    assert not torch.equal(sliding, full)
    assert torch.equal(full, _direct(model, 1, 0, 20)[0])


def test_a_fixed_table_is_computed_once_per_key_and_grown_by_doubling() -> None:
    calls: list[tuple[str, int, int]] = []

    def compute(positions: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append((key, len(positions), int(positions[0])))
        angles = positions[None, :, None].float().expand(1, -1, 4)  # [1 pos d_head]
        return angles.cos(), angles.sin()

    tables = RotaryTables(compute)
    for key, start, stop in [("a", 0, 5), ("a", 2, 4), ("b", 0, 3), ("a", 3, 7), ("a", 0, 10)]:
        cos, _ = tables(key, start, stop, device=CPU, kind="default")
        assert torch.equal(cos, torch.arange(start, stop)[:, None].float().expand(-1, 4).cos())
    assert calls == [("a", 5, 0), ("b", 3, 0), ("a", 10, 0)]
    tables("a", 2, 4, device=CPU, kind="dynamic")
    tables("a", 2, 4, device=CPU, kind="longrope")
    assert calls[3:] == [("a", 2, 2), ("a", 2, 2)]


def test_a_table_made_under_inference_mode_serves_a_differentiable_run() -> None:
    forward = resumable_forward(BUILDERS["llama"]())
    with torch.inference_mode():
        forward._rotary(0, 0, 6, device=CPU)
    cos, sin = forward._rotary(0, 0, 6, device=CPU)
    queries = torch.randn(1, 2, 6, forward.d_head, requires_grad=True)  # [row head pos d_head]
    rotate(queries, cos, sin).sum().backward()
    assert queries.grad is not None
