"""Compare a run with a stored one: which cases regressed, improved, appeared or vanished.

A baseline is a results file (`RunResults` JSON) from an earlier run. Each case is matched by
its id and each metric compared with a tolerance: a metric that moves the wrong way by more
than its tolerance is a regression, one that moves the right way by more is an improvement, and
anything within tolerance is unchanged. Higher is better unless the case lists the metric in
`lower_is_better` (rank).

The noise rule: when the baseline entry and the current result both have an interval for a
metric (an aggregate over pairs or variants, `seqprobe.records.intervals`), a move beyond the
tolerance whose two intervals overlap is "within noise": neither a regression nor an improvement,
reported with both intervals. Only a move beyond the tolerance whose intervals are disjoint
counts. Without an interval on both sides the tolerance rule alone holds, as before intervals.

Two runs only compare when they measured the same thing. A baseline made with another model
(other name or other weights sha256) is not compared case by case unless asked
(`across_models=True`, which `seqprobe compare` uses to diff two models on purpose); a case whose
case file changed since the baseline is reported as such, with its deltas shown but not judged,
because its thresholds, prompts or distractors may have changed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from seqprobe.records.formatting import format_value, format_with_interval, metric_label
from seqprobe.records.results import CaseResult, RunResults
from seqprobe.records.verdicts import (
    STATUS_TEXT,
    CaseComparison,
    CaseStatus,
    MetricChange,
    MetricVerdict,
    RunComparison,
)
from seqprobe.vocabulary.metrics import DEFAULT_TOLERANCE, DEFAULT_TOLERANCES, METRICS, metric_family

__all__ = [
    "ACCEPT_HINT",
    "case_file_of",
    "compare_case",
    "compare_runs",
    "compare_to_baseline",
    "nothing_compared",
    "summary_lines",
    "tolerance_for",
]

# Messages and tables list the usual metrics in this order.
_METRIC_RANK = {name: i for i, name in enumerate(METRICS)}

ACCEPT_HINT = "to accept, rerun with --update-baseline"

# Model fields that decide whether two runs measured the same model. New weights under the same
# name (a fine-tune, a requantization) are a new version of that model: exactly what a baseline
# exists to check, so sha256, like source, dtype and device, is compared across and stated.
MODEL_IDENTITY = ("name",)
# Environment fields that differ on every run and say nothing about comparability.
VOLATILE_ENVIRONMENT = ("date", "command")


def tolerance_for(metric: str, tolerances: Mapping[str, float]) -> float:
    """The tolerance of `metric`: an override, else the default for its name.

    A metric named "recovery:L3H2" (one per claim) takes "recovery"'s tolerance unless it has
    its own. "*" in `tolerances` replaces the fallback for metrics with no default.
    """
    family = metric_family(metric)
    for source in (tolerances, DEFAULT_TOLERANCES):
        for key in (metric, family):
            if key in source:
                return float(source[key])
    return float(tolerances.get("*", DEFAULT_TOLERANCE))


def compare_case(
    baseline: CaseResult | None,
    current: CaseResult | None,
    *,
    tolerances: Mapping[str, float] = MappingProxyType({}),
    accept_hint: str | None = ACCEPT_HINT,
) -> CaseComparison:
    """Compare one case's metrics with its baseline, each within its tolerance.

    `tolerances` overrides `DEFAULT_TOLERANCES` per metric (the plugin merges case-file and
    command-line overrides into it). `accept_hint` ends the last message line; None leaves it off.
    """
    if baseline is None and current is None:
        raise ValueError("compare_case needs a baseline case, a current case, or both")
    case_id = (current or baseline).case_id  # type: ignore[union-attr]
    changes = _metric_changes(baseline, current, tolerances)
    if baseline is None:
        message = "new: not in the baseline"
        return _uncompared(case_id, "new", [message], None, current, accept_hint, metrics=changes)
    if current is None:
        message = "missing: in the baseline but not in this run"
        return _uncompared(case_id, "missing", [message], baseline, None, accept_hint, metrics=changes)
    verdicts = {change.verdict for change in changes}
    status: CaseStatus = (
        "regressed"
        if verdicts & {"regressed", "missing"}
        else "improved"
        if "improved" in verdicts
        else "within_noise"
        if "within_noise" in verdicts
        else "unchanged"
    )
    lines = [_change_line(change, current.answer or baseline.answer) for change in changes]
    messages = [line for line in lines if line]
    if messages and status in ("regressed", "improved"):
        messages[-1] = _with_hint(messages[-1], accept_hint)
    return CaseComparison(case_id, status, changes, tuple(messages), baseline, current)


def compare_to_baseline(
    baseline: RunResults,
    current: CaseResult,
    *,
    model: Mapping[str, str],
    case_files: Mapping[str, str],
    tolerances: Mapping[str, float] = MappingProxyType({}),
    across_models: bool = False,
    accept_hint: str | None = ACCEPT_HINT,
) -> CaseComparison:
    """Compare one case of a run in progress with `baseline`; `model`, `case_files` are this run's.

    The plugin calls this as each case finishes, to fail the case there; `compare_runs` calls
    it for every case, so both give the same verdict.
    """
    old = baseline.by_id().get(current.case_id)
    comparison = compare_case(old, current, tolerances=tolerances, accept_hint=accept_hint)
    if old is not None and not across_models and _identity_changes(baseline.model, model):
        message = (
            f"not compared: the baseline was made with {_describe_model(baseline.model)}, "
            f"this run uses {_describe_model(model)}"
        )
        return _uncompared(
            current.case_id,
            "model_changed",
            [message],
            old,
            current,
            accept_hint,
            metrics=comparison.metrics,
        )
    path = case_file_of(current.case_id)
    before, after = baseline.case_files.get(path), case_files.get(path)
    if old is not None and before and after and before != after:
        message = (
            f"not compared: case file {path} changed since the baseline (sha256 {_short(before)} → {_short(after)})"
        )
        return _uncompared(
            current.case_id,
            "case_file_changed",
            [message],
            old,
            current,
            accept_hint,
            metrics=comparison.metrics,
        )
    return comparison


def compare_runs(
    baseline: RunResults,
    current: RunResults,
    *,
    tolerances: Mapping[str, float] = MappingProxyType({}),
    case_tolerances: Mapping[str, Mapping[str, float]] = MappingProxyType({}),
    across_models: bool = False,
    accept_hint: str | None = ACCEPT_HINT,
) -> RunComparison:
    """Compare every case of `current` with `baseline`, and the cases only the baseline has.

    A case uses `case_tolerances[case_id]` when given (its case file's overrides merged with
    the command line's), else `tolerances`. With a different model (name or weights sha256)
    and `across_models` False, no case is compared: each is reported as "model_changed".
    """
    cases = [
        compare_to_baseline(
            baseline,
            case,
            model=current.model,
            case_files=current.case_files,
            tolerances=case_tolerances.get(case.case_id, tolerances),
            across_models=across_models,
            accept_hint=accept_hint,
        )
        for case in current.cases
    ]
    seen = {case.case_id for case in current.cases}
    cases += [
        compare_case(
            case,
            None,
            tolerances=case_tolerances.get(case.case_id, tolerances),
            accept_hint=accept_hint,
        )
        for case in baseline.cases
        if case.case_id not in seen
    ]
    identity = _identity_changes(baseline.model, current.model)
    others = _field_changes(baseline.model, current.model, skip=MODEL_IDENTITY)
    levels = (baseline.interval_level, current.interval_level)
    # Overlapping intervals of two levels still mean "within noise", but a reader should know.
    level_change = (
        (f"interval_level: {levels[0]:g} → {levels[1]:g}",) if None not in levels and len(set(levels)) > 1 else ()
    )
    changed_files = tuple(
        f"{path}: {_short(old)} → {_short(current.case_files[path])}"
        for path, old in baseline.case_files.items()
        if path in current.case_files and current.case_files[path] != old
    )
    return RunComparison(
        cases=tuple(cases),
        model_changes=identity + others,
        models_match=not identity,
        changed_case_files=changed_files,
        environment_changes=_field_changes(baseline.environment, current.environment, skip=VOLATILE_ENVIRONMENT)
        + level_change,
    )


def summary_lines(comparison: RunComparison) -> list[str]:
    """Plain lines for a terminal summary or a report: counts, then why runs may differ."""
    counts = comparison.counts()
    total = len(comparison.cases)
    parts = [f"{n} {STATUS_TEXT[status]}" for status, n in counts.items() if n]
    lines = [f"{', '.join(parts) or 'no cases'} ({total} case{'s' * (total != 1)})"]
    changes = "; ".join(comparison.model_changes)
    if not comparison.models_match:
        compared = not comparison.with_status("model_changed")
        verdict = "compared anyway" if compared else "not compared"
        lines.append(f"different model ({verdict}): {changes}")
    elif changes:
        lines.append(f"model settings differ: {changes}")
    lines += [f"case file changed, its cases not compared: {line}" for line in comparison.changed_case_files]
    if comparison.environment_changes:
        lines.append(f"environment differs: {'; '.join(comparison.environment_changes)}")
    return lines


def nothing_compared(baseline: RunResults, current: RunResults, *, baseline_path: str, rootdir: Path) -> str | None:
    """Why a baseline with cases shares no case file with this run, and how to fix it; None when it does."""
    if not baseline.cases or any(case_file_of(case.case_id) in current.case_files for case in baseline.cases):
        return None
    ours = sorted(current.case_files)[0]
    theirs = case_file_of(baseline.cases[0].case_id)
    return (
        f"ERROR: nothing was compared: none of this run's case files is in the baseline {baseline_path} "
        f"(this run has {ours!r}, the baseline {theirs!r}). Case ids are paths relative to pytest's rootdir, "
        f"here {rootdir}. Put a pytest config file (pytest.ini, or [tool.pytest.ini_options] in "
        "pyproject.toml) in the project root the baseline was made in: without one, pytest picks the rootdir "
        "from the paths on the command line, a --model folder's included"
    )


def case_file_of(case_id: str) -> str:
    """The case file part of a `file::suite::case` id: the key into `RunResults.case_files`."""
    return case_id.split("::", 1)[0]


def _metric_changes(
    baseline: CaseResult | None, current: CaseResult | None, tolerances: Mapping[str, float]
) -> tuple[MetricChange, ...]:
    """Every metric either side has: the usual ones in their usual order, then the others."""
    before = baseline.metrics if baseline else {}
    after = current.metrics if current else {}
    lower = {m for case in (baseline, current) if case for m in case.lower_is_better}
    names = sorted(dict.fromkeys([*after, *before]), key=lambda name: _METRIC_RANK.get(name, len(_METRIC_RANK)))
    changes = []
    for name in names:
        old, new = _measured(before, name), _measured(after, name)
        tolerance = tolerance_for(name, tolerances)
        verdict = _verdict(old, new, tolerance, lower_is_better=name in lower)
        change = MetricChange(
            name,
            old,
            new,
            tolerance,
            name in lower,
            verdict,
            baseline_interval=baseline.intervals.get(name) if baseline and old is not None else None,
            current_interval=current.intervals.get(name) if current and new is not None else None,
        )
        if verdict in ("regressed", "improved") and change.intervals_overlap:
            change = replace(change, verdict="within_noise")
        changes.append(change)
    return tuple(changes)


def _measured(metrics: Mapping[str, float], name: str) -> float | None:
    """A metric's value; absent or NaN both mean "not measured"."""
    value = metrics.get(name)
    return None if value is None or math.isnan(value) else float(value)


def _verdict(old: float | None, new: float | None, tolerance: float, *, lower_is_better: bool) -> MetricVerdict:
    if old is None and new is None:
        return "unchanged"
    if old is None:
        return "new"
    if new is None:
        return "missing"
    gain = (old - new) if lower_is_better else (new - old)
    if gain < -tolerance:
        return "regressed"
    if gain > tolerance:
        return "improved"
    return "unchanged"


def _change_line(change: MetricChange, answer: str) -> str:
    label = metric_label(change.metric, answer)
    if change.verdict in ("regressed", "improved", "missing", "within_noise"):
        verdict = {"improved": "improved", "within_noise": "within noise"}.get(change.verdict, "regressed")
        before = format_with_interval(change.baseline, change.baseline_interval)
        after = format_with_interval(change.current, change.current_interval)
        overlap = change.intervals_overlap
        noise = "" if overlap is None else "; the intervals overlap" if overlap else "; the intervals do not overlap"
        return f"{verdict}: {label} {before} → {after} (tolerance {format_value(change.tolerance)}{noise})"
    if change.verdict == "new":
        return f"new metric: {label} = {format_value(change.current)} (not in the baseline)"
    return ""


def _uncompared(
    case_id: str,
    status: CaseStatus,
    messages: list[str],
    baseline: CaseResult | None,
    current: CaseResult | None,
    accept_hint: str | None,
    *,
    metrics: tuple[MetricChange, ...] = (),
) -> CaseComparison:
    messages[-1] = _with_hint(messages[-1], accept_hint)
    return CaseComparison(case_id, status, metrics, tuple(messages), baseline, current)


def _with_hint(line: str, hint: str | None) -> str:
    return f"{line}; {hint}" if hint else line


def _identity_changes(old: Mapping[str, str], new: Mapping[str, str]) -> tuple[str, ...]:
    """Identity fields that differ; one missing on either side (no sha256 known) is no evidence."""
    return tuple(
        f"{key}: {_show(key, old[key])} → {_show(key, new[key])}"
        for key in MODEL_IDENTITY
        if old.get(key) and new.get(key) and old[key] != new[key]
    )


def _field_changes(old: Mapping[str, str], new: Mapping[str, str], *, skip: Sequence[str]) -> tuple[str, ...]:
    keys = [key for key in dict.fromkeys([*old, *new]) if key not in skip]
    return tuple(
        f"{key}: {_show(key, old.get(key, '—'))} → {_show(key, new.get(key, '—'))}"
        for key in keys
        if old.get(key) != new.get(key)
    )


def _describe_model(model: Mapping[str, str]) -> str:
    name = model.get("name", "an unnamed model")
    return f"{name} (sha256 {_short(model['sha256'])})" if model.get("sha256") else name


def _show(key: str, value: str) -> str:
    return _short(value) if key == "sha256" else value


def _short(digest: str) -> str:
    """Enough of a sha256 to tell two apart in a message."""
    return digest[:12]
