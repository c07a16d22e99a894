"""Case files: the YAML format people write by hand, parsed into frozen, validated cases.

A case file holds named suites; each suite holds cases. A case is either written out, or a
template that expands over cyclic sequences (``for_each: {day: days}``) with successor arithmetic
in its placeholders (``{day+1}``). Thresholds (``expect``) cascade file defaults → suite → case,
and can be overridden per model (``model_expect``); a model's measured failures are recorded as
``known_failures`` with the reason, so they run as xfail and show as XPASS once fixed.

The whole file is validated when it is loaded, so a mistake becomes that file's collection error
with its line number, never a crash mid-run. Checks that need the model's tokenizer (one-token
answers, prompt length) run when the model is loaded; see `seqprobe.scoring`.

Kinds of case other than plain completions register a parser in `CASE_KINDS` (see
`register_case_kind`): they share ids, templates, known failures and per-model overrides.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from seqprobe.errors import CaseFileError
from seqprobe.sequences import BUILTIN_SEQUENCES, FILTERS, CyclicSequence, find_placeholders, substitute
from seqprobe.yamlsource import SourceList, SourceMap, line_of, load_yaml

__all__ = [
    "CASE_FILE_GLOB",
    "CASE_KINDS",
    "Case",
    "CaseKind",
    "CaseFile",
    "CompletionCase",
    "EntryContext",
    "Location",
    "Suite",
    "THRESHOLD_KINDS",
    "is_case_file",
    "load_case_file",
    "parse_case_file",
    "register_case_kind",
]

# Files pytest collects: only names that say they are seqprobe cases, so other YAML in a
# project (CI configs, docker-compose, data) is never touched.
CASE_FILE_GLOB = "*.seqprobe.yaml"
CASE_FILE_SUFFIXES = (".seqprobe.yaml", ".seqprobe.yml")

# Threshold name -> what kind of number it is. Higher is better for min_*, lower for max_*.
THRESHOLD_KINDS: dict[str, type] = {
    "min_prob": float,
    "max_rank": int,
    "min_logit_diff": float,
    # Phrasing families and invariance checks: the share of variants that must pass.
    "min_pass_rate": float,
    # Direction checks: how far probability must move, in logits.
    "min_margin": float,
}

# Metric name -> allowed tolerance type; baselines compare these (see seqprobe.baseline).
TOLERANCE_METRICS = ("p_answer", "rank", "logit_diff", "recovery", "pass_rate", "margin")


def is_case_file(path: Path) -> bool:
    return path.name.endswith(CASE_FILE_SUFFIXES)


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
class CompletionCase(Case):
    """A prompt whose next token should be `answer`, ahead of each distractor."""

    prompt: str = ""
    answer: str = ""
    distractors: tuple[str, ...] = ()

    kind = "completion"


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    cases: tuple[Case, ...]
    location: Location


@dataclass(frozen=True)
class CaseFile:
    path: str
    sha256: str
    suites: tuple[Suite, ...]

    def cases(self) -> Iterable[Case]:
        for suite in self.suites:
            yield from suite.cases


@dataclass(frozen=True)
class EntryContext:
    """What a case-kind parser needs besides its own YAML entry."""

    path: str
    suite: str
    sequences: Mapping[str, CyclicSequence]
    # Inherited thresholds, per-model thresholds, known failures and tolerances.
    expect: Mapping[str, float]
    model_expect: Mapping[str, Mapping[str, float]]
    known_failures: Mapping[str, tuple[str, frozenset[str] | None]]
    tolerance: Mapping[str, float]

    def error(self, message: str, node: Any, key: str | None = None) -> CaseFileError:
        return CaseFileError(message, path=self.path, line=line_of(node, key))


KindParser = Callable[[EntryContext, "TemplateScope", SourceMap], Case]


@dataclass(frozen=True)
class CaseKind:
    """How one `kind:` of case is written (its YAML keys, its parser) and run (its runner)."""

    keys: frozenset[str]
    parser: KindParser
    # "module:function" of the kind's runner (see seqprobe.checks.Runner), imported when the
    # first case of the kind runs, so parsing never imports torch.
    runner: str


CASE_KINDS: dict[str, CaseKind] = {}

# Modules that define the built-in kinds besides `completion`; imported on the first parse.
BUILTIN_KIND_MODULES: tuple[str, ...] = ("seqprobe.mechanism_cases", "seqprobe.families")

COMMON_ENTRY_KEYS = frozenset(
    {"kind", "id", "for_each", "expect", "model_expect", "known_failures", "tolerance", "description"}
)


def register_case_kind(name: str, *, keys: Iterable[str], runner: str) -> Callable[[KindParser], KindParser]:
    """Register a parser for `kind: name` entries; `keys` are the kind's own YAML keys."""

    def decorator(parser: KindParser) -> KindParser:
        CASE_KINDS[name] = CaseKind(keys=frozenset(keys), parser=parser, runner=runner)
        return parser

    return decorator


def _register_builtin_kinds() -> None:
    for module in BUILTIN_KIND_MODULES:
        importlib.import_module(module)


# ---------------------------------------------------------------------------------------------
# Validation helpers: each raises a CaseFileError that says what, where, and what was expected.


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(ctx_path: str, node: SourceMap, allowed: Iterable[str], *, where: str) -> None:
    allowed = sorted(allowed)
    for key in node:
        if key not in allowed:
            raise CaseFileError(
                f"unknown key {key!r} in {where}{_suggest(key, allowed)}; allowed keys: {', '.join(allowed)}",
                path=ctx_path,
                line=line_of(node, key),
            )


def require_map(path: str, node: Any, *, where: str, line: int) -> SourceMap:
    if not isinstance(node, SourceMap):
        raise CaseFileError(
            f"{where} must be a mapping (key: value lines), found {_describe(node)}", path=path, line=line
        )
    return node


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def get_str(path: str, node: SourceMap, key: str, *, where: str, required: bool = True) -> str | None:
    if key not in node:
        if required:
            raise CaseFileError(f"{where} is missing required key {key!r}", path=path, line=line_of(node))
        return None
    value = node[key]
    if not isinstance(value, str):
        raise CaseFileError(
            f"{key} in {where} must be a string, found {_describe(value)}; quote it", path=path, line=line_of(node, key)
        )
    return value


def get_str_list(path: str, node: SourceMap, key: str, *, where: str) -> tuple[str, ...]:
    value = node.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise CaseFileError(
            f"{key} in {where} must be a list of strings, found {_describe(value)}",
            path=path,
            line=line_of(node, key),
        )
    return tuple(value)


def parse_numbers(path: str, node: Any, *, where: str, line: int, kinds: Mapping[str, type]) -> dict[str, float]:
    """Parse a `{name: number}` mapping whose names and number types are given by `kinds`."""
    mapping = require_map(path, node, where=where, line=line)
    check_keys(path, mapping, kinds, where=where)
    numbers: dict[str, float] = {}
    for key, value in mapping.items():
        expected = kinds[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        if not ok:
            wanted = "a whole number ≥ 1" if expected is int else "a number"
            raise CaseFileError(
                f"{key} in {where} must be {wanted}, found {key}={_describe(value)}",
                path=path,
                line=line_of(mapping, key),
            )
        numbers[key] = value
    return numbers


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


# ---------------------------------------------------------------------------------------------
# Templates


@dataclass(frozen=True)
class TemplateScope:
    """The variable bindings of one expansion of a template (empty for a written-out case)."""

    bindings: Mapping[str, tuple[CyclicSequence, int]] = field(default_factory=dict)

    def fill(self, ctx: EntryContext, node: SourceMap, key: str, text: str) -> str:
        for placeholder in find_placeholders(text):
            if placeholder.name not in self.bindings:
                bound = ", ".join(self.bindings) or "nothing (add for_each: {VAR: SEQUENCE})"
                raise ctx.error(
                    f"placeholder {placeholder.text} in {key} is not bound; for_each binds {bound}",
                    node,
                    key,
                )
            if placeholder.filter is not None and placeholder.filter not in FILTERS:
                raise ctx.error(
                    f"unknown filter |{placeholder.filter} in {placeholder.text}; filters: {', '.join(FILTERS)}",
                    node,
                    key,
                )
        return substitute(text, self.bindings)

    def default_name(self) -> str:
        return "-".join(sequence.at(index).lower() for sequence, index in self.bindings.values())


def _expand_scopes(ctx: EntryContext, entry: SourceMap) -> list[TemplateScope]:
    if "for_each" not in entry:
        return [TemplateScope()]
    for_each = require_map(ctx.path, entry["for_each"], where="for_each", line=line_of(entry, "for_each"))
    if not for_each:
        raise ctx.error("for_each is empty; give at least one VAR: SEQUENCE", entry, "for_each")
    axes: list[list[tuple[str, CyclicSequence, int]]] = []
    for variable, sequence_name in for_each.items():
        if not isinstance(sequence_name, str) or sequence_name not in ctx.sequences:
            known = ", ".join(sorted(ctx.sequences))
            raise ctx.error(
                f"for_each: {variable}: unknown sequence {sequence_name!r}"
                f"{_suggest(str(sequence_name), ctx.sequences)}; known sequences: {known} "
                "(define more under the file's `sequences:` key)",
                for_each,
                variable,
            )
        sequence = ctx.sequences[sequence_name]
        axes.append([(variable, sequence, index) for index in range(len(sequence))])
    return [
        TemplateScope({variable: (sequence, index) for variable, sequence, index in combination})
        for combination in itertools.product(*axes)
    ]


# ---------------------------------------------------------------------------------------------
# The completion kind


@register_case_kind(
    "completion", keys=("prompt", "answer", "distractors"), runner="seqprobe.checks:run_completion_checks"
)
def _parse_completion(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> Case:
    common = common_fields(ctx, scope, entry)
    prompt = scope.fill(ctx, entry, "prompt", get_str(ctx.path, entry, "prompt", where="a completion case") or "")
    if not prompt.strip():
        raise ctx.error("prompt is empty; a case needs text for the model to continue", entry, "prompt")
    answer = scope.fill(ctx, entry, "answer", get_str(ctx.path, entry, "answer", where="a completion case") or "")
    if not answer:
        raise ctx.error("answer is empty; give the expected next token, e.g. ' Monday'", entry, "answer")
    distractors = tuple(
        scope.fill(ctx, entry, "distractors", text)
        for text in get_str_list(ctx.path, entry, "distractors", where="a completion case")
    )
    if answer in distractors:
        raise ctx.error(f"answer {answer!r} is also listed as a distractor", entry, "distractors")
    if not distractors and "min_logit_diff" in (entry.get("expect") or {}):
        raise ctx.error("min_logit_diff needs at least one distractor to compare against", entry, "expect")
    return CompletionCase(**common, prompt=prompt, answer=answer, distractors=distractors)


def common_fields(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> dict[str, Any]:
    """The fields every Case has, from the entry and what it inherits; used by every kind."""
    raw_id = get_str(ctx.path, entry, "id", where="a case", required=not scope.bindings)
    name = scope.fill(ctx, entry, "id", raw_id) if raw_id is not None else scope.default_name()
    if not name or any(ch in name for ch in ":[] \t/"):
        raise ctx.error(f"case id {name!r} must be non-empty without spaces, '/', ':' or brackets", entry, "id")
    level = _level(ctx.path, entry, ctx, where=f"case {name!r}", suite=ctx.suite)
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


# ---------------------------------------------------------------------------------------------
# Files and suites

FILE_KEYS = ("sequences", "defaults", "suites")
LEVEL_KEYS = ("expect", "model_expect", "known_failures", "tolerance")
SUITE_KEYS = ("description", "cases", *LEVEL_KEYS)


def _parse_sequences(path: str, node: Any, *, line: int) -> dict[str, CyclicSequence]:
    sequences = dict(BUILTIN_SEQUENCES)
    if node is None:
        return sequences
    mapping = require_map(path, node, where="sequences", line=line)
    for name, elements in mapping.items():
        if not isinstance(elements, list) or len(elements) < 2 or not all(isinstance(e, str) for e in elements):
            raise CaseFileError(
                f"sequence {name!r} must be a list of at least two strings, found {_describe(elements)}",
                path=path,
                line=line_of(mapping, name),
            )
        try:
            sequences[name] = CyclicSequence(name, tuple(elements))
        except ValueError as error:
            raise CaseFileError(str(error), path=path, line=line_of(mapping, name)) from None
    return sequences


def _level(path: str, node: SourceMap, parent: EntryContext, *, where: str, suite: str) -> EntryContext:
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
    )


def _parse_entry(ctx: EntryContext, entry: Any, *, line: int) -> list[Case]:
    entry = require_map(ctx.path, entry, where=f"a case in suite {ctx.suite!r}", line=line)
    kind = entry.get("kind", "completion")
    if kind not in CASE_KINDS:
        raise ctx.error(
            f"unknown case kind {kind!r}{_suggest(str(kind), CASE_KINDS)}; kinds: {', '.join(sorted(CASE_KINDS))}",
            entry,
            "kind",
        )
    spec = CASE_KINDS[kind]
    check_keys(ctx.path, entry, COMMON_ENTRY_KEYS | spec.keys, where=f"a {kind} case")
    cases = [spec.parser(ctx, scope, entry) for scope in _expand_scopes(ctx, entry)]
    check_known_failure_cases(ctx.path, entry, [case.name for case in cases], where="this case entry")
    return cases


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
                    f"{_suggest(case_name, names)}; its cases: {shown}",
                    path=path,
                    line=line,
                )


def _parse_suite(root: EntryContext, name: str, node: Any, *, line: int) -> Suite:
    path = root.path
    suite_node = require_map(path, node, where=f"suite {name!r}", line=line)
    check_keys(path, suite_node, SUITE_KEYS, where=f"suite {name!r}")
    ctx = _level(path, suite_node, root, where=f"suite {name!r}", suite=name)
    entries = suite_node.get("cases")
    if not isinstance(entries, SourceList) or not entries:
        raise CaseFileError(
            f"suite {name!r} needs a non-empty list under `cases:`",
            path=path,
            line=line_of(suite_node, "cases" if "cases" in suite_node else None),
        )
    cases: list[Case] = []
    seen: dict[str, Location] = {}
    for entry, entry_line in zip(entries, entries.item_lines, strict=True):
        for case in _parse_entry(ctx, entry, line=entry_line):
            if case.name in seen:
                raise CaseFileError(
                    f"case id {case.name!r} in suite {name!r} is already used at line {seen[case.name].line}; ids must be unique",
                    path=path,
                    line=case.location.line,
                )
            seen[case.name] = case.location
            cases.append(case)
    check_known_failure_cases(path, suite_node, [case.name for case in cases], where=f"suite {name!r}")
    description = suite_node.get("description", "")
    if not isinstance(description, str):
        raise CaseFileError(
            f"description of suite {name!r} must be a string", path=path, line=line_of(suite_node, "description")
        )
    return Suite(name=name, description=description, cases=tuple(cases), location=Location(path, line))


def parse_case_file(text: str, *, path: str) -> CaseFile:
    """Parse and validate a whole case file; raises CaseFileError naming path:line."""
    _register_builtin_kinds()
    try:
        document = load_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        raise CaseFileError(f"invalid YAML: {problem}", path=path, line=mark.line + 1 if mark else None) from None
    top = require_map(path, document, where="a case file", line=1)
    check_keys(path, top, FILE_KEYS, where="the case file")
    sequences = _parse_sequences(path, top.get("sequences"), line=line_of(top, "sequences"))
    root = EntryContext(
        path=path, suite="", sequences=sequences, expect={}, model_expect={}, known_failures={}, tolerance={}
    )
    if "defaults" in top:
        defaults = require_map(path, top["defaults"], where="defaults", line=line_of(top, "defaults"))
        check_keys(path, defaults, LEVEL_KEYS, where="defaults")
        root = _level(path, defaults, root, where="defaults", suite="")
    suites_node = top.get("suites")
    if not isinstance(suites_node, SourceMap) or not suites_node:
        raise CaseFileError(
            "a case file needs `suites:`, a mapping of suite name to suite",
            path=path,
            line=line_of(top, "suites" if "suites" in top else None),
        )
    suites = tuple(
        _parse_suite(root, name, node, line=line_of(suites_node, name)) for name, node in suites_node.items()
    )
    if "defaults" in top:
        names = [case.name for suite in suites for case in suite.cases]
        check_known_failure_cases(path, top["defaults"], names, where="the file")
    return CaseFile(path=path, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), suites=suites)


def load_case_file(path: str | Path, *, display_path: str | None = None) -> CaseFile:
    file_path = Path(path)
    shown = display_path or file_path.as_posix()
    return parse_case_file(_decode(file_path.read_bytes(), path=shown), path=shown)


def _decode(data: bytes, *, path: str) -> str:
    """The file's text; bytes that are not UTF-8 are that file's error, naming the line and byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise CaseFileError(
            f"not valid UTF-8: byte {data[error.start : error.start + 1]!r} at offset {error.start} "
            f"(column {column}) {error.reason}; save the file as UTF-8",
            path=path,
            line=line,
        ) from None
