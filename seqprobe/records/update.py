"""Update a baseline without losing what this run did not measure.

`--update-baseline` after `-k december`, after a run of two of seven case files, or after a run
stopped by `-x` measured only part of the suite. The baseline keeps every entry this run did not
replace (like syrupy, which deletes an unused snapshot only when the run selected everything that
could use it): an entry is dropped only when its case file was collected whole (no `-k`, no node
ids, no deselection) and no longer has that case.

Two kinds of mixing would make the merged file lie, so they are refused instead: kept entries of
another model beside this run's, and kept entries of a case file that has changed since they were
measured (the file's sha256 is stored once per file, not per case).

Entries are stored whole, intervals included, so the next comparison can apply the noise rule
(`seqprobe.records.baseline`); a replaced entry whose only moves are within noise is counted
apart from those that changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from seqprobe.errors import BaselineError
from seqprobe.records.baseline import case_file_of, compare_case
from seqprobe.records.results import CaseResult, RunResults

__all__ = ["BaselineUpdate", "CaseFileRun", "answered_entries", "merge_baseline"]


@dataclass(frozen=True)
class CaseFileRun:
    """What one run saw of one case file: enough to know which baseline entries it may drop."""

    sha256: str
    # Every case id the file has now, in collection order; selected or not.
    case_ids: tuple[str, ...]
    # Every one of its cases was selected: only then does an absent case mean a removed one.
    whole: bool


@dataclass(frozen=True)
class BaselineUpdate:
    """The merged baseline and what happened to each entry, for the terminal summary."""

    results: RunResults
    added: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    dropped: tuple[str, ...]
    kept: tuple[str, ...]
    # Moved beyond a tolerance, but with overlapping intervals before and after.
    noise: tuple[str, ...] = ()

    def summary_lines(self, path: str) -> list[str]:
        noise = f"{len(self.noise)} within noise, " if self.noise else ""
        counts = (
            f"{len(self.added)} added, {len(self.changed)} changed, {len(self.unchanged)} within tolerance, "
            f"{noise}{len(self.dropped)} dropped, {len(self.kept)} kept (not run)"
        )
        total = len(self.results.cases)
        lines = [f"baseline written: {path} ({total} case{'s' * (total != 1)}: {counts})"]
        lines += [f"dropped from the baseline (no longer in its case file): {case_id}" for case_id in self.dropped]
        return lines


def merge_baseline(
    old: RunResults | None,
    new: RunResults,
    files: Mapping[str, CaseFileRun],
    *,
    path: str,
    case_tolerances: Mapping[str, Mapping[str, float]] = MappingProxyType({}),
) -> BaselineUpdate:
    """`old` with this run's entries replaced or added, and the removed cases of whole files dropped.

    `files` describes the case files this run collected, keyed like `RunResults.case_files`;
    `path` names the baseline in errors. A replaced entry counts as changed when its outcome
    differs or a metric moved beyond its tolerance (`case_tolerances`, as in comparisons): a
    re-measurement in another batch moves float32 numbers in the sixth digit.
    """
    ran = new.by_id()
    previous = old.by_id() if old is not None else {}
    dropped = tuple(case_id for case_id in previous if case_id not in ran and _removed(case_id, files))
    kept = tuple(case_id for case_id in previous if case_id not in ran and case_id not in dropped)
    if old is not None and kept:
        _refuse_mixing(old, new, kept, files, path=path)
    moves = {
        case_id: _move(previous[case_id], ran[case_id], case_tolerances.get(case_id, {}))
        for case_id in ran
        if case_id in previous
    }
    changed = tuple(case_id for case_id, move in moves.items() if move == "changed")
    noise = tuple(case_id for case_id, move in moves.items() if move == "within_noise")
    unchanged = tuple(case_id for case_id, move in moves.items() if move == "unchanged")
    added = tuple(case_id for case_id in ran if case_id not in previous)
    survivors = {**{case_id: previous[case_id] for case_id in kept}, **ran}
    case_files = {**(old.case_files if old is not None else {}), **new.case_files}
    merged = RunResults(
        model=new.model,
        case_files={name: case_files[name] for name in sorted(case_files) if _holds_cases(name, survivors)},
        cases=tuple(survivors[case_id] for case_id in _ordered(survivors, previous, files)),
        environment=new.environment,
        interval_level=new.interval_level,
    )
    return BaselineUpdate(merged, added, changed, unchanged, dropped, kept, noise)


def answered_entries(baseline: RunResults, current: RunResults, files: Mapping[str, CaseFileRun]) -> RunResults:
    """The baseline's entries a run answers for: its own cases, and the cases its whole files lost.

    A case the run did not select (another file, `-k`, a stopped run) is not "missing" from it;
    the same rule decides which entries an update drops.
    """
    ran = current.by_id()
    kept = tuple(case for case in baseline.cases if case.case_id in ran or _removed(case.case_id, files))
    return replace(baseline, cases=kept)


def _removed(case_id: str, files: Mapping[str, CaseFileRun]) -> bool:
    seen = files.get(case_file_of(case_id))
    return seen is not None and seen.whole and case_id not in seen.case_ids


def _move(before: CaseResult, after: CaseResult, tolerances: Mapping[str, float]) -> str:
    """ "changed" (outcome, or a metric beyond its tolerance), "within_noise" or "unchanged"."""
    status = compare_case(before, after, tolerances=tolerances, accept_hint=None).status
    if before.outcome != after.outcome or status not in ("unchanged", "within_noise"):
        return "changed"
    return status


def _holds_cases(case_file: str, cases: Mapping[str, CaseResult]) -> bool:
    return any(case_file_of(case_id) == case_file for case_id in cases)


def _refuse_mixing(
    old: RunResults, new: RunResults, kept: tuple[str, ...], files: Mapping[str, CaseFileRun], *, path: str
) -> None:
    fix = f"run every case of the suite to rewrite it, or remove {path} to start a new baseline"
    before, after = old.model.get("name"), new.model.get("name")
    if before and after and before != after:
        raise BaselineError(
            f"not written: {path} holds {len(kept)} cases of model {before!r} that this run of {after!r} did not "
            f"measure (e.g. {kept[0]}); a baseline of two models would compare each case with the wrong one; {fix}"
        )
    for case_file in sorted({case_file_of(case_id) for case_id in kept}):
        was, now = old.case_files.get(case_file), new.case_files.get(case_file)
        if was and now and was != now:
            ran = sum(1 for case_id in new.by_id() if case_file_of(case_id) == case_file)
            total = len(files[case_file].case_ids) if case_file in files else ran
            raise BaselineError(
                f"not written: case file {case_file} changed since {path} was made, and this run measured {ran} of "
                f"its {total} cases; the others' entries were measured on the old file. Run the whole file "
                f"(pytest {case_file} --baseline {path} --update-baseline) to update its entries together"
            )


def _ordered(
    cases: Mapping[str, CaseResult], previous: Mapping[str, CaseResult], files: Mapping[str, CaseFileRun]
) -> list[str]:
    """Files in path order; within a file, its collection order, then entries it no longer lists.

    A whole-suite update then writes the same file as a fresh one, and a subset update moves no line.
    """
    position: dict[str, int] = {}
    for seen in files.values():
        position |= {case_id: i for i, case_id in enumerate(seen.case_ids)}
    order = {case_id: i for i, case_id in enumerate(previous)}
    return sorted(
        cases,
        key=lambda case_id: (
            case_file_of(case_id),
            case_id not in position,
            position.get(case_id, order.get(case_id, len(order))),
        ),
    )
