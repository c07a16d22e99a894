"""Named sequences, and the placeholder arithmetic that templates do with them.

A template such as ``"Today it is {day}, tomorrow it is"`` with answer ``" {day+1}"`` expands over
the elements of the ``days`` sequence. ``{day+1}`` is the element one step on; how a step behaves
depends on the kind of sequence:

- **cyclic** (``days``, ``months``, and a case file's plain lists): steps wrap around, so Sunday
  is followed by Monday and December by January.
- **ordered** (``letters``, ``number_words``, ``ordinals``, ``{elements: [...]}``, and ranges such
  as ``{range: [1900, 2100]}``): steps never wrap. In a template, a binding whose placeholder would
  step past either end is skipped: ``for_each: {n: number_words}`` with ``{n+1}`` makes no case for
  "twenty", and a template whose every binding is skipped is its case file's error
  (`seqprobe.casefiles.bindings` finds the bindings in range). In Python code, `at` outside the
  sequence raises `SequenceIndexError`.
- **pool** (``{pool: [Mary, John, Tom]}``): words to draw from, with no order, as in indirect
  object identification ("When Mary and John went to the store, John gave a drink to" → " Mary").
  ``{name+1}`` on a pool is a case-file error, and variables that draw from the same pool always
  take different elements.

``{day-1|lower}`` applies a case filter after the arithmetic, which invariance checks use to vary
capitalisation.
"""

from __future__ import annotations

import re
import string
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import KW_ONLY, dataclass
from types import MappingProxyType

from seqprobe.errors import SeqprobeError

__all__ = [
    "BUILTIN_SEQUENCES",
    "FILTERS",
    "NumberRange",
    "Placeholder",
    "Pool",
    "SequenceIndexError",
    "WordList",
    "WordSequence",
    "find_placeholders",
    "substitute",
]

FILTERS = ("lower", "upper", "title")

# {name}, {name+2}, {name-1}, {name+1|lower}; names are identifiers.
_PLACEHOLDER = re.compile(r"\{(?P<name>[A-Za-z_]\w*)(?P<offset>[+-]\d+)?(?:\|(?P<filter>\w+))?\}")


class SequenceIndexError(SeqprobeError, IndexError):
    """An index outside a sequence that does not wrap: names the sequence, the index and the valid range."""

    def __init__(self, sequence: WordSequence, index: int) -> None:
        self.sequence = sequence
        self.index = index
        super().__init__(
            f"index {index} is outside {sequence.kind} sequence {sequence.name!r}, which does not wrap: "
            f"valid indices are 0..{len(sequence) - 1} ({sequence.at(0)!r}..{sequence.at(len(sequence) - 1)!r})"
        )


class WordSequence(ABC):
    """A named, finite list of distinct words that a template variable ranges over."""

    name: str
    # True: steps wrap around (Sunday + 1 = Monday); False: the sequence stops at either end.
    wrap: bool
    # False for a pool: its elements can be drawn, but have no successor.
    ordered: bool

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _element(self, index: int) -> str:
        """The element at 0 <= index < len(self)."""

    @abstractmethod
    def index(self, word: str) -> int:
        """Where `word` is; ValueError when it is not an element."""

    def __iter__(self) -> Iterator[str]:
        return (self._element(index) for index in range(len(self)))

    def __contains__(self, word: object) -> bool:
        if not isinstance(word, str):
            return False
        try:
            self.index(word)
        except ValueError:
            return False
        return True

    @property
    def kind(self) -> str:
        """What messages call this kind of sequence: cyclic, ordered or pool."""
        return "pool" if not self.ordered else "cyclic" if self.wrap else "ordered"

    def at(self, index: int) -> str:
        """The element at `index`: modulo the length on a cyclic sequence; on any other,
        SequenceIndexError outside 0..len-1."""
        if self.wrap:
            return self._element(index % len(self))
        if not 0 <= index < len(self):
            raise SequenceIndexError(self, index)
        return self._element(index)


@dataclass(frozen=True)
class _Words(WordSequence):
    """Words stored as written, each once: what a list and a pool share."""

    name: str
    elements: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.elements:
            raise ValueError(f"sequence {self.name!r} has no elements")
        if len(set(self.elements)) != len(self.elements):
            repeated = sorted({word for word in self.elements if self.elements.count(word) > 1})
            raise ValueError(f"sequence {self.name!r} repeats {repeated}; each element must appear once")

    def __len__(self) -> int:
        return len(self.elements)

    def _element(self, index: int) -> str:
        return self.elements[index]

    def index(self, word: str) -> int:
        return self.elements.index(word)


@dataclass(frozen=True)
class WordList(_Words):
    """Words in the order written: cyclic (days, months, a file's plain list) or not (`wrap=False`: letters)."""

    _: KW_ONLY
    wrap: bool

    ordered = True


@dataclass(frozen=True)
class Pool(_Words):
    """Words with no order (names, objects): variables drawn from one pool take distinct elements."""

    wrap = False
    ordered = False


@dataclass(frozen=True)
class NumberRange(WordSequence):
    """The whole numbers first, first+step, ..., last (inclusive) as decimal strings ("1900".."2100").

    Elements are computed, never stored, so a range of a million years costs three integers.
    """

    name: str
    first: int
    last: int
    _: KW_ONLY
    step: int = 1
    wrap: bool = False

    ordered = True

    def __post_init__(self) -> None:
        where = f"sequence {self.name!r}: range [{self.first}, {self.last}]"
        if self.step == 0:
            raise ValueError(f"{where}: step must be a non-zero whole number, found step=0")
        if self.first == self.last:
            raise ValueError(f"{where} has one element; give a last different from the first")
        if (self.last - self.first) * self.step < 0:
            fix = "give a negative step (step: -1) to count down" if self.step > 0 else "give a positive step"
            raise ValueError(f"{where} runs against step={self.step}; {fix}")
        end = self.first + (self.last - self.first) // self.step * self.step
        if end != self.last:
            raise ValueError(
                f"{where} with step={self.step} stops at {end}, not {self.last}; "
                f"make the last {end} or {end + self.step}, or change the step"
            )

    def __len__(self) -> int:
        return (self.last - self.first) // self.step + 1

    def _element(self, index: int) -> str:
        return str(self.first + index * self.step)

    def index(self, word: str) -> int:
        try:
            value = int(word)
        except (TypeError, ValueError):
            raise ValueError(f"{word!r} is not in range {self.name!r}") from None
        position, rest = divmod(value - self.first, self.step)
        if str(value) != word or rest or not 0 <= position < len(self):
            raise ValueError(f"{word!r} is not in range {self.name!r}")
        return position


_NUMBER_WORDS = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty"
)
_ORDINALS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth "
    "fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
)

BUILTIN_SEQUENCES: Mapping[str, WordSequence] = MappingProxyType(
    {
        sequence.name: sequence
        for sequence in (
            WordList(
                "days",
                ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
                wrap=True,
            ),
            WordList(
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
                wrap=True,
            ),
            WordList("letters", tuple(string.ascii_uppercase), wrap=False),
            WordList("number_words", tuple(_NUMBER_WORDS.split()), wrap=False),
            WordList("ordinals", tuple(_ORDINALS.split()), wrap=False),
        )
    }
)


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
    bindings: Mapping[str, tuple[WordSequence, int]],
) -> str:
    """Replace every placeholder by its element; `bindings` maps a variable to (sequence, index).

    Unknown variables and filters are the case-file parser's job to reject with a location;
    here they raise KeyError, and a step past the end of a sequence that does not wrap raises
    SequenceIndexError, so a bug cannot slip through silently.
    """

    def replace(match: re.Match[str]) -> str:
        sequence, index = bindings[match["name"]]
        word = sequence.at(index + int(match["offset"] or 0))
        filter_name = match["filter"]
        if filter_name is not None and filter_name not in FILTERS:
            raise KeyError(filter_name)
        return _apply_filter(word, filter_name)

    return _PLACEHOLDER.sub(replace, template)
