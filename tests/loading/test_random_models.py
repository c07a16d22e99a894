"""Random-weight models of a real shape: the 1.1B shape counted on the meta device, small versions built for real."""

from __future__ import annotations

import io

import pytest
import torch

from seqprobe.bench_scaling import run_scaling
from seqprobe.loading.random_models import (
    RANDOM_MODELS,
    build_random_llama,
    id_tokenizer,
    is_random_model,
    meta_llama,
    parameter_count,
    random_bridge,
)

TINYLLAMA = RANDOM_MODELS["random:tinyllama-1.1b"]
# TinyLlama's structure (8 query heads per key/value head, d_head 64 -> 16) at a size that builds in milliseconds.
SMALL = TINYLLAMA.scaled(
    hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=1,
    vocab_size=500,
)  # fmt: skip


def test_tinyllama_has_tinyllamas_shape_and_1_1b_parameters() -> None:
    config = meta_llama(TINYLLAMA).config
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size) == (
        2048, 22, 5632, 32000,
    )  # fmt: skip
    assert (config.num_attention_heads, config.num_key_value_heads) == (32, 4)
    assert config.rope_parameters["rope_theta"] == 10000.0 and config.rms_norm_eps == 1e-5
    assert not config.tie_word_embeddings and TINYLLAMA.dtype == "bfloat16"
    assert parameter_count(TINYLLAMA) == 1_100_048_384  # TinyLlama-1.1B's count


def test_a_built_model_has_the_shape_dtype_and_init_stated() -> None:
    model = build_random_llama(SMALL, seed=0)
    assert model.dtype == torch.bfloat16 and not model.training
    assert model.model.layers[0].self_attn.q_proj.weight.shape == (8 * 16, 128)
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (1 * 16, 128)  # one key/value head of d_head 16
    assert model.model.layers[1].mlp.gate_proj.weight.shape == (352, 128)
    assert model.lm_head.weight.shape == (500, 128)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()  # untied, like TinyLlama
    assert all(not p.requires_grad for p in model.parameters())
    assert torch.equal(model.model.norm.weight, torch.ones(128, dtype=torch.bfloat16))
    assert model.model.layers[1].mlp.down_proj.weight.float().std().item() == pytest.approx(0.02, rel=0.05)
    # The rotary table is computed, not left as to_empty's uninitialized memory.
    fresh = build_random_llama(SMALL, seed=5).model.rotary_emb.inv_freq
    assert fresh.dtype == torch.float32
    assert torch.equal(model.model.rotary_emb.inv_freq, fresh)
    assert fresh[0] == 1.0 and fresh[1] == pytest.approx(10000.0 ** (-2 / 16))


def test_the_seed_fixes_the_weights() -> None:
    first, again, other = (build_random_llama(SMALL, seed=seed) for seed in (0, 0, 1))
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=True))
    assert not torch.equal(first.lm_head.weight, other.lm_head.weight)
    assert build_random_llama(SMALL, dtype=torch.float32).dtype == torch.float32


def test_the_id_tokenizer_spells_each_id_and_prepends_bos() -> None:
    tokenizer = id_tokenizer(500)
    assert len(tokenizer) == 500
    assert tokenizer("t7 t499")["input_ids"] == [1, 7, 499]
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<unk>", "<s>", "</s>", "t3"]


def test_a_random_bridge_runs_the_scaling_path() -> None:
    loaded = random_bridge(SMALL, name="random:small", device="cpu")
    assert loaded.info.dtype == "bfloat16" and loaded.info.source == "random:small (seed 0)"
    assert is_random_model(loaded.info.name)
    result = run_scaling(loaded, pairs=(2,), lengths=(6,), sites=("z",), reference=False, progress=io.StringIO())
    (run,) = result.runs
    assert result.parameters == sum(p.numel() for p in build_random_llama(SMALL).parameters())
    assert result.parameter_bytes == 2 * result.parameters
    assert [row.site for row in run.rows] == ["setup", "z"]
    assert run.to_json()["sweeps"]["z"]["peak_memory_bytes"] >= 0
