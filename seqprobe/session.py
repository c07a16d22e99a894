"""One pytest run of case files: the lazy model, batching by kind, recording, and the files at the end.

The plugin's hooks hand everything here (as syrupy's hooks hand their work to its session). The
model loads on the first case that runs, so `--collect-only` loads nothing. The first case of a
kind to run asks that kind's runner for every selected case of the kinds it runs, so forward
passes are batched across the whole run. Each case's result travels on its pytest report, which
pytest-xdist forwards from a worker to the controller: the process that writes the report and the
baseline sees every case, whichever process ran it.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from seqprobe.records.intervals import DEFAULT_LEVEL

if TYPE_CHECKING:
    from seqprobe.casefiles.base import Case
    from seqprobe.casefiles.reader import CaseFile
    from seqprobe.checks.outcome import CheckOutcome
    from seqprobe.loading.models import LoadedModel
    from seqprobe.records.results import CaseResult, RunResults
    from seqprobe.records.update import CaseFileRun

__all__ = [
    "RECORD_ATTRIBUTE",
    "RunSettings",
    "SeqprobeSession",
    "expectations_of",
    "interval_level_of",
    "record_python_case",
]

# The attribute of a TestReport that carries its cases' records (see `SeqprobeSession.record`).
RECORD_ATTRIBUTE = "seqprobe_records"
# The session and the test id while a Python test runs: where `seqprobe.expect` records its cases.
_running: ContextVar[tuple[SeqprobeSession, str] | None] = ContextVar("seqprobe_running_test", default=None)


def record_python_case(case: Case, outcome: CheckOutcome) -> None:
    """Inside a pytest run, a case a Python test states joins the run's results under the test's id."""
    running = _running.get()
    if running is not None:
        session, test_id = running
        session.python_cases.setdefault(test_id, []).append((case, outcome))


def expectations_of(default: str) -> str:
    """Whose per-model expectations apply: the run's (`--as-model`) inside a pytest run, else `default`."""
    return running[0].settings.expectations_of if (running := _running.get()) is not None else default


def interval_level_of(default: float) -> float:
    """The level of intervals on aggregates: the run's (`--interval-level`) inside a pytest run, else `default`."""
    return running[0].settings.interval_level if (running := _running.get()) is not None else default


@dataclass(frozen=True)
class RunSettings:
    """The plugin's options, read once."""

    model: str
    device: str
    dtype: str
    # Whose known failures and per-model expectations apply: a copy of a model answers to its original's.
    expectations_of: str
    report: str | None
    baseline: str | None
    update_baseline: bool
    # Command-line tolerances; they override the case files'.
    tolerances: Mapping[str, float]
    # Compare with a baseline made by a differently named model.
    across_models: bool
    # The level of every aggregate's interval (a case's `confidence` judges at its own level).
    interval_level: float = DEFAULT_LEVEL
    # Bytes a patching sweep's stacked batch may take; None: half the device's free memory.
    max_memory: int | None = None
    # --device-map: accelerate's strategy or module name -> device; None loads on `device`.
    device_map: str | Mapping[str, str | int] | None = None

    def runs_with(self) -> dict[str, Any]:
        """A runner's keyword options (`seqprobe.checks.outcome.Runner`): a report asks for the figures."""
        return {"detail": self.report is not None, "interval_level": self.interval_level, "max_memory": self.max_memory}

    @property
    def comparing(self) -> bool:
        return self.baseline is not None and not self.update_baseline


class SeqprobeSession:
    """Per-run state: the settings, the lazily loaded model, outcomes and received records."""

    def __init__(self, settings: RunSettings, *, rootpath: Path, command: Sequence[str], is_worker: bool) -> None:
        self.settings = settings
        self.rootpath = rootpath
        self.command = list(command)
        # A pytest-xdist worker runs the cases it is sent; only the controller writes files.
        self.is_worker = is_worker
        self.selected: list[Case] = []
        self.outcomes: dict[str, CheckOutcome] = {}
        # Case file (display path) -> sha256, and -> every case id it has, as collected here.
        self.case_files: dict[str, str] = {}
        self.file_case_ids: dict[str, tuple[str, ...]] = {}
        # Case id -> the record of its result (see `record`), from this process or from xdist workers.
        self.received: dict[str, dict[str, Any]] = {}
        # Test id -> the cases its Python assertions stated, in order (see `record_python_case`).
        self.python_cases: dict[str, list[tuple[Case, CheckOutcome]]] = {}
        # Lines for the terminal summary: where files went, how the run compares.
        self.summary: list[str] = []
        # A baseline was given but matched none of this run's case files: the run must not pass.
        self.compared_nothing = False
        self._model: LoadedModel | None = None
        self._load_error: Exception | None = None
        self._baseline: RunResults | None = None
        self._file_runs: dict[str, dict[str, Any]] = {}
        self._positions: dict[str, int] = {}

    # -- collection ----------------------------------------------------------------------------

    def add_case_file(self, case_file: CaseFile) -> None:
        self.case_files[case_file.path] = case_file.sha256
        self.file_case_ids[case_file.path] = tuple(case.case_id for case in case_file.cases())

    def select(self, cases: list[Case], *, test_ids: Sequence[str] = ()) -> None:
        """The cases this run will run, after `-k`, node ids and deselection; `test_ids` are its other tests."""
        self.selected = cases
        chosen: dict[str, set[str]] = {}
        for case in cases:
            chosen.setdefault(case.location.path, set()).add(case.case_id)
        self._file_runs = {
            path: {"sha256": self.case_files[path], "case_ids": list(ids), "whole": chosen.get(path) == set(ids)}
            for path, ids in self.file_case_ids.items()
        }
        # Results are written in this order, whichever process ran them: case files first, then Python tests.
        self._positions = {case.case_id: position for position, case in enumerate(cases)}
        self._positions |= {test_id: len(cases) + i for i, test_id in enumerate(test_ids)}

    # -- running -------------------------------------------------------------------------------

    @property
    def baseline(self) -> RunResults:
        if self._baseline is None:
            from seqprobe.records.results import load_results

            assert self.settings.baseline is not None
            self._baseline = load_results(self.settings.baseline)
        return self._baseline

    @property
    def model(self) -> LoadedModel:
        if self._load_error is not None:
            raise self._load_error
        if self._model is None:
            from seqprobe.loading.models import load_model, share_cores_among_xdist_workers

            if self.is_worker:
                share_cores_among_xdist_workers()
            try:
                settings = self.settings
                self._model = load_model(
                    settings.model, device=settings.device, dtype=settings.dtype, device_map=settings.device_map
                )
            except Exception as error:
                self._load_error = error
                raise
        return self._model

    def model_info(self) -> dict[str, str]:
        return self._model.info.to_json() if self._model is not None else {"name": self.settings.model}

    def tolerances_for(self, case: Case) -> dict[str, float]:
        """The case file's tolerances, overridden by the command line's."""
        return {**case.tolerance, **self.settings.tolerances}

    def outcome_for(self, case: Case) -> CheckOutcome:
        if case.case_id not in self.outcomes:
            from seqprobe.checks.runners import RUNNERS

            # Kinds that share a runner run together (their prompts share one prefix tree). A
            # pytest-xdist worker runs only the items the controller sends it, so batching the
            # whole selection would compute every other worker's cases too.
            runner = RUNNERS[case.kind]
            pending = [
                other
                for other in ([case] if self.is_worker else self.selected)
                if RUNNERS[other.kind] is runner and other.case_id not in self.outcomes
            ]
            if case not in pending:
                pending.append(case)
            *others, last = dict.fromkeys(other.kind for other in pending)
            kinds = f"{', '.join(others)} and {last}" if others else last
            print(f"\nseqprobe: running {len(pending)} {kinds} case(s) on {self.settings.model}", file=sys.stderr)
            self.outcomes.update(
                runner(self.model, self.settings.expectations_of, pending, **self.settings.runs_with())
            )
        return self.outcomes[case.case_id]

    def regressions(self, case: Case, outcome: CheckOutcome) -> list[str]:
        """Baseline lines that fail this case (empty when not comparing or within tolerance)."""
        if not self.settings.comparing or outcome.error is not None:
            return []
        from seqprobe.checks.recording import case_result
        from seqprobe.records.baseline import ACCEPT_HINT, compare_to_baseline

        status = "failed" if outcome.failures else "passed"
        comparison = compare_to_baseline(
            self.baseline,
            case_result(case, outcome, status=status, expectations_of=self.settings.expectations_of),
            model=self.model_info(),
            case_files=self.case_files,
            tolerances=self.tolerances_for(case),
            across_models=self.settings.across_models,
            accept_hint=None,
        )
        if comparison.status != "regressed":
            return []
        # Only the falls fail the case; an improvement of another of its metrics is not a failure.
        lines = [line for line in comparison.messages if line.startswith("regressed")]
        return [*lines[:-1], f"{lines[-1]}; {ACCEPT_HINT}"]

    # -- recording -----------------------------------------------------------------------------

    def record(self, case: Case, report: pytest.TestReport) -> dict[str, Any]:
        """The case's result with what the process writing files needs to know of it (plain JSON)."""
        path = case.location.path
        return self._record(self._result_of(case, report), case, self._file_runs[path])

    def python_records(self, test_id: str, report: pytest.TestReport) -> list[dict[str, Any]]:
        """The records of the cases a Python test stated, each under the test's id and the case's name.

        Their file is the test module: its cases are never all known, so an update never drops one.
        """
        from seqprobe.checks.recording import case_result, status_of

        stated = self.python_cases.pop(test_id, [])
        module = test_id.split("::", 1)[0]
        if module not in self.case_files:  # read once per test module, not once per test
            self.case_files[module] = _file_sha256(self.rootpath / module)
        file_run = {"sha256": self.case_files[module], "case_ids": [], "whole": False}
        records, seen = [], set()
        for case, outcome in stated:
            status = status_of(case, outcome, expectations_of=self.settings.expectations_of)
            if hasattr(report, "wasxfail"):
                status = {"failed": "xfailed", "passed": "xpassed"}.get(status, status)
            case_id = f"{test_id}::{case.name}"
            while case_id in seen:
                case_id += "+"
            seen.add(case_id)
            result = replace(
                case_result(case, outcome, status=status, expectations_of=self.settings.expectations_of),
                case_id=case_id,
            )
            position = [self._positions.get(test_id, len(self._positions)), len(records)]
            records.append(self._record(result, case, {"path": module, **file_run}, position=position))
        return records

    def _record(
        self, result: CaseResult, case: Case, file_run: Mapping[str, Any], *, position: list[int] | None = None
    ) -> dict[str, Any]:
        return {
            "position": [self._positions.get(result.case_id, len(self._positions)), 0]
            if position is None
            else position,
            "result": result.to_json(),
            "model": self.model_info(),
            "tolerances": self.tolerances_for(case),
            "case_file": {"path": case.location.path, **file_run},
        }

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        """While a test runs, `seqprobe.expect` records the cases it states for this test."""
        token = _running.set((self, item.nodeid))
        try:
            return (yield)
        finally:
            _running.reset(token)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Registered as a plugin for this hook: reports reach it from this process and from xdist workers."""
        for record in getattr(report, RECORD_ATTRIBUTE, ()):
            self.received[record["result"]["case_id"]] = record

    def _result_of(self, case: Case, report: pytest.TestReport) -> CaseResult:
        from seqprobe.checks.outcome import CheckOutcome
        from seqprobe.checks.recording import case_result

        if report.passed:
            status = "xpassed" if hasattr(report, "wasxfail") else "passed"
        elif report.skipped:
            status = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        else:
            status = "failed" if report.when == "call" else "error"
        outcome = self.outcomes.get(case.case_id)
        if outcome is None:
            outcome = CheckOutcome(failures=(str(report.longrepr),))
        elif outcome.error is not None:
            status = "error"
        return case_result(case, outcome, status=status, expectations_of=self.settings.expectations_of)

    # -- finishing -----------------------------------------------------------------------------

    def finish(self) -> None:
        """Write the baseline and report the options ask for; nothing when no case ran.

        Under pytest-xdist only the controller writes, from the records every worker sent.
        """
        if not self.received or self.is_worker:
            return
        from datetime import UTC, datetime

        from seqprobe.records.results import CaseResult, RunResults, run_environment
        from seqprobe.records.update import CaseFileRun

        records = sorted(self.received.values(), key=lambda record: record["position"])
        files = {
            record["case_file"]["path"]: CaseFileRun(
                sha256=record["case_file"]["sha256"],
                case_ids=tuple(record["case_file"]["case_ids"]),
                whole=record["case_file"]["whole"],
            )
            for record in records
        }
        results = RunResults(
            # The model's metadata as the last case saw it: loaded by then, unless it failed to load.
            model=max((record["model"] for record in records), key=len),
            case_files={path: run.sha256 for path, run in sorted(files.items())},
            cases=tuple(CaseResult.from_json(record["result"]) for record in records),
            environment=run_environment(command=["pytest", *self.command], now=datetime.now(UTC)),
            interval_level=self.settings.interval_level,
        )
        case_tolerances = {record["result"]["case_id"]: record["tolerances"] for record in records}
        if self.settings.update_baseline:
            self._update_baseline(results, files, case_tolerances)
        comparison = self._compare(results, files, case_tolerances) if self.settings.comparing else None
        if self.settings.report is not None:
            from seqprobe.records.html import write_html_report
            from seqprobe.records.report import write_report

            print(file=sys.stderr)  # after pytest's progress dots
            interactive = Path(self.settings.report).suffix == ".html"
            written = (write_html_report if interactive else write_report)(
                results,
                self.settings.report,
                comparison=comparison,
                baseline_label=self.settings.baseline or "",
                protect=[self.settings.baseline] if self.settings.baseline else [],
                progress=lambda line: print(line, file=sys.stderr),
            )
            figures = sum(len(case.details.get("figures", ())) for case in results.cases)
            self.summary.append(f"report written: {written.markdown} (results: {written.results}, {figures} figures)")

    def _update_baseline(
        self, results: RunResults, files: dict[str, CaseFileRun], case_tolerances: dict[str, dict[str, float]]
    ) -> None:
        """Merge this run into the baseline file: replace what ran, keep the rest (see records.update)."""
        from seqprobe.records.results import load_results, write_baseline
        from seqprobe.records.update import merge_baseline

        path = self.settings.baseline
        assert path is not None  # the plugin requires it with --update-baseline
        old = load_results(path) if Path(path).exists() else None
        update = merge_baseline(old, results, files, path=path, case_tolerances=case_tolerances)
        write_baseline(update.results, path)
        self.summary.extend(update.summary_lines(path))

    def _compare(
        self, results: RunResults, files: dict[str, CaseFileRun], case_tolerances: dict[str, dict[str, float]]
    ) -> Any:
        from seqprobe.records.baseline import compare_runs, nothing_compared, summary_lines
        from seqprobe.records.update import answered_entries

        problem = nothing_compared(
            self.baseline, results, baseline_path=str(self.settings.baseline), rootdir=self.rootpath
        )
        if problem:
            self.summary.append(problem)
            self.compared_nothing = True
        comparison = compare_runs(
            answered_entries(self.baseline, results, files),
            results,
            tolerances=self.settings.tolerances,
            case_tolerances=case_tolerances,
            across_models=self.settings.across_models,
        )
        self.summary.extend(summary_lines(comparison))
        return comparison


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
