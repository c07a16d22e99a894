"""Which elements a template's variables take: the skip rule, and distinct draws from a pool.

A variable bound by `for_each` or `over` ranges over its sequence, but not always over all of it.

- **The skip rule.** On a sequence that does not wrap, no placeholder may step past either end.
  With `for_each: {n: number_words}` and `{n+1}` in the answer, "twenty" has no successor, so
  the binding n=twenty is skipped: it makes no case (`for_each`), no variant (a family's `over`)
  and no pair (a patching case's `over`). A variable's *window* is the indices i at which i + k
  stays inside the sequence for every offset k the entry writes for it, in any of its texts, and
  once more shifted by a patching case's `corrupt: {n: 2}`; on a cyclic sequence the window is the
  whole sequence. When every binding is skipped, the entry is its file's error: a template that
  makes nothing is a mistake, never a silent empty suite.
- **Distinct draws.** Variables that draw from the same pool take different elements:
  `for_each: {a: names, b: names}` yields (Mary, John) and (John, Mary), never (Mary, Mary).

A placeholder names one variable, so the bindings in range are the product of the variables'
domains, found without trying any. A later draw from a pool counts the pool's elements less those
drawn before it (its coordinate c is the c-th element not yet taken), so distinct draws form a
product too: `len`, the uniform sample and hypothesis's shrinking index it directly, and every
distinct assignment has exactly one set of coordinates.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from seqprobe.casefiles.sequences import WordSequence, find_placeholders
from seqprobe.casefiles.yamlsource import SourceList, SourceMap, line_of
from seqprobe.errors import CaseFileError

__all__ = ["Binding", "Domain", "bind", "domains", "every_binding", "skipped_reason", "written_offsets"]

# A variable's value: the sequence it ranges over and its index there.
Binding = tuple[WordSequence, int]

_NOTHING_BOUND: Mapping[str, Binding] = MappingProxyType({})


@dataclass(frozen=True)
class Domain:
    """The indices one variable may take: a window of its sequence, less the draws before it."""

    sequence: WordSequence
    # [start, stop): the indices at which every offset the entry writes stays inside the sequence.
    start: int
    stop: int
    # Variables bound earlier to the same pool: this one never takes their elements.
    distinct_from: tuple[str, ...] = ()

    @classmethod
    def whole(cls, sequence: WordSequence) -> Domain:
        return cls(sequence, 0, len(sequence))

    def __len__(self) -> int:
        return max(0, self.stop - self.start - len(self.distinct_from))

    def index(self, coordinate: int, taken: Iterable[int] = ()) -> int:
        """The sequence index at `coordinate`, passing over `taken` (the `distinct_from` variables' indices)."""
        if not 0 <= coordinate < len(self):
            raise IndexError(
                f"coordinate {coordinate} is outside the domain of {self.sequence.name!r}: 0..{len(self) - 1}"
            )
        index = self.start + coordinate
        for other in sorted(taken):
            if other <= index:
                index += 1
        return index

    def at(self, coordinate: int, taken: Iterable[int] = ()) -> str:
        return self.sequence.at(self.index(coordinate, taken))


def written_offsets(
    path: str, entry: SourceMap, sequences: Mapping[str, WordSequence], *, shifts: Any = None
) -> dict[str, tuple[int, int]]:
    """The lowest and highest offset `entry` writes for each variable of `sequences` (0 counts
    always), widened by `shifts`: a patching case's `corrupt:` mapping, variable -> step.

    `{name+1}` on a pool's variable, or a shift of one, is the file's error at that text's line;
    a shift that is not a non-zero whole number is left for the patching parser to report.
    """
    offsets = {variable: {0} for variable in sequences}
    for text, line in _texts(entry, line_of(entry)):
        for placeholder in find_placeholders(text):
            sequence = sequences.get(placeholder.name)
            if sequence is None:
                continue
            if placeholder.offset and not sequence.ordered:
                raise _unordered(
                    path,
                    line,
                    f"{placeholder.text} steps along pool {sequence.name!r}",
                    fix=f"write {{{placeholder.name}}}, or declare {sequence.name} as elements: [...] (ordered)",
                )
            offsets[placeholder.name].add(placeholder.offset)
    if isinstance(shifts, SourceMap):
        for variable, shift in shifts.items():
            sequence = sequences.get(variable)
            if sequence is None or isinstance(shift, bool) or not isinstance(shift, int) or not shift:
                continue
            if not sequence.ordered:
                raise _unordered(
                    path,
                    line_of(shifts, variable),
                    f"corrupt: {variable}: {shift} steps along pool {sequence.name!r}",
                    fix="write the pairs out under `pairs:`",
                )
            offsets[variable] |= {offset + shift for offset in offsets[variable]}
    return {variable: (min(written), max(written)) for variable, written in offsets.items()}


def _unordered(path: str, line: int, what: str, *, fix: str) -> CaseFileError:
    return CaseFileError(f"{what}, whose elements have no order to step along; {fix}", path=path, line=line)


def _texts(node: Any, line: int) -> Iterator[tuple[str, int]]:
    """Every string in a YAML entry, with its line."""
    if isinstance(node, SourceMap):
        for key, value in node.items():
            yield from _texts(value, line_of(node, key))
    elif isinstance(node, SourceList):
        for item, item_line in zip(node, node.item_lines, strict=True):
            yield from _texts(item, item_line)
    elif isinstance(node, str):
        yield node, line


def domains(
    variables: Sequence[tuple[str, WordSequence]],
    offsets: Mapping[str, tuple[int, int]],
    *,
    bound: Mapping[str, Binding] = _NOTHING_BOUND,
) -> tuple[tuple[str, Domain], ...]:
    """Each variable's domain, in order, from the offsets written for it (`written_offsets`).

    `bound` holds the variables bound around these (`for_each` around an `over`): draws from a
    pool stay distinct from theirs too.
    """
    drawn: dict[str, list[str]] = {}
    for variable, (sequence, _) in bound.items():
        if not sequence.ordered:
            drawn.setdefault(sequence.name, []).append(variable)
    result = []
    for variable, sequence in variables:
        if not sequence.ordered:
            earlier = drawn.setdefault(sequence.name, [])
            result.append((variable, Domain(sequence, 0, len(sequence), distinct_from=tuple(earlier))))
            earlier.append(variable)
        elif sequence.wrap:
            result.append((variable, Domain.whole(sequence)))
        else:
            low, high = offsets.get(variable, (0, 0))
            start = max(0, -low)
            result.append((variable, Domain(sequence, start, max(start, len(sequence) - max(0, high)))))
    return tuple(result)


def bind(
    domains: Sequence[tuple[str, Domain]], coordinates: Sequence[int], *, bound: Mapping[str, Binding] = _NOTHING_BOUND
) -> dict[str, Binding]:
    """`bound`, and each variable of `domains` at its coordinate (one coordinate per domain)."""
    chosen = dict(bound)
    for (variable, domain), coordinate in zip(domains, coordinates, strict=True):
        taken = [chosen[other][1] for other in domain.distinct_from]
        chosen[variable] = (domain.sequence, domain.index(coordinate, taken))
    return chosen


def every_binding(
    domains: Sequence[tuple[str, Domain]], *, bound: Mapping[str, Binding] = _NOTHING_BOUND
) -> Iterator[dict[str, Binding]]:
    """Every binding in range, the first variable varying slowest (the order `for_each` lists cases in)."""
    for coordinates in itertools.product(*(range(len(domain)) for _, domain in domains)):
        yield bind(domains, coordinates, bound=bound)


def skipped_reason(domains: Sequence[tuple[str, Domain]], offsets: Mapping[str, tuple[int, int]]) -> str:
    """Why `domains` hold no binding, for the message of a template that makes nothing."""
    for variable, domain in domains:
        if len(domain):
            continue
        sequence = domain.sequence
        if not sequence.ordered:
            names = [*domain.distinct_from, variable]
            return (
                f"{', '.join(names[:-1])} and {names[-1]} draw {len(names)} distinct elements from pool "
                f"{sequence.name!r}, which has {len(sequence)}"
            )
        low, high = offsets.get(variable, (0, 0))
        return (
            f"{_written(variable, low)} to {_written(variable, high)} span {high - low + 1} elements, but "
            f"{sequence.name!r} has {len(sequence)} and does not wrap, so every binding steps past an end"
        )
    return "every variable has elements"


def _written(variable: str, offset: int) -> str:
    return f"{{{variable}{offset:+d}}}" if offset else f"{{{variable}}}"
