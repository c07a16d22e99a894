"""What every kind of case shares: identity, location, inherited bars and records, templates.

A case file's levels (file defaults → suite → case) cascade thresholds (`expect`), per-model
thresholds (`model_expect`), known failures and baseline tolerances; a template case expands over
sequences (`for_each: {day: days}`) into one case per binding in range: a binding whose placeholder
would step past either end of a sequence that does not wrap is skipped, draws from one pool are
distinct, and a template whose every binding is skipped is an error (`seqprobe.casefiles.bindings`).
Every kind's parser builds its cases on `common_fields`, so ids, templates and per-model records
work alike in every kind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from seqprobe.casefiles.bindings import Binding, domains, every_binding, skipped_reason, written_offsets
from seqprobe.casefiles.sampling import VariantSpace, parse_sample, sample_space
from seqprobe.casefiles.sequences import WordSequence, find_placeholders, substitute
from seqprobe.casefiles.validation import (
    check_keys,
    check_placeholders,
    get_str,
    get_str_list,
    lookup_sequence,
    parse_numbers,
    require_map,
    suggest,
)
from seqprobe.casefiles.yamlsource import SourceList, SourceMap, line_of
from seqprobe.errors import CaseFileError
from seqprobe.vocabulary.metrics import THRESHOLD_KINDS, TOLERANCE_METRICS

if TYPE_CHECKING:
    from seqprobe.vocabulary.circuits import Component

__all__ = [
    "Circuit",
    "LEVEL_KEYS",
    "Case",
    "EntryContext",
    "Location",
    "TemplateScope",
    "apply_level",
    "check_known_failure_cases",
    "common_fields",
    "expand_scopes",
    "over_scopes",
]

LEVEL_KEYS = ("expect", "model_expect", "known_failures", "tolerance")


@dataclass(frozen=True)
class Circuit:
    """A named set of components, as written under `circuits:` (seqprobe.casefiles.circuits)."""

    name: str
    components: tuple[Component, ...]
    # The line of its name: an error found when a claim names a file's circuit points here too.
    line: int


@dataclass(frozen=True)
class Location:
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Case:
    """What every kind of case has: identity, where it was written, and per-model records."""

    suite: str
    # Unique within the suite; the pytest id is `file::suite::name`.
    name: str
    location: Location
    # Thresholds after the defaults → suite → case cascade.
    expect: Mapping[str, float]
    # Model name -> thresholds that replace `expect`'s for that model.
    model_expect: Mapping[str, Mapping[str, float]]
    # Model name -> why that model is known to fail this case.
    known_failures: Mapping[str, str]
    # Metric name -> how far it may fall below a baseline before it counts as a regression.
    tolerance: Mapping[str, float]

    kind = "case"

    @property
    def case_id(self) -> str:
        """`file::suite::case`, the id pytest shows and baselines match by."""
        return f"{self.location.path}::{self.suite}::{self.name}"

    def expect_for(self, model: str) -> Mapping[str, float]:
        return MappingProxyType({**self.expect, **self.model_expect.get(model, {})})

    def known_failure_for(self, model: str) -> str | None:
        return self.known_failures.get(model)


@dataclass(frozen=True)
class EntryContext:
    """What a case-kind parser needs besides its own YAML entry."""

    path: str
    suite: str
    sequences: Mapping[str, WordSequence]
    # Inherited thresholds, per-model thresholds, known failures and tolerances.
    expect: Mapping[str, float]
    model_expect: Mapping[str, Mapping[str, float]]
    known_failures: Mapping[str, tuple[str, frozenset[str] | None]]
    tolerance: Mapping[str, float]
    # The file's named circuits (`circuits:` at its top), which a patching case's claims may name.
    circuits: Mapping[str, Circuit] = field(default_factory=lambda: MappingProxyType({}))

    def error(self, message: str, node: Any, key: str | None = None) -> CaseFileError:
        return CaseFileError(message, path=self.path, line=line_of(node, key))


def _parse_model_expect(path: str, node: Any, *, where: str, line: int) -> dict[str, dict[str, float]]:
    mapping = require_map(path, node, where=f"model_expect in {where}", line=line)
    return {
        model: parse_numbers(
            path, value, where=f"model_expect[{model}] in {where}", line=line_of(mapping, model), kinds=THRESHOLD_KINDS
        )
        for model, value in mapping.items()
    }


def _parse_known_failures(
    path: str, node: Any, *, where: str, line: int
) -> dict[str, tuple[str, frozenset[str] | None]]:
    """`{model: {reason: str, cases: [names]}}` or `{model: "reason"}` (applies to all cases)."""
    mapping = require_map(path, node, where=f"known_failures in {where}", line=line)
    records: dict[str, tuple[str, frozenset[str] | None]] = {}
    for model, value in mapping.items():
        if isinstance(value, str):
            records[model] = (value, None)
            continue
        entry = require_map(path, value, where=f"known_failures[{model}]", line=line_of(mapping, model))
        check_keys(path, entry, ("reason", "cases"), where=f"known_failures[{model}]")
        reason = get_str(path, entry, "reason", where=f"known_failures[{model}]")
        cases = (
            frozenset(get_str_list(path, entry, "cases", where=f"known_failures[{model}]"))
            if "cases" in entry
            else None
        )
        records[model] = (reason or "", cases)
    return records


# An element's spaces become '_' in a case id, which may not hold spaces ("New York" -> new_york).
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TemplateScope:
    """The variable bindings of one expansion of a template (empty for a written-out case)."""

    bindings: Mapping[str, Binding] = field(default_factory=dict)

    def fill(self, ctx: EntryContext, node: SourceMap, key: str, text: str) -> str:
        check_placeholders(ctx.path, node, key, text, variables=list(self.bindings), binders="for_each")
        return substitute(text, self.bindings)

    def default_name(self) -> str:
        """The elements, lower-cased, joined by '-': `spring-monday`, `1900`, `mary-john`."""
        return "-".join(_WHITESPACE.sub("_", sequence.at(index).lower()) for sequence, index in self.bindings.values())


def expand_scopes(ctx: EntryContext, entry: SourceMap) -> list[TemplateScope]:
    """One scope per `for_each` binding in range (see `seqprobe.casefiles.bindings`); one empty scope without."""
    if "for_each" not in entry:
        return [TemplateScope()]
    for_each = require_map(ctx.path, entry["for_each"], where="for_each", line=line_of(entry, "for_each"))
    if not for_each:
        raise ctx.error("for_each is empty; give at least one VAR: SEQUENCE", entry, "for_each")
    variables = [
        (variable, lookup_sequence(ctx.path, for_each, variable, ctx.sequences, key="for_each"))
        for variable in for_each
    ]
    # A patching case's `corrupt: {day: 2}` steps a for_each variable too: its shifted uses must
    # stay in range, or the binding would have no corrupted prompt.
    offsets = written_offsets(ctx.path, entry, dict(variables), shifts=entry.get("corrupt"))
    axes = domains(variables, offsets)
    scopes = [TemplateScope(bindings) for bindings in every_binding(axes)]
    if not scopes:
        raise ctx.error(
            f"every binding of for_each is skipped: {skipped_reason(axes, offsets)}",
            entry,
            "for_each",
        )
    return scopes


def over_scopes(
    ctx: EntryContext,
    scope: TemplateScope,
    node: SourceMap,
    *,
    what: str,
    templates: Sequence[str] = ("prompt",),
    shifts: Any = None,
) -> list[TemplateScope]:
    """`over: {a: names, b: names}` pools one `what` per binding in range into one entry (beside
    `scope`'s for_each bindings): a patching case's prompt pairs, or a mean ablation's reference
    prompts. Each variable must vary one of `templates`, or every text would repeat once per
    element. More than `sample: {size}` bindings (256 by default) give a uniform sample of that
    many, drawn with its seed (`seqprobe.casefiles.sampling`); `shifts` is a patching case's
    `corrupt:`, whose shifted placeholders must stay in range too."""
    if "over" not in node:
        if "sample" in node:
            raise ctx.error(f"sample draws from the {what}s of over:, and this entry has no over", node, "sample")
        return [scope]
    over = require_map(ctx.path, node["over"], where="over", line=line_of(node, "over"))
    if not over:
        raise ctx.error("over is empty; give VAR: SEQUENCE, e.g. over: {day: days}", node, "over")
    used = {hole.name for key in templates if isinstance(node.get(key), str) for hole in find_placeholders(node[key])}
    for variable in over:
        if variable in scope.bindings:
            raise ctx.error(f"over: {variable} is already bound by for_each; give it another name", over, variable)
        if variable not in used:
            raise ctx.error(
                f"over: {variable} is not used in {' or '.join(templates)}, so each {what} would repeat once per "
                f"element; write {{{variable}}} there or leave it out",
                over,
                variable,
            )
    variables = [(variable, lookup_sequence(ctx.path, over, variable, ctx.sequences, key="over")) for variable in over]
    offsets = written_offsets(ctx.path, node, dict(variables), shifts=shifts)
    axes = domains(variables, offsets, bound=scope.bindings)
    space = VariantSpace(over=axes, fixed=dict(scope.bindings))
    if not len(space):
        counted = " (the corrupt: shifts count)" if shifts is not None else ""
        raise ctx.error(f"every {what} of over is skipped{counted}: {skipped_reason(axes, offsets)}", node, "over")
    size, seed = parse_sample(ctx.path, node)
    return [TemplateScope(space.bindings(variant)) for variant in sample_space(space, size=size, seed=seed)]


def common_fields(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> dict[str, Any]:
    """The fields every Case has, from the entry and what it inherits; used by every kind."""
    raw_id = get_str(ctx.path, entry, "id", where="a case", required=not scope.bindings)
    name = scope.fill(ctx, entry, "id", raw_id) if raw_id is not None else scope.default_name()
    if not name or any(ch in name for ch in ":[] \t/"):
        raise ctx.error(f"case id {name!r} must be non-empty without spaces, '/', ':' or brackets", entry, "id")
    level = apply_level(ctx.path, entry, ctx, where=f"case {name!r}", suite=ctx.suite)
    return {
        "suite": ctx.suite,
        "name": name,
        "location": Location(ctx.path, line_of(entry)),
        "expect": MappingProxyType(dict(level.expect)),
        "model_expect": MappingProxyType({m: MappingProxyType(dict(v)) for m, v in level.model_expect.items()}),
        "known_failures": MappingProxyType(
            {model: reason for model, (reason, names) in level.known_failures.items() if names is None or name in names}
        ),
        "tolerance": MappingProxyType(dict(level.tolerance)),
    }


def apply_level(path: str, node: SourceMap, parent: EntryContext, *, where: str, suite: str) -> EntryContext:
    """Apply a defaults/suite level's expect, model_expect, known_failures and tolerance."""
    expect = dict(parent.expect)
    if "expect" in node:
        expect |= parse_numbers(
            path, node["expect"], where=f"expect in {where}", line=line_of(node, "expect"), kinds=THRESHOLD_KINDS
        )
    model_expect = {m: dict(v) for m, v in parent.model_expect.items()}
    if "model_expect" in node:
        for model, values in _parse_model_expect(
            path, node["model_expect"], where=where, line=line_of(node, "model_expect")
        ).items():
            model_expect[model] = model_expect.get(model, {}) | values
    known = dict(parent.known_failures)
    if "known_failures" in node:
        known |= _parse_known_failures(path, node["known_failures"], where=where, line=line_of(node, "known_failures"))
    tolerance = dict(parent.tolerance)
    if "tolerance" in node:
        tolerance |= parse_numbers(
            path,
            node["tolerance"],
            where=f"tolerance in {where}",
            line=line_of(node, "tolerance"),
            kinds=dict.fromkeys(TOLERANCE_METRICS, float),
        )
    return EntryContext(
        path=path,
        suite=suite,
        sequences=parent.sequences,
        expect=expect,
        model_expect=model_expect,
        known_failures=known,
        tolerance=tolerance,
        circuits=parent.circuits,
    )


def check_known_failure_cases(path: str, level: SourceMap, names: Sequence[str], *, where: str) -> None:
    """Every case a level's `known_failures` names must be a case of that level.

    A misspelt name would otherwise mark nothing, and the real case would fail unexplained.
    """
    records = level.get("known_failures")
    if not isinstance(records, SourceMap):
        return
    for model, record in records.items():
        if not isinstance(record, SourceMap) or "cases" not in record:
            continue
        listed = record["cases"]
        lines = listed.item_lines if isinstance(listed, SourceList) else [line_of(record, "cases")]
        for case_name, line in zip([listed] if isinstance(listed, str) else listed, lines, strict=True):
            if case_name not in names:
                shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
                raise CaseFileError(
                    f"known_failures[{model}] names case {case_name!r}, which {where} does not have"
                    f"{suggest(case_name, names)}; its cases: {shown}",
                    path=path,
                    line=line,
                )
