"""Tiny, deterministic GPT-2 and Llama models (and a Llama GGUF) for fast tests.

The models are randomly initialised from a fixed seed, so their predictions mean nothing, but
they have the real architectures: what works on them works on the real models' code paths
(TransformerBridge hook names, grouped-query attention, tied embeddings, GGUF dequantization).

The tokenizer is a byte-level BPE built in code, like SmolLM2's and GPT-2's: any text tokenizes,
and every word in `WORDS` (" Monday", " January", " tomorrow", ...) is a single token, so the
case files under cases/ can run against these models. Words without a leading space ("Today" at
the start of a prompt) are split into characters, which is fine for a prompt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "WORDS",
    "build_tiny_gpt2",
    "build_tiny_llama",
    "build_tiny_tokenizer",
    "write_tiny_llama_gguf",
]

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
# Every word is spelled with its leading space: that is how a model sees a word mid-sentence.
WORDS: tuple[str, ...] = tuple(
    f" {word}"
    for word in (
        *DAYS,
        *MONTHS,
        *(str(n) for n in range(1, 32)),
        "it",
        "is",
        "was",
        "and",
        "the",
        "a",
        "of",
        "next",
        "day",
        "week",
        "month",
        "year",
        "today",
        "tomorrow",
        "yesterday",
        "now",
        "Today",
        "Now",
        "after",
        "before",
        "then",
    )  # fmt: skip
)

# Small enough to build in milliseconds, big enough to have several layers and heads.
N_LAYERS = 2
D_MODEL = 64
N_HEADS = 4
N_KV_HEADS = 2  # Llama only: two query heads share each key/value head, as in SmolLM2.
N_CTX = 128
SEED = 0

_ModelT = TypeVar("_ModelT", bound=PreTrainedModel)


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE, GPT-2 style (it adds no BOS itself), with each of `WORDS` one token."""
    vocab, merges = _vocab_and_merges()
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The special tokens, the 256 byte characters, then every prefix of every word in `WORDS`.

    Every merge extends a space-prefixed word by one character, so merges can only fire from the
    start of a space-prefixed piece and the result does not depend on merge order.
    """
    spell = bytes_to_unicode()  # byte -> the printable character byte-level BPE writes it as
    vocab = {token: index for index, token in enumerate((BOS, EOS, PAD))}
    for char in sorted(spell.values()):
        vocab[char] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        chars = [spell[byte] for byte in word.encode("utf-8")]
        prefix = chars[0]
        for char in chars[1:]:
            if prefix + char not in vocab:
                merges.append((prefix, char))
                vocab[prefix + char] = len(vocab)
            prefix += char
    return vocab, merges


def build_tiny_gpt2(path: str | Path | None = None) -> GPT2LMHeadModel:
    """A 2-layer GPT-2; saved with its tokenizer to `path` (safetensors) when given."""
    tokenizer = build_tiny_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=N_CTX,
        n_embd=D_MODEL,
        n_layer=N_LAYERS,
        n_head=N_HEADS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _build(GPT2LMHeadModel, config, tokenizer, path)


def build_tiny_llama(path: str | Path | None = None) -> LlamaForCausalLM:
    """A 2-layer Llama with grouped-query attention and tied embeddings, like SmolLM2."""
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=D_MODEL,
        intermediate_size=2 * D_MODEL,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=N_KV_HEADS,
        max_position_embeddings=N_CTX,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _build(LlamaForCausalLM, config, tokenizer, path)


def write_tiny_llama_gguf(path: str | Path) -> LlamaForCausalLM:
    """Write `build_tiny_llama()` as a float32 GGUF file at `path`; return the model it holds.

    Laid out as llama.cpp's converter writes a Llama: its tensor names, metadata keys, and the
    query/key rows permuted to llama.cpp's rotary layout (transformers undoes that on load), so
    loading the file must give back the model's logits exactly.
    """
    import gguf

    model = build_tiny_llama()
    vocab, merges = _vocab_and_merges()
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    tokens = list(vocab)  # insertion order is id order
    special = {BOS, EOS, PAD}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL for token in tokens])
    writer.add_token_merges([f"{left} {right}" for left, right in merges])
    writer.add_bos_token_id(vocab[BOS])
    writer.add_eos_token_id(vocab[EOS])
    writer.add_pad_token_id(vocab[PAD])
    writer.add_add_bos_token(False)

    for name, tensor in _gguf_tensors(model):
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def _gguf_tensors(model: LlamaForCausalLM) -> Iterator[tuple[str, np.ndarray]]:
    config = model.config
    state = {name: tensor.detach().float().numpy() for name, tensor in model.state_dict().items()}
    yield "token_embd.weight", state["model.embed_tokens.weight"]
    yield "output_norm.weight", state["model.norm.weight"]
    for layer in range(config.num_hidden_layers):
        hf, cpp = f"model.layers.{layer}.", f"blk.{layer}."
        yield cpp + "attn_norm.weight", state[hf + "input_layernorm.weight"]
        yield cpp + "attn_q.weight", _rotary_permute(state[hf + "self_attn.q_proj.weight"], config.num_attention_heads)
        yield cpp + "attn_k.weight", _rotary_permute(state[hf + "self_attn.k_proj.weight"], config.num_key_value_heads)
        yield cpp + "attn_v.weight", state[hf + "self_attn.v_proj.weight"]
        yield cpp + "attn_output.weight", state[hf + "self_attn.o_proj.weight"]
        yield cpp + "ffn_norm.weight", state[hf + "post_attention_layernorm.weight"]
        yield cpp + "ffn_gate.weight", state[hf + "mlp.gate_proj.weight"]
        yield cpp + "ffn_up.weight", state[hf + "mlp.up_proj.weight"]
        yield cpp + "ffn_down.weight", state[hf + "mlp.down_proj.weight"]


def _rotary_permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """HF's rotary layout (halves) -> llama.cpp's (interleaved pairs), as its converter does."""
    rows, cols = weight.shape
    # (n_heads * head_dim, d_model) -> (n_heads, 2, head_dim / 2, d_model) -> swap the middle axes
    halves = weight.reshape(n_heads, 2, rows // n_heads // 2, cols)
    return np.ascontiguousarray(halves.swapaxes(1, 2).reshape(rows, cols))


def _build(
    model_class: type[_ModelT],
    config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerFast,
    path: str | Path | None,
) -> _ModelT:
    with _seeded(SEED):
        model = model_class(config)
    model.eval()
    if path is not None:
        model.save_pretrained(path)  # safetensors
        tokenizer.save_pretrained(path)
    return model


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch for one block without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
