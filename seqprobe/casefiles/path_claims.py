"""Path claims: the answer travels from sender heads along a path to a receiver, or to the logits.

    claims:
      - path: {from: L23H3, to: logits, min_recovery: 0.3}
      - path: {from: [L21H9, L22H2], to: {heads: [L25H1, L26H0], input: q}, min_recovery: 0.2}
      - path: {from: L21H9, to: {head: L25H1, input: k}, top_k: 3}

Path patching runs the corrupted prompt with the senders' outputs taken from the clean run, but
lets that change reach only the receivers' `input` (the query, key or value a later head reads:
q by default) or the logits directly; everything else sees the corrupted run. Recovery is read as
in activation patching: 1 when the path alone restores the clean logit difference. Receivers
given as `heads:` are patched together and must recover `min_recovery`; one receiver given as
`head:` must rank within the `top_k` of the sweep over every receiver of that input. A receiver
reads only what earlier layers wrote, so it sits in a later layer than every sender; a key/value
receiver of a grouped-query model is written `L5KV1` (input k or v). Layers count from 0 here,
so the order is checked when the file is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from seqprobe.casefiles.base import EntryContext
from seqprobe.casefiles.circuits import CircuitContext
from seqprobe.casefiles.claim_fields import (
    confidence_words,
    optional_number,
    parse_choice,
    parse_confidence,
    parse_heads,
    require_keys,
)
from seqprobe.casefiles.validation import check_keys, get_number, suggest
from seqprobe.casefiles.yamlsource import SourceMap
from seqprobe.vocabulary.circuits import LOGITS, PATH_INPUTS
from seqprobe.vocabulary.heads import format_head

__all__ = ["PathClaim", "parse_path"]


@dataclass(frozen=True)
class PathClaim:
    """Patching the senders along their path to the receivers recovers `min_recovery`, or ranks one receiver."""

    text: str
    line: int
    senders: tuple[tuple[int, int], ...]
    # "q", "k" or "v" (a receiving head's input), or LOGITS (no receivers).
    input: str
    receivers: tuple[tuple[int, int], ...] = ()
    # One receiver and the rank it must reach among every receiver of that input.
    top_k: int | None = None
    min_recovery: float | None = None
    confidence: float | None = None
    # The receivers are numbered among key/value heads (written L5KV1): k or v inputs of grouped-query models.
    key_value: bool = False


def _names(heads: Sequence[tuple[int, int]], *, key_value: bool = False) -> str:
    return "+".join(format_head(layer, head, key_value=key_value) for layer, head in heads)


def _path_heads(ctx: EntryContext, node: SourceMap, key: str, *, where: str) -> tuple[tuple[int, int], ...]:
    """Heads from layer 0 up (so a receiver's order against its senders is known now), each once."""
    heads = parse_heads(ctx, node, key, where=where)
    for layer, head in heads:
        if layer < 0:
            raise ctx.error(f"{key} in {where}: path heads count layers from 0, found layer {layer}", node, key)
        if heads.count((layer, head)) > 1:
            raise ctx.error(f"{key} in {where} lists {format_head(layer, head)} twice", node, key)
    return heads


def _written_key_value(node: SourceMap, key: str) -> list[bool]:
    raw = node[key]
    return ["KV" in str(name) for name in (raw if isinstance(raw, list) else [raw])]


def parse_path(ctx: EntryContext, node: SourceMap, *, where: str, line: int, setting: CircuitContext) -> PathClaim:
    """One `path:` claim; `setting` is unused (a path names heads, not circuits) but every circuit claim takes it."""
    check_keys(ctx.path, node, ("from", "to", "top_k", "min_recovery", "confidence"), where=where)
    require_keys(ctx, node, ("from", "to"), where=where)
    senders = _path_heads(ctx, node, "from", where=where)
    if any(_written_key_value(node, "from")):
        raise ctx.error(f"from in {where}: senders are heads' outputs, written L5H3; L5KV1 is a receiver", node, "from")
    fields: dict[str, Any] = {"senders": senders, "confidence": parse_confidence(ctx, node, where=where)}
    fields["min_recovery"] = optional_number(ctx, node, "min_recovery", where=where)
    to, froms = node["to"], _names(senders)
    if to == LOGITS:
        if "top_k" in node or "min_recovery" not in node:
            raise ctx.error(f"`to: logits` in {where} takes min_recovery (the direct path's share)", node, "to")
        text = f"path {froms} → logits recovers ≥ {fields['min_recovery']:g}"
        return PathClaim(text=text + confidence_words(fields["confidence"]), line=line, input=LOGITS, **fields)
    if not isinstance(to, SourceMap):
        raise ctx.error(
            f"to in {where} is `logits`, or a receiver {{heads: [L25H1, L26H0], input: q}} or "
            f"{{head: L25H1, input: q}}; found {to!r}{suggest(str(to), [LOGITS])}",
            node,
            "to",
        )
    check_keys(ctx.path, to, ("heads", "head", "input"), where=f"to in {where}")
    within = f"to in {where}"
    fields["input"] = parse_choice(ctx, to, "input", PATH_INPUTS, where=within, default="q")
    if ("heads" in to) == ("head" in to):
        raise ctx.error(f"{within} names `heads: [...]` (patched together) or `head:` with `top_k:`", node, "to")
    key = "heads" if "heads" in to else "head"
    fields["receivers"] = _path_heads(ctx, to, key, where=within)
    written = _written_key_value(to, key)
    if any(written) and (not all(written) or fields["input"] == "q"):
        raise ctx.error(
            f"{key} in {within}: L5KV1 names a key/value head of a grouped-query model, for input k or v, "
            f"written for every receiver; found input={fields['input']} with {to[key]!r}",
            to,
            key,
        )
    fields["key_value"] = any(written)
    _check_order(ctx, to, key, senders, fields["receivers"])
    receivers = f"{fields['input']} of {_names(fields['receivers'], key_value=fields['key_value'])}"
    if key == "heads":
        if "min_recovery" not in node or "top_k" in node:
            raise ctx.error(f"`heads:` in {within} takes min_recovery (patched together), not top_k", to, "heads")
        text = f"path {froms} → {receivers} together recovers ≥ {fields['min_recovery']:g}"
    else:
        if "top_k" not in node or "min_recovery" in node or len(fields["receivers"]) != 1:
            raise ctx.error(
                f"`head:` in {within} names one receiver, with top_k (its rank), not min_recovery", to, "head"
            )
        fields["top_k"] = int(get_number(ctx.path, node, "top_k", where=where, integer=True, least=1))
        text = f"path {froms} → {receivers} is among the top {fields['top_k']} {fields['input']} receivers"
    return PathClaim(text=text + confidence_words(fields["confidence"]), line=line, **fields)


def _check_order(
    ctx: EntryContext,
    node: SourceMap,
    key: str,
    senders: Sequence[tuple[int, int]],
    receivers: Sequence[tuple[int, int]],
) -> None:
    last = max(senders)
    for receiver in receivers:
        if receiver[0] <= last[0]:
            raise ctx.error(
                f"receiver {format_head(*receiver)} (layer {receiver[0]}) is not after sender "
                f"{format_head(*last)} (layer {last[0]}): a receiver reads only what earlier layers wrote; "
                f"name a receiver in layer {last[0] + 1} or later",
                node,
                key,
            )
