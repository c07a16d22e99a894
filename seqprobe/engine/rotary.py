"""Rotary position tables, computed once per table and sliced, and the rotation that applies them.

Every attention step of a resumed run needs cos and sin of its positions. Asking the model's rotary
embedding each time (what the engine did before) recomputes the same numbers for every layer and
every patch. The angle of position p at frequency f is p·f, computed elementwise (transformers'
rotary modules do `position_ids[..., None].float() * inv_freq`), then cos, sin and the
attention scaling are elementwise too; so rows p of the table computed for positions 0..n-1 are
bit-identical to the table computed for positions p alone, and `RotaryTables` slices one table per
key (Gemma 3 has one per layer type) and device.

That holds only while the table does not depend on which positions are asked for. "dynamic" and
"longrope" scaling rescale the frequencies by the longest position of the call, so for those the
model's rotary embedding is called for exactly the positions asked, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

__all__ = ["RotaryTables", "rope_type", "rotate"]

# Computes ([1 pos d_head] cos, [1 pos d_head] sin) for 1-D positions and a rotary key.
TableFunction = Callable[[Int[Tensor, " pos"], Any], tuple[Tensor, Tensor]]


def rope_type(rotary_emb: nn.Module, key: Any) -> str:
    """The rope type of `key`'s table: Llama's module has one, Gemma 3's one per layer type."""
    kind = getattr(rotary_emb, "rope_type", "default")
    return str(kind.get(key, "default") if isinstance(kind, Mapping) else kind)


def _static(kind: str) -> bool:
    return "dynamic" not in kind and kind != "longrope"


class RotaryTables:
    """cos and sin tables per (rotary key, device), grown when a later call needs further positions."""

    def __init__(self, compute: TableFunction) -> None:
        self._compute = compute
        self._tables: dict[tuple[Any, torch.device], tuple[Tensor, Tensor]] = {}

    def __call__(
        self, key: Any, start: int, stop: int, *, device: torch.device, kind: str
    ) -> tuple[Float[Tensor, "pos d_head"], Float[Tensor, "pos d_head"]]:
        """cos and sin of positions start..stop-1 on `device`, for a table of rope type `kind`."""
        if not _static(kind):
            cos, sin = self._compute(torch.arange(start, stop, device=device), key)
            return cos[0], sin[0]
        table = self._tables.get((key, device))
        if table is None or len(table[0]) < stop:
            # Doubling keeps a run that asks one position further each step (a decoding loop) linear.
            length = max(stop, 2 * len(table[0])) if table is not None else stop
            # Plain tensors outside autograd: one made under inference_mode could not be reused by
            # a later differentiable run (attribution patching).
            with torch.inference_mode(False), torch.no_grad():
                cos, sin = self._compute(torch.arange(length, device=device), key)  # [1 pos d_head] each
            table = self._tables[key, device] = (cos[0], sin[0])
        return table[0][start:stop], table[1][start:stop]


def rotate(x: Float[Tensor, "*batch pos d_head"], cos: Tensor, sin: Tensor) -> Float[Tensor, "*batch pos d_head"]:
    """Rotate queries or keys by their positions' angles (transformers' `apply_rotary_pos_emb`, one tensor)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
