"""One validation toolkit for every kind of case: each check raises a CaseFileError that says what
was expected, what was found (`name=value`), where (file:line) and, for a near miss, what was meant.

Every kind's parser validates with these, so a wrong key, type, number, sequence or placeholder
reads the same in a completion case, a patching claim or a phrasing family.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from seqprobe.casefiles.sequences import FILTERS, CyclicSequence, find_placeholders
from seqprobe.casefiles.yamlsource import SourceMap, line_of
from seqprobe.errors import CaseFileError

__all__ = [
    "check_keys",
    "check_placeholders",
    "describe",
    "get_number",
    "get_str",
    "get_str_list",
    "lookup_sequence",
    "parse_numbers",
    "require_map",
    "suggest",
]


def suggest(word: str, choices: Iterable[str]) -> str:
    """ " (did you mean 'answer'?)" for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_keys(path: str, node: SourceMap, allowed: Iterable[str], *, where: str) -> None:
    allowed = sorted(allowed)
    for key in node:
        if key not in allowed:
            raise CaseFileError(
                f"unknown key {key!r} in {where}{suggest(key, allowed)}; allowed keys: {', '.join(allowed)}",
                path=path,
                line=line_of(node, key),
            )


def require_map(path: str, node: Any, *, where: str, line: int) -> SourceMap:
    if not isinstance(node, SourceMap):
        raise CaseFileError(
            f"{where} must be a mapping (key: value lines), found {describe(node)}", path=path, line=line
        )
    return node


def get_str(path: str, node: SourceMap, key: str, *, where: str, required: bool = True) -> str | None:
    if key not in node:
        if required:
            raise CaseFileError(f"{where} is missing required key {key!r}", path=path, line=line_of(node))
        return None
    value = node[key]
    if not isinstance(value, str):
        raise CaseFileError(
            f"{key} in {where} must be a string, found {describe(value)}; quote it", path=path, line=line_of(node, key)
        )
    return value


def get_str_list(path: str, node: SourceMap, key: str, *, where: str) -> tuple[str, ...]:
    value = node.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise CaseFileError(
            f"{key} in {where} must be a list of strings, found {describe(value)}", path=path, line=line_of(node, key)
        )
    return tuple(value)


def get_number(
    path: str, node: SourceMap, key: str, *, where: str, integer: bool = False, least: float | None = None
) -> Any:
    """`node[key]` as a number (a whole one with `integer`), at least `least` when given; never a bool."""
    value = node[key]
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or (least is not None and value < least):
        wanted = "a whole number" if integer else "a number"
        bound = f" ≥ {least:g}" if least is not None else ""
        raise CaseFileError(
            f"{key} in {where} must be {wanted}{bound}, found {key}={describe(value)}",
            path=path,
            line=line_of(node, key),
        )
    return value


def parse_numbers(path: str, node: Any, *, where: str, line: int, kinds: Mapping[str, type]) -> dict[str, float]:
    """Parse a `{name: number}` mapping whose names and number types are given by `kinds`.

    An `int` kind is a whole number ≥ 1 (a rank); a `float` kind is any number.
    """
    mapping = require_map(path, node, where=where, line=line)
    check_keys(path, mapping, kinds, where=where)
    return {
        key: get_number(
            path, mapping, key, where=where, integer=kinds[key] is int, least=1 if kinds[key] is int else None
        )
        for key in mapping
    }


def lookup_sequence(
    path: str, node: SourceMap, variable: str, sequences: Mapping[str, CyclicSequence], *, key: str
) -> CyclicSequence:
    """The sequence `node[variable]` names under `key:` (for_each, over), or an error listing the known ones."""
    name = node[variable]
    if not isinstance(name, str) or name not in sequences:
        raise CaseFileError(
            f"{key}: {variable}: unknown sequence {name!r}{suggest(str(name), sequences)}; known sequences: "
            f"{', '.join(sorted(sequences))} (define more under the file's `sequences:` key)",
            path=path,
            line=line_of(node, variable),
        )
    return sequences[name]


def check_placeholders(
    path: str,
    node: SourceMap,
    key: str,
    text: str,
    *,
    variables: Sequence[str],
    binders: str,
    slots: Collection[str] = (),
    where: str = "",
) -> None:
    """Each placeholder in `text` is a bound variable with a known filter, or a plain `{slot}`.

    `binders` says what binds variables ("for_each", "over and for_each"), for the message;
    `slots` are alternatives slots, allowed here only when given.
    """
    for placeholder in find_placeholders(text):
        name = placeholder.name
        if name in slots:
            if placeholder.text != "{" + name + "}":
                raise CaseFileError(
                    f"{placeholder.text} in {key}: alternatives slots take no arithmetic or filter; write {{{name}}}",
                    path=path,
                    line=line_of(node, key),
                )
            continue
        if name not in variables:
            bound = ", ".join(variables) or f"nothing (add {binders.split()[0]}: {{VAR: SEQUENCE}})"
            also = f"; alternatives slots: {', '.join(slots)}" if slots else ""
            raise CaseFileError(
                f"placeholder {placeholder.text} in {where}{key} is not bound{suggest(name, [*variables, *slots])}; "
                f"{binders} bind{'s' * (' and ' not in binders)} {bound}{also}",
                path=path,
                line=line_of(node, key),
            )
        if placeholder.filter is not None and placeholder.filter not in FILTERS:
            raise CaseFileError(
                f"unknown filter |{placeholder.filter} in {placeholder.text}; filters: {', '.join(FILTERS)}",
                path=path,
                line=line_of(node, key),
            )
