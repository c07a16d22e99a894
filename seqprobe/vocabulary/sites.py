"""Patching sites: where an activation is swapped, and the TransformerLens hook that carries it.

Position sites (`resid_pre`, `attn_out`, `mlp_out`) are patched per layer and position; head
sites (`z`, `v`, `pattern`) per layer and head. Positions are named `substituted` (the first token
where clean and corrupted differ) or `final`, or given as an index.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = [
    "HEAD_SITES",
    "HOOK_NAMES",
    "METHODS",
    "POSITION_NAMES",
    "POSITION_SITES",
    "SITES",
    "hook_name",
]

POSITION_SITES = ("resid_pre", "attn_out", "mlp_out")
HEAD_SITES = ("z", "v", "pattern")
SITES = (*POSITION_SITES, *HEAD_SITES)
POSITION_NAMES = ("substituted", "final")
# "exact" patching, or "attribution" patching (a gradient estimate, used only when asked by name).
METHODS = ("exact", "attribution")

# TransformerLens hook names per site; `{}` is the layer.
HOOK_NAMES = MappingProxyType(
    {
        "resid_pre": "blocks.{}.hook_resid_pre",
        "attn_out": "blocks.{}.hook_attn_out",
        "mlp_out": "blocks.{}.hook_mlp_out",
        "z": "blocks.{}.attn.hook_z",
        "v": "blocks.{}.attn.hook_v",
        "pattern": "blocks.{}.attn.hook_pattern",
    }
)


def hook_name(site: str, layer: int) -> str:
    """The TransformerLens hook of `site` in block `layer`: hook_name("z", 3) == "blocks.3.attn.hook_z"."""
    return HOOK_NAMES[site].format(layer)
