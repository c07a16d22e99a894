"""What every claim parser reads the same way: its `confidence:`, its heads, a word from a list.

The patch claims (`seqprobe.casefiles.claims`) and the circuit claims
(`seqprobe.casefiles.circuit_claims`) both take a `confidence:` and name heads; parsing them here
keeps one message for one mistake, whichever claim it is made in.
"""

from __future__ import annotations

from collections.abc import Sequence

from seqprobe.casefiles.base import EntryContext
from seqprobe.casefiles.validation import get_number, get_str, suggest
from seqprobe.casefiles.yamlsource import SourceMap
from seqprobe.vocabulary.heads import parse_head

__all__ = [
    "confidence_words",
    "optional_number",
    "parse_choice",
    "parse_confidence",
    "parse_heads",
    "require_keys",
]


def parse_confidence(ctx: EntryContext, node: SourceMap, *, where: str) -> float | None:
    """A claim's `confidence:`, the level whose interval bound judges it; None when it sets none."""
    if "confidence" not in node:
        return None
    confidence = float(get_number(ctx.path, node, "confidence", where=where))
    if not 0.0 < confidence < 1.0:
        raise ctx.error(
            f"confidence in {where} is the interval's level, between 0 and 1 (e.g. 0.95), found {confidence:g}",
            node,
            "confidence",
        )
    return confidence


def confidence_words(confidence: float | None) -> str:
    """What a claim's text adds for its confidence: " at 95% confidence", or nothing."""
    return "" if confidence is None else f" at {confidence:.0%} confidence"


def parse_heads(ctx: EntryContext, node: SourceMap, key: str, *, where: str) -> tuple[tuple[int, int], ...]:
    """`node[key]`: one head name or a list of them (L5H3, or L5KV1 for a key/value head), as (layer, head)."""
    raw = node[key]
    names = raw if isinstance(raw, list) else [raw]
    heads = []
    for name in names:
        head = parse_head(name) if isinstance(name, str) else None
        if head is None:
            raise ctx.error(
                f"{key} in {where}: heads are written L<layer>H<head> (e.g. L5H3), found {name!r}", node, key
            )
        heads.append(head)
    return tuple(heads)


def parse_choice(
    ctx: EntryContext, node: SourceMap, key: str, choices: Sequence[str], *, where: str, default: str | None = None
) -> str | None:
    """`node[key]`, one of `choices` (did-you-mean on a near miss); `default` when the key is absent."""
    if key not in node:
        return default
    value = get_str(ctx.path, node, key, where=where)
    if value not in choices:
        raise ctx.error(
            f"{key} in {where} is one of {', '.join(choices)}, found {key}={value!r}{suggest(str(value), choices)}",
            node,
            key,
        )
    return value


def require_keys(ctx: EntryContext, node: SourceMap, keys: Sequence[str], *, where: str) -> None:
    """Each of `keys` is in `node`, or "`where` needs KEY" at its line."""
    for key in keys:
        if key not in node:
            raise ctx.error(f"{where} needs {key}", node)


def optional_number(ctx: EntryContext, node: SourceMap, key: str, *, where: str) -> float | None:
    """`node[key]` as a float when written (a bar a claim may leave out), else None."""
    return float(get_number(ctx.path, node, key, where=where)) if key in node else None
