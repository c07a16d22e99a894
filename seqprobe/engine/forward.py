"""A forward pass over a Hugging Face causal LM's own modules that can start in the middle.

Activation patching asks hundreds of times what the corrupted run's logits would be had one
activation taken its clean value; rerunning the whole model per patch (TransformerLens's way)
recomputes what is known. The pieces here let `seqprobe.engine.resume` start at any sublayer from
a cached residual stream, compute queries only for the positions a patch can change (reading the
earlier positions' keys and values from a cached run), and read out only the logits it needs.

The pieces call the model's own modules (norms, projections, MLPs, rotary tables), so the numbers
are the model's; only the attention core is written out, since that is where cached keys and values
come in. On a model split across devices or offloaded (a `device_map`), activations move to each
layer's device and weights are read through `seqprobe.engine.placement`. Architectures differ in a
few places, each a method of `ResumableForward` that the subclasses in `seqprobe.engine.architectures`
override (`resumable_forward` there picks one by `model_type`):

- Llama family (SmolLM2): RMSNorm, rotary positions, grouped-query attention.
- GPT-2: LayerNorm, learned positions, one fused Conv1D for q/k/v.
- Gemma 3: embeddings scaled by sqrt(d_model), RMSNorm on q and k, norms before *and* after each
  sublayer, per-layer rotary tables, sliding windows, `query_pre_attn_scalar`, logit soft-capping.

Every activation `run` records is what TransformerBridge's hook of the same name sees (Gemma 3's
`attn_out`/`mlp_out` after the post-sublayer norm, as the bridge places `hook_attn_out`); the
tests check each against `bridge.run_with_cache`. Layouts: `k`/`v` are `[batch kv_head pos d_head]`
(keys after q/k-norm and rotation, ready for attention; the bridge's `hook_v` is the transpose),
`z` is `[batch pos head d_head]`, `pattern` is `[batch head query_pos key_pos]`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from seqprobe.engine.placement import execution_device, is_offloaded, materialized, read_weights
from seqprobe.engine.rotary import RotaryTables, rope_type, rotate
from seqprobe.errors import PatchingError

__all__ = ["ACTIVATIONS", "ResumableForward", "Run"]

# Per-layer activations `ResumableForward.run` can record.
ACTIVATIONS = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "k", "v", "pattern", "z")


@dataclass(frozen=True)
class Run:
    """One full forward pass: the tokens, the recorded activations, the final residual stream."""

    tokens: Int[Tensor, "batch pos"]
    # Activation name -> one tensor per layer (layouts in the module docstring).
    acts: Mapping[str, tuple[Tensor, ...]]
    # The residual stream after the last block, before the final norm.
    resid_final: Float[Tensor, "batch pos d_model"]

    def __getitem__(self, key: tuple[str, int]) -> Tensor:
        name, layer = key
        return self.acts[name][layer]


class ResumableForward:
    """The Llama-family forward, in pieces; subclasses override what their architecture changes."""

    # GPT-2's Conv1D stores the output projection as [head*d_head d_model], nn.Linear as its transpose.
    _output_is_conv1d = False

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.config = model.config
        self.layers = self._layers()
        self.n_layers = len(self.layers)
        self.n_heads = int(self.config.num_attention_heads)
        self.n_kv_heads = int(getattr(self.config, "num_key_value_heads", None) or self.n_heads)
        self.d_model = int(self.config.hidden_size)
        self.d_head = int(getattr(self.config, "head_dim", None) or self.d_model // self.n_heads)
        # Where each layer computes: one device for a model in memory, several for a split one.
        self.layer_devices = tuple(execution_device(layer) for layer in self.layers)
        self._tables = RotaryTables(self._rotary_table)

    @property
    def device(self) -> torch.device:
        """Where logits are computed (the unembedding's execution device): metrics and readouts live there."""
        return execution_device(self.model.get_output_embeddings())

    def to_layer(self, layer: int, x: Tensor) -> Tensor:
        """`x` on `layer`'s execution device: the same tensor, not a copy, when it is there already."""
        return x.to(self.layer_devices[layer])

    # -- architecture-specific pieces ---------------------------------------------------------

    def _layers(self) -> nn.ModuleList:
        return self.model.model.layers

    def embed(self, tokens: Int[Tensor, "batch pos"], *, start: int = 0) -> Float[Tensor, "batch pos d_model"]:
        """The embedded tokens, which sit at positions start.. (only learned positions depend on it)."""
        return self.model.model.embed_tokens(tokens)

    def attention_input(self, layer: int, resid: Float[Tensor, "*batch pos d_model"]) -> Tensor:
        return self.layers[layer].input_layernorm(resid)

    def _attention(self, layer: int) -> nn.Module:
        return self.layers[layer].self_attn

    def _project_qkv(self, layer: int, x: Float[Tensor, "row pos d_model"]) -> tuple[Tensor, Tensor, Tensor]:
        attn = self._attention(layer)
        return attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)

    def _normalize_qk(self, layer: int, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return q, k

    def _rotary_key(self, layer: int) -> Any:
        return None

    def _rotary_table(self, positions: Int[Tensor, " pos"], key: Any) -> tuple[Tensor, Tensor]:
        dummy = torch.empty(0, dtype=self.model.dtype, device=positions.device)
        by_key = () if key is None else (key,)  # Gemma 3's module takes the layer type
        return self.model.model.rotary_emb(dummy, positions[None], *by_key)  # ([1 pos d_head], [1 pos d_head])

    def attention_output(self, layer: int, z: Float[Tensor, "*batch pos head d_head"]) -> Tensor:
        """What the attention sublayer adds to the residual stream, from the heads' outputs."""
        flat = z.reshape(*z.shape[:-2], self.n_heads * self.d_head)  # [*batch pos head*d_head]
        return self._output_projection(layer)(flat)

    def _output_projection(self, layer: int) -> nn.Module:
        return self._attention(layer).o_proj

    def output_weight(self, layer: int) -> Float[Tensor, "head d_head d_model"]:
        """The output projection split by head: a view, so writing to it changes the model (not offloaded)."""
        (weight,) = read_weights(self._output_projection(layer))  # [d_model head*d_head] (Linear)
        weight = weight if self._output_is_conv1d else weight.T  # [head*d_head d_model]
        return weight.view(self.n_heads, self.d_head, self.d_model)

    def mlp_output(self, layer: int, resid_mid: Float[Tensor, "*batch pos d_model"]) -> Tensor:
        """What the MLP sublayer adds to the residual stream."""
        block = self.layers[layer]
        return block.mlp(block.post_attention_layernorm(resid_mid))

    def final_norm(self, resid: Float[Tensor, "*batch d_model"]) -> Tensor:
        return self.model.model.norm(resid)

    def head_writes(
        self, layer: int, z: Float[Tensor, "*batch pos head d_head"]
    ) -> Float[Tensor, "*batch pos head d_model"]:
        """Each head's share of `attention_output` (which is their sum, plus any output bias)."""
        return torch.einsum("...hd,hdm->...hm", z, self.output_weight(layer))

    def zero_head(self, layer: int, head: int) -> None:
        """Ablate a head in the weights: zero its share of the output projection, so it writes nothing."""
        if is_offloaded(self._output_projection(layer)):
            raise PatchingError(
                f"cannot zero head L{layer}H{head}: layer {layer} is offloaded (device_map), so a write would "
                "change a copy loaded for one read; load the model without a device_map to ablate heads"
            )
        with torch.no_grad():
            self.output_weight(layer)[head] = 0.0

    def frozen_final_norm(
        self, components: Float[Tensor, "*batch component d_model"], total: Float[Tensor, "*batch d_model"]
    ) -> tuple[Float[Tensor, "*batch component d_model"], Float[Tensor, "*batch d_model"]]:
        """The final norm as the affine map it is at `total`'s statistics, on each component, and the
        constant (its bias) of none: components summing to `total` give normed + constant == final_norm(total)."""
        norm = self.model.model.norm
        (weight,) = read_weights(norm, device=components.device)
        scale = torch.rsqrt(total.float().pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return components * scale.unsqueeze(-2).to(components.dtype) * weight, torch.zeros_like(total)

    # -- shared pieces --------------------------------------------------------------------------

    def qkv(
        self, layer: int, normed: Float[Tensor, "row pos d_model"], *, start: int | Int[Tensor, " row"]
    ) -> tuple[
        Float[Tensor, "row head pos d_head"],
        Float[Tensor, "row kv_head pos d_head"],
        Float[Tensor, "row kv_head pos d_head"],
    ]:
        """Queries and keys ready for attention (normed, rotated) and values, for positions start.. ;
        `start` per row gives rows of one position each their own (a prefix tree's nodes)."""
        q, k, v = self._project_qkv(layer, normed)
        rows, n_pos = normed.shape[:2]
        # [row pos heads*d_head] -> [row heads pos d_head]
        q = q.view(rows, n_pos, -1, self.d_head).transpose(1, 2)
        k = k.view(rows, n_pos, -1, self.d_head).transpose(1, 2)
        v = v.view(rows, n_pos, -1, self.d_head).transpose(1, 2)
        q, k = self._normalize_qk(layer, q, k)
        table = self._rotary(layer, start, n_pos, device=q.device)
        if table is not None:
            cos, sin = table  # broadcast over rows and heads
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        return q, k, v

    def _rotary(
        self, layer: int, start: int | Int[Tensor, " row"], n_pos: int, *, device: torch.device
    ) -> tuple[Tensor, Tensor] | None:
        """cos and sin of positions start.., [pos d_head] each, or of each row's own, [row 1 1 d_head] each."""
        key = self._rotary_key(layer)
        kind = rope_type(self.model.model.rotary_emb, key)
        if isinstance(start, Tensor):
            rows = start.to(device)
            cos, sin = self._tables(key, 0, int(rows.max()) + 1, device=device, kind=kind)
            return cos[rows, None, None], sin[rows, None, None]
        return self._tables(key, start, start + n_pos, device=device, kind=kind)

    def pattern(
        self,
        layer: int,
        q: Float[Tensor, "row head q_pos d_head"],
        k: Float[Tensor, "row kv_head k_pos d_head"],
        *,
        q_start: int,
    ) -> Float[Tensor, "row head q_pos k_pos"]:
        """Softmaxed attention of queries at positions q_start.. over keys at positions 0..k_pos-1."""
        rows, _, n_q, _ = q.shape
        # Grouped-query attention without copying keys: [row kv_head group q_pos d_head]
        grouped = q.view(rows, self.n_kv_heads, self.n_heads // self.n_kv_heads, n_q, self.d_head)
        scores = grouped @ k.unsqueeze(2).transpose(-1, -2)  # [row kv group q k]
        return self.softmax_scores(layer, scores.view(rows, self.n_heads, n_q, k.shape[-2]), q_start=q_start)

    def softmax_scores(
        self, layer: int, scores: Float[Tensor, "row head q_pos k_pos"], *, q_start: int
    ) -> Float[Tensor, "row head q_pos k_pos"]:
        """Raw query·key scores as attention: scaled, soft-capped, masked (causal, sliding window), softmaxed."""
        attn = self._attention(layer)
        scores = scores * attn.scaling
        softcap = getattr(attn, "attn_logit_softcapping", None)
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        n_q, n_k = scores.shape[-2:]
        q_positions = torch.arange(q_start, q_start + n_q, device=scores.device)
        k_positions = torch.arange(n_k, device=scores.device)
        visible = k_positions[None, :] <= q_positions[:, None]  # [q_pos k_pos]
        window = getattr(attn, "sliding_window", None)
        if window is not None:
            visible &= k_positions[None, :] > q_positions[:, None] - window
        scores = scores.masked_fill(~visible, float("-inf"))
        return torch.softmax(scores, dim=-1, dtype=torch.float32).to(scores.dtype)

    def mix(
        self, pattern: Float[Tensor, "row head q_pos k_pos"], v: Float[Tensor, "row kv_head k_pos d_head"]
    ) -> Float[Tensor, "row q_pos head d_head"]:
        """Each head's output z: its pattern applied to its (possibly shared) values."""
        rows, _, n_q, n_k = pattern.shape
        group = self.n_heads // self.n_kv_heads
        grouped = pattern.view(rows, self.n_kv_heads, group, n_q, n_k)
        z = grouped @ v.unsqueeze(2)  # [row kv_head group q_pos d_head]
        return z.view(rows, self.n_heads, n_q, self.d_head).transpose(1, 2)

    def unembed(
        self, resid: Float[Tensor, "*batch d_model"], token_ids: Int[Tensor, "*batch k"], *, normed: bool = False
    ) -> Float[Tensor, "*batch k"]:
        """The logits of `token_ids` only (the rows a metric needs); `normed`: resid is past the final norm."""
        rows, bias = self.unembedding_rows(token_ids)
        stream = (resid if normed else self.final_norm(resid)).to(rows.device)
        logits = (stream.unsqueeze(-2) * rows).sum(-1)
        return self._soft_cap(logits if bias is None else logits + bias)

    def unembedding_rows(self, token_ids: Int[Tensor, "*batch k"]) -> tuple[Tensor, Tensor | None]:
        """The unembedding's rows for `token_ids` [*batch k d_model], and its bias there [*batch k] (or None)."""
        with materialized(head := self.model.get_output_embeddings()):
            bias = getattr(head, "bias", None)
            return head.weight[token_ids], None if bias is None else bias[token_ids]

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def logits(self, resid: Float[Tensor, "*batch d_model"], *, normed: bool = False) -> Float[Tensor, "*batch vocab"]:
        """Every token's logit (a log-probability's normalizer reads them all); `normed` as in `unembed`."""
        return self._soft_cap(self.model.get_output_embeddings()(resid if normed else self.final_norm(resid)))

    def _soft_cap(self, logits: Tensor) -> Tensor:
        softcap = getattr(self.config, "final_logit_softcapping", None)
        return logits if softcap is None else torch.tanh(logits / softcap) * softcap

    def run(
        self, tokens: Int[Tensor, "batch pos"], *, keep: Collection[str] = ACTIVATIONS, differentiable: bool = False
    ) -> Run:
        """The whole model on `tokens`, recording the activations named in `keep`. `differentiable` makes
        every activation carry a gradient (the embedding output becomes a leaf); call it under grad mode."""
        unknown = set(keep) - set(ACTIVATIONS)
        if unknown:
            raise ValueError(f"unknown activations {sorted(unknown)}; choose from {ACTIVATIONS}")
        acts: dict[str, list[Tensor]] = {name: [] for name in keep}

        def record(name: str, value: Tensor) -> Tensor:
            if name in acts:
                acts[name].append(value)
            return value

        resid = self.embed(tokens.to(execution_device(self.model.get_input_embeddings())))
        if differentiable:
            resid = resid.detach().requires_grad_()
        for layer in range(self.n_layers):
            resid = record("resid_pre", self.to_layer(layer, resid))
            q, k, v = self.qkv(layer, self.attention_input(layer, resid), start=0)
            record("k", k)
            record("v", v)
            pattern = record("pattern", self.pattern(layer, q, k, q_start=0))
            z = record("z", self.mix(pattern, v))
            resid = record("resid_mid", resid + record("attn_out", self.attention_output(layer, z)))
            resid = resid + record("mlp_out", self.mlp_output(layer, resid))
        return Run(tokens=tokens, acts={name: tuple(values) for name, values in acts.items()}, resid_final=resid)
