"""Case files: the YAML format people write by hand, parsed into frozen, validated cases.

A case file holds named suites; each suite holds cases of one of the kinds in
`seqprobe.casefiles.kinds`. At its top a file may also define `sequences:` for its templates and
`circuits:` for its patching cases' claims (`seqprobe.casefiles.circuits`). The whole file is
validated when it is loaded, so a mistake becomes that file's collection error with its line
number, never a crash mid-run. Checks that need the model's
tokenizer (a next-token bar on a longer answer, prompt length) run when the model is loaded
(`seqprobe.checks.completion`, `seqprobe.engine.scoring`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from seqprobe.casefiles.base import (
    LEVEL_KEYS,
    Case,
    EntryContext,
    Location,
    apply_level,
    check_known_failure_cases,
    expand_scopes,
)
from seqprobe.casefiles.circuits import parse_circuits
from seqprobe.casefiles.kinds import CASE_KINDS, COMMON_ENTRY_KEYS
from seqprobe.casefiles.sequences import BUILTIN_SEQUENCES, WordSequence
from seqprobe.casefiles.validation import check_keys, parse_sequence, require_map, suggest
from seqprobe.casefiles.yamlsource import SourceList, SourceMap, line_of, load_yaml
from seqprobe.errors import CaseFileError

__all__ = ["CASE_FILE_GLOB", "CaseFile", "Suite", "display_path", "is_case_file", "load_case_file", "parse_case_file"]

# Files pytest collects: only names that say they are seqprobe cases, so other YAML in a
# project (CI configs, docker-compose, data) is never touched.
CASE_FILE_GLOB = "*.seqprobe.yaml"
CASE_FILE_SUFFIXES = (".seqprobe.yaml", ".seqprobe.yml")


def is_case_file(path: Path) -> bool:
    return path.name.endswith(CASE_FILE_SUFFIXES)


def display_path(path: str | Path, root: Path) -> str:
    """`path` as case ids name it: relative to `root` (pytest's rootdir, or the current folder) when below it."""
    path, root = Path(path).resolve(), root.resolve()
    return (path.relative_to(root) if path.is_relative_to(root) else path).as_posix()


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


FILE_KEYS = ("sequences", "circuits", "defaults", "suites")
SUITE_KEYS = ("description", "cases", *LEVEL_KEYS)


def _parse_sequences(path: str, node: Any, *, line: int) -> dict[str, WordSequence]:
    """The built-in sequences, and the file's own (which replace a built-in of the same name)."""
    sequences = dict(BUILTIN_SEQUENCES)
    if node is None:
        return sequences
    mapping = require_map(path, node, where="sequences", line=line)
    for name, spec in mapping.items():
        sequences[name] = parse_sequence(path, name, spec, line=line_of(mapping, name))
    return sequences


def _parse_entry(ctx: EntryContext, entry: Any, *, line: int) -> list[Case]:
    entry = require_map(ctx.path, entry, where=f"a case in suite {ctx.suite!r}", line=line)
    kind = entry.get("kind", "completion")
    if kind not in CASE_KINDS:
        raise ctx.error(
            f"unknown case kind {kind!r}{suggest(str(kind), CASE_KINDS)}; kinds: {', '.join(sorted(CASE_KINDS))}",
            entry,
            "kind",
        )
    spec = CASE_KINDS[kind]
    check_keys(ctx.path, entry, COMMON_ENTRY_KEYS | spec.keys, where=f"a {kind} case")
    cases = [spec.parser(ctx, scope, entry) for scope in expand_scopes(ctx, entry)]
    check_known_failure_cases(ctx.path, entry, [case.name for case in cases], where="this case entry")
    return cases


def _parse_suite(root: EntryContext, name: str, node: Any, *, line: int) -> Suite:
    path = root.path
    suite_node = require_map(path, node, where=f"suite {name!r}", line=line)
    check_keys(path, suite_node, SUITE_KEYS, where=f"suite {name!r}")
    ctx = apply_level(path, suite_node, root, where=f"suite {name!r}", suite=name)
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
    if "circuits" in top:
        # Named once for every patching case of the file; each case checks them against its own scope.
        root = dataclasses.replace(root, circuits=MappingProxyType(parse_circuits(root, top)))
    if "defaults" in top:
        defaults = require_map(path, top["defaults"], where="defaults", line=line_of(top, "defaults"))
        check_keys(path, defaults, LEVEL_KEYS, where="defaults")
        root = apply_level(path, defaults, root, where="defaults", suite="")
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
