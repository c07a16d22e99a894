"""Names of heads, layers and components, parsed and formatted in one place.

A query head is `L5H3` (layer 5, head 3); a key/value head of a grouped-query model, which `v`
patching sweeps, is `L5KV1`. Layers in case files are integers (negative from the end) or
fractions of depth written with a decimal point (`0.66`), so one claim fits models of any depth.
"""

from __future__ import annotations

import re

__all__ = [
    "LayerSpec",
    "component_label",
    "format_head",
    "format_layer",
    "parse_head",
    "resolve_layer",
]

LayerSpec = int | float
_HEAD = re.compile(r"L(?P<layer>-?\d+)(?:H|KV)(?P<head>\d+)")


def parse_head(text: str) -> tuple[int, int] | None:
    """ "L5H3" -> (5, 3); "L5KV1" (a key/value head, for `v` on grouped-query models) -> (5, 1)."""
    match = _HEAD.fullmatch(text)
    return (int(match["layer"]), int(match["head"])) if match else None


def format_head(layer: int, head: int, *, key_value: bool = False) -> str:
    """The inverse of `parse_head`: (5, 3) -> "L5H3"; with `key_value`, "L5KV3"."""
    return f"{format_layer(layer)}{'KV' if key_value else 'H'}{head}"


def format_layer(layer: int) -> str:
    return f"L{layer}"


def component_label(layer: int, part: str) -> str:
    """A block's attention or MLP output, as direct attribution names it: "L3_attn", "L3_mlp"."""
    return f"{format_layer(layer)}_{part}"


def resolve_layer(spec: LayerSpec, n_layers: int, *, inclusive_end: bool = False) -> int:
    """A layer index from an int (negative from the end) or a float fraction of depth.

    With `inclusive_end`, 1.0 means one past the last block (the logit lens's final entry).
    """
    top = n_layers if inclusive_end else n_layers - 1
    if isinstance(spec, float):
        return min(int(spec * n_layers), top)
    return spec % (top + 1) if spec < 0 else min(spec, top)
