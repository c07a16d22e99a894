"""One validation toolkit for every kind of case: each check raises a CaseFileError that says what
was expected, what was found (`name=value`), where (file:line) and, for a near miss, what was meant.

Every kind's parser validates with these, so a wrong key, type, number, sequence or placeholder
reads the same in a completion case, a patching claim or a phrasing family. `parse_sequence`
reads one entry of a file's `sequences:` key into a cyclic or ordered word list, a number range
or a pool (`seqprobe.casefiles.sequences`).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from seqprobe.casefiles.sequences import FILTERS, NumberRange, Pool, WordList, WordSequence, find_placeholders
from seqprobe.casefiles.yamlsource import SourceList, SourceMap, line_of
from seqprobe.errors import CaseFileError
from seqprobe.vocabulary.metrics import Level

__all__ = [
    "SEQUENCE_FORMS",
    "check_keys",
    "check_placeholders",
    "describe",
    "get_number",
    "get_str",
    "get_str_list",
    "lookup_sequence",
    "parse_numbers",
    "parse_sequence",
    "require_map",
    "suggest",
]


def suggest(word: str, choices: Iterable[str]) -> str:
    """ " (did you mean 'answer'?)" for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(value: Any) -> str:
    """`value` and its YAML type, as a reader wrote it: 'x' (str), [1, 2] (list), {'a': 1} (mapping)."""
    kind = "list" if isinstance(value, list) else "mapping" if isinstance(value, dict) else type(value).__name__
    return f"{value!r} ({kind})"


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
    """Parse a `{name: value}` mapping whose names and kinds of value are given by `kinds`.

    An `int` kind is a whole number ≥ 1 (a rank); a `float` kind is any number; a `bool` kind is
    true or false (a flag such as `greedy`, kept as 1.0 or 0.0 beside the numbers); a `Level`
    is a probability strictly between 0 and 1 (`confidence`).
    """
    mapping = require_map(path, node, where=where, line=line)
    check_keys(path, mapping, kinds, where=where)
    return {key: _parse_value(path, mapping, key, kinds[key], where=where) for key in mapping}


def _parse_value(path: str, node: SourceMap, key: str, kind: type, *, where: str) -> float:
    value = node[key]
    if kind is bool:
        if not isinstance(value, bool):
            raise CaseFileError(
                f"{key} in {where} must be true or false, found {key}={describe(value)}",
                path=path,
                line=line_of(node, key),
            )
        return float(value)
    number = get_number(path, node, key, where=where, integer=kind is int, least=1 if kind is int else None)
    if kind is Level and not 0.0 < number < 1.0:
        raise CaseFileError(
            f"{key} in {where} is an interval's level, strictly between 0 and 1 (e.g. 0.95), found {key}={number!r}",
            path=path,
            line=line_of(node, key),
        )
    return number


def lookup_sequence(
    path: str, node: SourceMap, variable: str, sequences: Mapping[str, WordSequence], *, key: str
) -> WordSequence:
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


# A `sequences:` entry in mapping form gives exactly one of these, with the keys that fit it.
SEQUENCE_FORMS = {"elements": ("wrap",), "range": ("step", "wrap"), "pool": ()}


def parse_sequence(path: str, name: str, node: Any, *, line: int) -> WordSequence:
    """One entry of a file's `sequences:`, at `line`.

    A plain list is cyclic, as it always was (`seasons: [Spring, Summer, Autumn, Winter]`). A
    mapping gives one form: `elements: [...]` (ordered; `wrap: true` makes it cyclic),
    `range: [first, last]` (whole numbers, both ends included; `step:`, and `wrap: true`), or
    `pool: [...]` (no order: distinct draws, no `{name+1}`). Only a plain list wraps unless told.
    """
    where = f"sequence {name!r}"
    if isinstance(node, list):
        return _construct(path, line, WordList, name, _words(path, node, where=where, line=line), wrap=True)
    if not isinstance(node, SourceMap):
        raise CaseFileError(
            f"{where} is a list of words (cyclic) or a mapping with elements:, range: or pool:, found {describe(node)}",
            path=path,
            line=line,
        )
    check_keys(path, node, {key for form, keys in SEQUENCE_FORMS.items() for key in (form, *keys)}, where=where)
    forms = [form for form in SEQUENCE_FORMS if form in node]
    if len(forms) != 1:
        found = f"both {forms[0]} and {forms[1]}" if forms else "none of them"
        raise CaseFileError(
            f"{where} gives one of elements: [words] (ordered), range: [first, last] (whole numbers) or "
            f"pool: [words] (no order); it gives {found}",
            path=path,
            line=line_of(node, forms[1] if len(forms) > 1 else None),
        )
    (form,) = forms
    for key in node:
        if key != form and key not in SEQUENCE_FORMS[form]:
            belongs = "a pool's elements have no order" if form == "pool" else f"{key} belongs to a range"
            raise CaseFileError(
                f"{key} does not apply to {form}: in {where}; {belongs}", path=path, line=line_of(node, key)
            )
    wrap = node.get("wrap", False)
    if not isinstance(wrap, bool):
        raise CaseFileError(
            f"wrap in {where} is true or false, found wrap={describe(wrap)}", path=path, line=line_of(node, "wrap")
        )
    if form == "pool":
        return _construct(path, line, Pool, name, _words(path, node["pool"], where=where, line=line_of(node, "pool")))
    if form == "elements":
        words = _words(path, node["elements"], where=where, line=line_of(node, "elements"))
        return _construct(path, line, WordList, name, words, wrap=wrap)
    ends = node["range"]
    if not (
        isinstance(ends, list)
        and len(ends) == 2
        and all(isinstance(end, int) and not isinstance(end, bool) for end in ends)
    ):
        raise CaseFileError(
            f"range in {where} is [first, last], two whole numbers with both ends included, found range={ends!r}",
            path=path,
            line=line_of(node, "range"),
        )
    step = get_number(path, node, "step", where=where, integer=True) if "step" in node else 1
    return _construct(path, line_of(node, "range"), NumberRange, name, ends[0], ends[1], step=step, wrap=wrap)


def _words(path: str, node: Any, *, where: str, line: int) -> tuple[str, ...]:
    if not isinstance(node, list) or len(node) < 2:
        raise CaseFileError(
            f"{where} must be a list of at least two strings, found {describe(node)}", path=path, line=line
        )
    lines = node.item_lines if isinstance(node, SourceList) else [line] * len(node)
    for position, (word, word_line) in enumerate(zip(node, lines, strict=True), start=1):
        if not isinstance(word, str):
            raise CaseFileError(
                f"{where}: element {position} is {describe(word)}, not a string; quote it"
                " (or write whole numbers as range: [first, last])",
                path=path,
                line=word_line,
            )
    return tuple(node)


def _construct(path: str, line: int, kind: type[WordSequence], *args: Any, **kwargs: Any) -> WordSequence:
    """`kind(*args, **kwargs)`, its ValueError (a repeated word, a range that misses its end) at `line`."""
    try:
        return kind(*args, **kwargs)
    except ValueError as error:
        raise CaseFileError(str(error), path=path, line=line) from None


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
