"""Named cyclic sequences and the placeholder arithmetic that templates use.

A template such as ``"Today it is {day}, tomorrow it is"`` with answer ``" {day+1}"`` expands over
every element of the ``days`` sequence; ``{day+1}`` is the successor with wrap-around, so Sunday
is followed by Monday and December by January. ``{day-1|lower}`` applies a case filter after the
arithmetic, which invariance checks use to vary capitalisation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = [
    "BUILTIN_SEQUENCES",
    "CyclicSequence",
    "Placeholder",
    "find_placeholders",
    "substitute",
]

FILTERS = ("lower", "upper", "title")

# {name}, {name+2}, {name-1}, {name+1|lower}; names are identifiers.
_PLACEHOLDER = re.compile(r"\{(?P<name>[A-Za-z_]\w*)(?P<offset>[+-]\d+)?(?:\|(?P<filter>\w+))?\}")


@dataclass(frozen=True)
class CyclicSequence:
    """An ordered, wrapping list of words: `at(i)` is defined for every integer i."""

    name: str
    elements: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.elements:
            raise ValueError(f"sequence {self.name!r} has no elements")
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"sequence {self.name!r} repeats an element: {list(self.elements)}")

    def __len__(self) -> int:
        return len(self.elements)

    def __iter__(self) -> Iterator[str]:
        return iter(self.elements)

    def at(self, index: int) -> str:
        return self.elements[index % len(self.elements)]

    def index(self, element: str) -> int:
        return self.elements.index(element)


BUILTIN_SEQUENCES: Mapping[str, CyclicSequence] = {
    sequence.name: sequence
    for sequence in (
        CyclicSequence(
            "days",
            ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
        ),
        CyclicSequence(
            "months",
            (
                "January",
                "February",
                "March",
                "April",
                "May",
                "June",
                "July",
                "August",
                "September",
                "October",
                "November",
                "December",
            ),
        ),
    )
}


@dataclass(frozen=True)
class Placeholder:
    """One `{name+offset|filter}` occurrence in a template string."""

    name: str
    offset: int
    filter: str | None
    text: str


def find_placeholders(template: str) -> tuple[Placeholder, ...]:
    return tuple(
        Placeholder(
            name=match["name"],
            offset=int(match["offset"] or 0),
            filter=match["filter"],
            text=match[0],
        )
        for match in _PLACEHOLDER.finditer(template)
    )


def _apply_filter(word: str, name: str | None) -> str:
    if name is None:
        return word
    return {"lower": str.lower, "upper": str.upper, "title": str.title}[name](word)


def substitute(
    template: str,
    bindings: Mapping[str, tuple[CyclicSequence, int]],
) -> str:
    """Replace every placeholder by its element; `bindings` maps a variable to (sequence, index).

    Unknown variables and filters are the case-file parser's job to reject with a location;
    here they raise KeyError so a bug cannot slip through silently.
    """

    def replace(match: re.Match[str]) -> str:
        sequence, index = bindings[match["name"]]
        word = sequence.at(index + int(match["offset"] or 0))
        filter_name = match["filter"]
        if filter_name is not None and filter_name not in FILTERS:
            raise KeyError(filter_name)
        return _apply_filter(word, filter_name)

    return _PLACEHOLDER.sub(replace, template)
