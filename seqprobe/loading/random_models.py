"""Random-weight models with a real model's shape, built in memory from a seed: no download, no file.

What a patching sweep costs depends on a model's shape (layers, heads, widths, vocabulary) and
dtype, not on what its weights learned. So `seqprobe bench` can measure the engine on a ~1B model
without fetching one: `random:tinyllama-1.1b` is TinyLlama-1.1B's shape (22 layers, d_model 2048,
32 query heads sharing 4 key/value heads, MLP width 5632, 32,000 tokens, rotary theta 10,000, RMS
eps 1e-5, untied unembedding), 1.1B parameters, built in bfloat16 unless asked otherwise.

How it is built without holding two copies or spending minutes in initializers: the modules are
created on the meta device (no storage), given uninitialized storage once in the final dtype
(`to_empty`), and filled in place from one seeded generator, in `parameters()` order —
matrices from N(0, 0.02), transformers' `initializer_range` for Llama, and norm weights 1. The
rotary table, a buffer rather than a parameter, is computed afresh. The same seed and dtype give
the same weights. On the 2-core CPU this takes 10–15 s for the 1.1B shape (2.2 GB).

Its tokenizer knows no words: token `i` is spelled "t{i}" (ids 0, 1, 2 are `<unk>`, `<s>`, `</s>`,
Llama's layout, and `<s>` is prepended like Llama's BOS). It exists so the bridge can boot and
label positions; benchmarks on these models use token-level prompts
(`seqprobe.bench_scaling.token_pairs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import torch

from seqprobe.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from seqprobe.loading.models import LoadedModel

__all__ = [
    "RANDOM_MODELS",
    "RANDOM_PREFIX",
    "RandomLlama",
    "build_random_llama",
    "id_tokenizer",
    "is_random_model",
    "load_random_model",
    "meta_llama",
    "parameter_count",
    "random_bridge",
    "random_llama_config",
]

RANDOM_PREFIX = "random:"
# N(0, INIT_STD) for every matrix: transformers' LlamaConfig.initializer_range, the model's own init.
INIT_STD = 0.02
# The tokenizer's special tokens, at Llama's ids.
_SPECIAL = ("<unk>", "<s>", "</s>")


@dataclass(frozen=True)
class RandomLlama:
    """A Llama-family shape to build with random weights; field names are LlamaConfig's."""

    description: str
    hidden_size: int
    # The MLP's width: with the layer count, what sets the cost of every resumed lane.
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    # Grouped-query attention: fewer key/value heads than query heads, as the real model has.
    num_key_value_heads: int
    vocab_size: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 2048
    # TinyLlama unembeds with its own matrix (65M more parameters than tied embeddings would be).
    tie_word_embeddings: bool = False
    # The dtype it is built in when the command gives none: the one the real model ships in.
    dtype: str = "bfloat16"

    def scaled(self, **fields: int) -> RandomLlama:
        """The same shape with some fields changed (tests build small versions of a large one)."""
        from dataclasses import replace

        return replace(self, **fields)  # type: ignore[arg-type]


RANDOM_MODELS: Mapping[str, RandomLlama] = MappingProxyType(
    {
        "random:tinyllama-1.1b": RandomLlama(
            description="TinyLlama-1.1B's shape with random weights (seeded; built in memory, no download)",
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=22,
            num_attention_heads=32,
            num_key_value_heads=4,
            vocab_size=32000,
        ),
    }
)


def is_random_model(name: str) -> bool:
    return name.startswith(RANDOM_PREFIX)


def random_llama_config(shape: RandomLlama) -> LlamaConfig:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        rms_norm_eps=shape.rms_norm_eps,
        rope_theta=shape.rope_theta,
        tie_word_embeddings=shape.tie_word_embeddings,
        initializer_range=INIT_STD,
        bos_token_id=_SPECIAL.index("<s>"),
        eos_token_id=_SPECIAL.index("</s>"),
        pad_token_id=_SPECIAL.index("</s>"),
    )


def meta_llama(shape: RandomLlama) -> LlamaForCausalLM:
    """The model on the meta device: its modules and shapes, no storage (counting is free)."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(random_llama_config(shape))


def parameter_count(shape: RandomLlama) -> int:
    return sum(parameter.numel() for parameter in meta_llama(shape).parameters())


def build_random_llama(shape: RandomLlama, *, seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> LlamaForCausalLM:
    """The model on the CPU in `dtype`, its weights drawn from `seed` (see the module docstring), in eval mode."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    model = meta_llama(shape).to(dtype).to_empty(device="cpu")  # one copy, in the final dtype
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 1:  # RMSNorm weights
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, INIT_STD, generator=generator)
    # to_empty left the rotary buffers uninitialized; a fresh table is float32, as from_pretrained keeps it.
    model.model.rotary_emb = LlamaRotaryEmbedding(model.config)
    model.eval()
    model.requires_grad_(False)
    return model


def id_tokenizer(vocab_size: int, *, name: str = "random") -> PreTrainedTokenizerFast:
    """A tokenizer whose token `i` is the word "t{i}", with Llama's special tokens and BOS prepended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(_SPECIAL)}
    vocab.update({f"t{index}": index for index in range(len(_SPECIAL), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()  # joins words with spaces
    bos = _SPECIAL.index("<s>")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    # name_or_path and add_bos_token=True: TransformerBridge would otherwise reload the tokenizer by name.
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        name_or_path=name,
        add_bos_token=True,
    )


def load_random_model(
    name: str, *, device: str | None = None, dtype: torch.dtype | str | None = None, seed: int = 0
) -> LoadedModel:
    """`name` from `RANDOM_MODELS`, built and wrapped as `random_bridge` does; ModelLoadError for other names."""
    shape = RANDOM_MODELS.get(name)
    if shape is None:
        known = "; ".join(f"{known} ({model.description})" for known, model in RANDOM_MODELS.items())
        raise ModelLoadError(f"unknown random model {name!r}; the random models are: {known}")
    return random_bridge(shape, name=name, device=device, dtype=dtype, seed=seed)


def random_bridge(
    shape: RandomLlama,
    *,
    name: str,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    seed: int = 0,
) -> LoadedModel:
    """`shape` built from `seed` and wrapped in a TransformerBridge as `load_model` wraps a model.

    `dtype` None is the shape's own. The bridge is frozen in eval mode; `ModelInfo.source` records
    the seed, and sha256 is empty (there is no file).
    """
    from transformer_lens.model_bridge import TransformerBridge

    from seqprobe.loading.device_maps import placement_of
    from seqprobe.loading.models import LoadedModel, ModelInfo, parse_dtype, resolve_device

    device = resolve_device(device)
    torch_dtype = parse_dtype(dtype if dtype is not None else shape.dtype)
    # Built on the CPU and moved: the same weights on every device (CUDA's generator draws others).
    model = build_random_llama(shape, seed=seed, dtype=torch_dtype).to(device)
    tokenizer = id_tokenizer(shape.vocab_size, name=name)
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=model, tokenizer=tokenizer, device=device, dtype=torch_dtype
    )
    bridge.eval()
    bridge.requires_grad_(False)
    info = ModelInfo(
        name=name,
        source=f"{name} (seed {seed})",
        sha256="",
        dtype=str(torch_dtype).removeprefix("torch."),
        device=placement_of(bridge),
    )
    return LoadedModel(bridge=bridge, info=info)
