"""The architectures the resumable forward covers beyond the Llama family, and the pick by `model_type`.

`seqprobe.engine.forward.ResumableForward` is the Llama-family forward; each subclass here overrides
the pieces its architecture changes (see that module's docstring for what differs), and the tests
compare every one with TransformerBridge.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor, nn

from seqprobe.engine.forward import ResumableForward
from seqprobe.engine.placement import read_weights
from seqprobe.errors import PatchingError

__all__ = ["SUPPORTED_MODEL_TYPES", "resumable_forward"]


class _GPT2Forward(ResumableForward):
    """GPT-2: LayerNorm, learned positions added to the embedding, one fused q/k/v Conv1D."""

    _output_is_conv1d = True

    def _layers(self) -> nn.ModuleList:
        return self.model.transformer.h

    def embed(self, tokens: Int[Tensor, "batch pos"], *, start: int = 0) -> Tensor:
        transformer = self.model.transformer
        positions = torch.arange(start, start + tokens.shape[-1], device=tokens.device)
        return transformer.wte(tokens) + transformer.wpe(positions)

    def attention_input(self, layer: int, resid: Tensor) -> Tensor:
        return self.layers[layer].ln_1(resid)

    def _project_qkv(self, layer: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.layers[layer].attn.c_attn(x).split(self.d_model, dim=-1)
        return q, k, v

    def _rotary(self, layer: int, start: int | Tensor, n_pos: int, *, device: torch.device) -> None:
        return None

    def _attention(self, layer: int) -> nn.Module:
        return self.layers[layer].attn

    def mlp_output(self, layer: int, resid_mid: Tensor) -> Tensor:
        block = self.layers[layer]
        return block.mlp(block.ln_2(resid_mid))

    def final_norm(self, resid: Tensor) -> Tensor:
        return self.model.transformer.ln_f(resid)

    def _output_projection(self, layer: int) -> nn.Module:
        return self.layers[layer].attn.c_proj

    def frozen_final_norm(self, components: Tensor, total: Tensor) -> tuple[Tensor, Tensor]:
        # LayerNorm centres each component (linear), scales by the total's 1/std, then adds its bias.
        norm = self.model.transformer.ln_f
        weight, bias = read_weights(norm, "weight", "bias", device=components.device)
        scale = torch.rsqrt(total.var(-1, unbiased=False, keepdim=True) + norm.eps).unsqueeze(-2)
        centred = components - components.mean(-1, keepdim=True)
        return centred * scale * weight, bias.expand_as(total)


class _Gemma3Forward(ResumableForward):
    """Gemma 3: q/k RMSNorm, a norm after each sublayer too, a rotary table per layer type."""

    def _normalize_qk(self, layer: int, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        attn = self._attention(layer)
        return attn.q_norm(q), attn.k_norm(k)

    def _rotary_key(self, layer: int) -> Any:
        return self.config.layer_types[layer]

    def attention_output(self, layer: int, z: Tensor) -> Tensor:
        return self.layers[layer].post_attention_layernorm(super().attention_output(layer, z))

    def head_writes(self, layer: int, z: Tensor) -> Tensor:
        # The post-attention norm acts on the heads' sum; frozen at that sum's scale it is linear.
        raw = super().head_writes(layer, z)  # [*batch pos head d_model]
        return _frozen_rms(self.layers[layer].post_attention_layernorm, raw, raw.sum(-2))

    def frozen_final_norm(self, components: Tensor, total: Tensor) -> tuple[Tensor, Tensor]:
        return _frozen_rms(self.model.model.norm, components, total), torch.zeros_like(total)

    def mlp_output(self, layer: int, resid_mid: Tensor) -> Tensor:
        block = self.layers[layer]
        return block.post_feedforward_layernorm(block.mlp(block.pre_feedforward_layernorm(resid_mid)))


def _frozen_rms(norm: nn.Module, components: Tensor, total: Tensor) -> Tensor:
    """Gemma's RMSNorm, x * rsqrt(mean(x²) + eps) * (1 + w), at `total`'s scale, on each component."""
    (weight,) = read_weights(norm, device=components.device)
    scale = torch.rsqrt(total.float().pow(2).mean(-1, keepdim=True) + norm.eps).unsqueeze(-2)
    return (components.float() * scale * (1.0 + weight.float())).to(components.dtype)


# Hugging Face `config.model_type` -> the forward that reproduces it.
_FORWARDS: dict[str, type[ResumableForward]] = {
    "llama": ResumableForward,
    "gpt2": _GPT2Forward,
    "gemma3_text": _Gemma3Forward,
}
SUPPORTED_MODEL_TYPES = tuple(_FORWARDS)


def resumable_forward(model: nn.Module) -> ResumableForward:
    """The piecewise forward for a Hugging Face causal LM; PatchingError if its architecture is not covered."""
    model_type = getattr(model.config, "model_type", None)
    try:
        forward_class = _FORWARDS[model_type]
    except KeyError:
        raise PatchingError(
            f"seqprobe's patching engine has no forward for model_type={model_type!r}; it covers "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}. Use transformer_lens.patching for this model, or add a "
            "ResumableForward subclass in seqprobe/engine/architectures.py (tests compare it with TransformerBridge)"
        ) from None
    return forward_class(model)
