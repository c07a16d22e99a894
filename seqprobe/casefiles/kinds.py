"""The kinds of case a file can hold: each kind's YAML keys and its parser, in one table.

A new kind adds its parser module beside the others and one row here; its runner goes in the
matching table of `seqprobe.checks` (a test checks that the two tables name the same kinds).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from seqprobe.casefiles import completion, families, patching
from seqprobe.casefiles.base import Case, EntryContext, TemplateScope
from seqprobe.casefiles.yamlsource import SourceMap

__all__ = ["CASE_KINDS", "COMMON_ENTRY_KEYS", "CaseKind", "KindParser"]

KindParser = Callable[[EntryContext, TemplateScope, SourceMap], Case]

# Keys every kind accepts besides its own.
COMMON_ENTRY_KEYS = frozenset(
    {"kind", "id", "for_each", "expect", "model_expect", "known_failures", "tolerance", "description"}
)


@dataclass(frozen=True)
class CaseKind:
    """How one `kind:` of case is written: its own YAML keys and the parser of one expansion."""

    keys: frozenset[str]
    parser: KindParser


CASE_KINDS: Mapping[str, CaseKind] = MappingProxyType(
    {
        "completion": CaseKind(frozenset(completion.KEYS), completion.parse_completion),
        "patching": CaseKind(frozenset(patching.KEYS), patching.parse_patching),
        "family": CaseKind(frozenset(families.FAMILY_KEYS), families.parse_family),
        "invariance": CaseKind(frozenset(families.INVARIANCE_KEYS), families.parse_invariance),
        "direction": CaseKind(frozenset(families.DIRECTION_KEYS), families.parse_direction),
    }
)
