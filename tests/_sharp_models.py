"""Three-layer random models whose patching effects are large: Llama (GQA), GPT-2, Gemma 3.

The default init of tests/_tiny_models.py gives logits of a few hundredths, so clean and corrupted
metrics differ by less than float32 noise magnified through recovery. Here every weight matrix is
drawn at a larger scale: attention is sharp, and patching moves the metric by tenths of a logit or
more, so an engine that differs from transformer_lens shows it. Gemma 3 gets a sliding window
shorter than the test prompts, so the window mask is exercised.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedModel

from tests._tiny_models import build_tiny_gpt2, build_tiny_llama, build_tiny_tokenizer

__all__ = ["ARCHITECTURES", "BUILDERS", "save_sharp_model"]


def _three_layers(base: Callable[[], PreTrainedModel], *, scale: float) -> PreTrainedModel:
    model = base()
    model.config.num_hidden_layers = 3
    return _sharpened(type(model)(model.config), scale=scale)


def _tiny_gemma3() -> PreTrainedModel:
    tokenizer = build_tiny_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
        # A window of 4 is shorter than the prompts, so the sliding-window mask matters.
        sliding_window=4, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return _sharpened(Gemma3ForCausalLM(config), scale=0.5)


def _sharpened(model: PreTrainedModel, *, scale: float) -> PreTrainedModel:
    """Random weight matrices of standard deviation `scale`: sharp attention, logits of several units."""
    generator = torch.Generator().manual_seed(0)
    # Gemma's norms multiply by (1 + w), the others by w.
    norm_centre = 0.0 if model.config.model_type.startswith("gemma") else 1.0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.ndim > 1:
                parameter.copy_(scale * noise)
            elif "norm" in name or "ln" in name:
                parameter.copy_(norm_centre + 0.5 * noise)
            else:
                parameter.copy_(0.1 * noise)
    return model.eval()


# Scales chosen so that clean and corrupted differ by tenths of a logit or more, without
# activations so large that float32 rounding reaches 1e-5.
BUILDERS: dict[str, Callable[[], PreTrainedModel]] = {
    "llama": lambda: _three_layers(build_tiny_llama, scale=0.3),
    "gpt2": lambda: _three_layers(build_tiny_gpt2, scale=0.5),
    "gemma3": _tiny_gemma3,
}
ARCHITECTURES = tuple(sorted(BUILDERS))


def save_sharp_model(arch: str, path: Path) -> Path:
    """Build `arch` ("llama", "gpt2", "gemma3") and save it with the tiny tokenizer to `path`, a model folder."""
    BUILDERS[arch]().save_pretrained(path)
    build_tiny_tokenizer().save_pretrained(path)
    return path
