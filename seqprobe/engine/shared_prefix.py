"""Attention of many patch configurations over one shared prefix, without copying it per configuration.

Every configuration of a resumed batch computes only positions start.. (seqprobe.engine.resume);
its queries also attend to the keys and values of positions ..start-1, which no patch can change
and which are therefore the target run's, the same for every configuration. Concatenating those
cached keys and values to each configuration's own would copy them once per configuration and
layer. Here they are read as they are:

- scores: each configuration's queries against its own keys, and against the shared prefix keys in
  one product where the configurations ride along the query rows (batch = pair × key/value head,
  rows = configuration × group × query) — a large product instead of a copy;
- the two score blocks are concatenated along the keys (small: queries × keys), then turned into
  attention once over all keys by `ResumableForward.softmax_scores`, the rule `pattern` uses;
- the pattern's prefix columns mix the shared values in one product the same way, its own columns
  the configuration's values, and the two parts are added.

The result equals `ResumableForward.pattern` and `mix` over the concatenated keys and values up to
float rounding (the sum over keys is split in two); tests/engine/test_resume_batching.py checks it
on every architecture, soft-capping included.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from seqprobe.engine.forward import ResumableForward

__all__ = ["attend_after_prefix"]


def attend_after_prefix(
    forward: ResumableForward,
    layer: int,
    q: Float[Tensor, "row head q_pos d_head"],
    k: Float[Tensor, "row kv_head pos d_head"],
    v: Float[Tensor, "row kv_head pos d_head"],
    *,
    prefix_k: Float[Tensor, "pair kv_head prefix d_head"],
    prefix_v: Float[Tensor, "pair kv_head prefix d_head"],
    q_start: int,
) -> tuple[Float[Tensor, "row head q_pos k_pos"], Float[Tensor, "row q_pos head d_head"]]:
    """The pattern and the heads' outputs z of queries at q_start.. over the prefix's keys, then `k`'s.

    Rows are configuration-major (row = config * n_pair + pair); `k` and `v` sit at positions
    prefix.., right after the prefix, which every configuration shares. Key positions run
    0..prefix+pos-1, as in `ResumableForward.pattern`.
    """
    n_rows, n_heads, n_q, d_head = q.shape
    n_pair, n_kv, n_prefix, _ = prefix_k.shape
    n_config, n_own = n_rows // n_pair, k.shape[2]
    group = n_heads // n_kv
    # [config*pair head q d_head] -> [config pair kv_head group q d_head]: query heads by their key/value head
    grouped = q.view(n_config, n_pair, n_kv, group, n_q, d_head)
    own_keys = k.view(n_config, n_pair, n_kv, 1, n_own, d_head)  # [config pair kv_head 1 pos d_head]
    scores = grouped @ own_keys.transpose(-1, -2)  # [config pair kv_head group q own]
    if n_prefix:
        # [config pair kv group q d_head] -> [pair kv config*group*q d_head]: configurations as query rows
        riding = grouped.permute(1, 2, 0, 3, 4, 5).reshape(n_pair, n_kv, n_config * group * n_q, d_head)
        shared = riding @ prefix_k.transpose(-1, -2)  # [pair kv config*group*q prefix]
        # [pair kv config*group*q prefix] -> [config pair kv group q prefix]
        shared = shared.view(n_pair, n_kv, n_config, group, n_q, n_prefix).permute(2, 0, 1, 3, 4, 5)
        scores = torch.cat([shared, scores], dim=-1)  # [config pair kv group q prefix+own]
    n_keys = n_prefix + n_own
    # [config pair kv group q key] -> [row head q key]
    pattern = forward.softmax_scores(layer, scores.view(n_rows, n_heads, n_q, n_keys), q_start=q_start)

    # [row head q key] -> [config pair kv_head group q key]
    weights = pattern.view(n_config, n_pair, n_kv, group, n_q, n_keys)
    own_values = v.view(n_config, n_pair, n_kv, 1, n_own, d_head)  # [config pair kv_head 1 pos d_head]
    # The two partial mixes are summed in float32 and rounded once, as one product over all keys
    # accumulates and rounds: in bfloat16, rounding each part first would move a patched run away
    # from the run it copies (clean into clean would no longer recover exactly 1). No copy in float32.
    exact = torch.float32
    z = weights[..., n_prefix:].to(exact) @ own_values.to(exact)  # [config pair kv group q d_head]
    if n_prefix:
        # [config pair kv group q prefix] -> [pair kv config*group*q prefix]
        riding = weights[..., :n_prefix].permute(1, 2, 0, 3, 4, 5).reshape(n_pair, n_kv, -1, n_prefix)
        mixed = riding.to(exact) @ prefix_v.to(exact)  # [pair kv config*group*q d_head]
        # [pair kv config*group*q d_head] -> [config pair kv group q d_head]
        z = mixed.view(n_pair, n_kv, n_config, group, n_q, d_head).permute(2, 0, 1, 3, 4, 5) + z
    # [config pair kv group q d_head] -> [row q head d_head], `mix`'s layout
    return pattern, z.to(v.dtype).reshape(n_rows, n_heads, n_q, d_head).transpose(1, 2)
