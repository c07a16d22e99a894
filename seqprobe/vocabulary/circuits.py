"""The words of circuit claims: components, how one is switched off, and which way a claim runs.

A *component* is a part of the model whose output can be replaced: a head's output (`L5H3`, the
`z` site), a block's attention output (`L5_attn`, `attn_out`), its MLP output (`L5_mlp`,
`mlp_out`), or the residual stream entering block 5 (`L5_resid`, `resid_pre`). The names are the
ones direct attribution prints (`component_label`), so a head or block read off a report can be
pasted into a claim.

An *ablation* says what a switched-off component outputs instead, since circuit scores change
with it: `resample` (its value in the corrupted prompt's run, pair by pair: what patching uses),
`mean` (its mean over a reference set of prompts, position by position), `zero`. Zeroing the
residual stream leaves the next norm nothing to scale, so `resid` takes `resample` or `mean` only.

A *direction*: `noising` switches components off in the clean run (is the component necessary?);
`denoising` starts from the run with the whole scope switched off and gives the components their
clean values back (does what they carry suffice?). A *scope* is the set of components a circuit
is drawn from and everything outside a circuit is switched off in: its heads, or its heads and MLPs.

A *path* runs from sender heads to a receiver: a later head's query, key or value input, or the
logits directly (`PATH_INPUTS`, `LOGITS`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from seqprobe.vocabulary.heads import component_label, format_head

__all__ = [
    "ABLATION_METHODS",
    "COMPONENT_KINDS",
    "COMPONENT_SITES",
    "DIRECTIONS",
    "LOGITS",
    "PATH_INPUTS",
    "SCOPES",
    "SUPPORTED_ABLATIONS",
    "Component",
    "ComponentKind",
    "parse_component",
]

ComponentKind = Literal["head", "attn", "mlp", "resid"]
COMPONENT_KINDS: tuple[ComponentKind, ...] = ("head", "attn", "mlp", "resid")
# The patching site whose activation a component's ablation replaces (seqprobe.vocabulary.sites).
COMPONENT_SITES: Mapping[str, str] = MappingProxyType(
    {"head": "z", "attn": "attn_out", "mlp": "mlp_out", "resid": "resid_pre"}
)
ABLATION_METHODS = ("resample", "mean", "zero")
SUPPORTED_ABLATIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"head": ABLATION_METHODS, "attn": ABLATION_METHODS, "mlp": ABLATION_METHODS, "resid": ("resample", "mean")}
)
DIRECTIONS = ("noising", "denoising")
# Which components a circuit is drawn from; the others always compute normally.
SCOPES: Mapping[str, frozenset[str]] = MappingProxyType(
    {"heads": frozenset({"head"}), "heads_and_mlps": frozenset({"head", "mlp"})}
)
# A path's receiver: a later head's query, key or value input, or the logits.
PATH_INPUTS = ("q", "k", "v")
LOGITS = "logits"

_COMPONENT = re.compile(r"L(?P<layer>\d+)(?:H(?P<head>\d+)|_(?P<part>attn|mlp|resid))")


@dataclass(frozen=True, order=True)
class Component:
    """One replaceable part of the model: a head, or a block's attention, MLP or incoming residual stream."""

    layer: int
    kind: ComponentKind
    # The head's index for kind "head", None otherwise.
    head: int | None = None

    @property
    def name(self) -> str:
        """ "L5H3", "L5_attn", "L5_mlp", "L5_resid": what `parse_component` reads."""
        if self.kind == "head":
            assert self.head is not None
            return format_head(self.layer, self.head)
        return component_label(self.layer, self.kind)

    @property
    def site(self) -> str:
        return COMPONENT_SITES[self.kind]


def parse_component(text: str) -> Component | None:
    """ "L5H3" -> a head, "L5_mlp" -> an MLP ...; None for anything else (the caller says what was expected)."""
    match = _COMPONENT.fullmatch(text)
    if match is None:
        return None
    layer = int(match["layer"])
    if match["head"] is not None:
        return Component(layer=layer, kind="head", head=int(match["head"]))
    return Component(layer=layer, kind=match["part"])
