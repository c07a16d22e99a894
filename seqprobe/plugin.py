"""The pytest plugin: collects `*.seqprobe.yaml` case files and runs each case as a test item.

pytest loads this module at start-up through the `pytest11` entry point in every project that
installs seqprobe, so it imports nothing heavy: torch, transformers and the model load only when
the first case runs (`--collect-only` loads nothing). Only files named `*.seqprobe.yaml` (or
`.seqprobe.yml`) are collected, so a project's other YAML is never touched.

Cases of one kind run together: the first item of a kind to run asks that kind's runner for
every selected case of the kind, so forward passes are batched across the whole session.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from seqprobe.loading.known import DEFAULT_MODEL

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr

    from seqprobe.cases.base import Case
    from seqprobe.cases.casefile import CaseFile
    from seqprobe.checks.outcome import CheckOutcome
    from seqprobe.loading.models import LoadedModel
    from seqprobe.records.results import CaseResult, RunResults
    from seqprobe.records.update import CaseFileRun

__all__ = ["CaseFileCollector", "CaseItem", "SeqprobeSession"]

GROUP = "seqprobe"
OPTION_MODEL = "--model"
OPTION_DEVICE = "--device"
OPTION_DTYPE = "--dtype"
OPTION_REPORT = "--report"
OPTION_BASELINE = "--baseline"
OPTION_UPDATE_BASELINE = "--update-baseline"
OPTION_TOLERANCE = "--tolerance"
OPTION_ACROSS_MODELS = "--compare-across-models"
OPTION_AS_MODEL = "--as-model"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "seqprobe: language-model capability and mechanism cases")
    group.addoption(
        OPTION_MODEL,
        default=DEFAULT_MODEL,
        help=f"model to test: a known name, a hub name, a model folder or a .gguf file (default: {DEFAULT_MODEL})",
    )
    group.addoption(
        OPTION_DEVICE, default="auto", help="torch device: auto (cuda when available), cpu, cuda, cuda:1, ..."
    )
    group.addoption(
        OPTION_DTYPE,
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="weights dtype (default: float32)",
    )
    group.addoption(
        OPTION_REPORT,
        default=None,
        metavar="PATH.md",
        help="write a markdown capability report (with PNGs and a PATH.json results file)",
    )
    group.addoption(
        OPTION_BASELINE,
        default=None,
        metavar="PATH.json",
        help="compare every case with this results file; a metric that falls beyond its tolerance fails the case",
    )
    group.addoption(
        OPTION_UPDATE_BASELINE,
        action="store_true",
        default=False,
        help="write this run's results to the --baseline file instead of comparing",
    )
    group.addoption(
        OPTION_ACROSS_MODELS,
        action="store_true",
        default=False,
        help="compare with a --baseline made by a differently named model (e.g. a fine-tuned or damaged copy in a folder)",
    )
    group.addoption(
        OPTION_AS_MODEL,
        default=None,
        metavar="NAME",
        help="hold the model to NAME's known failures and per-model expectations "
        "(for a fine-tuned, quantized or damaged copy of NAME loaded from a folder; default: --model)",
    )
    group.addoption(
        OPTION_TOLERANCE,
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        type=_parse_tolerance,
        help="baseline tolerance for one metric, e.g. --tolerance p_answer=0.1 (repeatable; overrides case files)",
    )


def _parse_tolerance(text: str) -> tuple[str, float]:
    from seqprobe.records.baseline import parse_tolerance

    return parse_tolerance(text)


state_key = pytest.StashKey["SeqprobeSession"]()
# The attribute of a TestReport that carries its case's result (see pytest_runtest_makereport).
RECORD_ATTRIBUTE = "seqprobe_record"


def pytest_configure(config: pytest.Config) -> None:
    report = config.getoption(OPTION_REPORT)
    baseline = config.getoption(OPTION_BASELINE)
    if config.getoption(OPTION_UPDATE_BASELINE) and not baseline:
        raise pytest.UsageError(f"{OPTION_UPDATE_BASELINE} needs {OPTION_BASELINE} FILE: the file to write")
    if report is not None:
        from seqprobe.records.report import results_path_for

        if Path(report).suffix != ".md":
            raise pytest.UsageError(
                f"{OPTION_REPORT} {report}: give a markdown path ending in .md (its results go beside it as .json)"
            )
        if baseline is not None and results_path_for(report).resolve() == Path(baseline).resolve():
            raise pytest.UsageError(
                f"{OPTION_REPORT} {report} would write its results over the baseline {baseline}; "
                f"choose another report name (only {OPTION_UPDATE_BASELINE} writes a baseline)"
            )
    state = config.stash[state_key] = SeqprobeSession(config)
    # Registered as a plugin for its pytest_runtest_logreport, which pytest hands no config.
    config.pluginmanager.register(state, "seqprobe-session")
    if state.comparing:
        from seqprobe.errors import BaselineError

        try:
            state.baseline  # noqa: B018 - read it now: a bad file is a usage error, before any model loads
        except BaselineError as error:
            raise pytest.UsageError(f"{OPTION_BASELINE}: {error}") from None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    from seqprobe.cases.casefile import is_case_file

    if is_case_file(file_path):
        return CaseFileCollector.from_parent(parent, path=file_path)
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[state_key].select([item for item in session.items if isinstance(item, CaseItem)])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if isinstance(item, CaseItem) and (report.when == "call" or (report.when == "setup" and not report.passed)):
        # On the report, the result travels with it: pytest-xdist forwards a worker's reports,
        # attributes included, to the controller, which alone writes files.
        setattr(report, RECORD_ATTRIBUTE, item.config.stash[state_key].record(item, report))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    from seqprobe.errors import SeqprobeError

    state = session.config.stash[state_key]
    try:
        state.finish()
    except (SeqprobeError, OSError) as error:
        state.summary.append(f"ERROR: seqprobe could not write its files: {type(error).__name__}: {error}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if state.compared_nothing:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash[state_key].summary
    if lines:
        terminalreporter.section("seqprobe")
        for line in lines:
            terminalreporter.write_line(line)


class CaseFailure(Exception):
    """A case ran and missed an expectation (as opposed to an error running it)."""

    def __init__(self, lines: list[str], explanation: str) -> None:
        self.lines = lines
        self.explanation = explanation
        super().__init__("; ".join(lines))


class ExpectationMiss(CaseFailure):
    """The case missed one of its bars; a recorded known failure expects exactly this."""


class BaselineRegression(CaseFailure):
    """The case fell below its baseline; fails even a known failure, whose xfail expects only ExpectationMiss."""


class SeqprobeSession:
    """Per-session state: options, the lazily loaded model, outcomes and recorded results."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.model_name: str = config.getoption(OPTION_MODEL, DEFAULT_MODEL)
        # Whose known failures and per-model expectations apply: a copy of a model answers to its original's.
        self.expectations_of: str = config.getoption(OPTION_AS_MODEL, None) or self.model_name
        self.selected: list[CaseItem] = []
        self.outcomes: dict[str, CheckOutcome] = {}
        # Case file (display path) -> sha256, and -> every case id it has, as collected here.
        self.case_files: dict[str, str] = {}
        self.file_case_ids: dict[str, tuple[str, ...]] = {}
        # Case id -> the record of its result (see `record`), from this process or from xdist workers.
        self.received: dict[str, dict[str, Any]] = {}
        # Lines for the terminal summary: where files went, how the run compares.
        self.summary: list[str] = []
        self.report_path: str | None = config.getoption(OPTION_REPORT)
        self.baseline_path: str | None = config.getoption(OPTION_BASELINE)
        self.update_baseline: bool = config.getoption(OPTION_UPDATE_BASELINE)
        self.cli_tolerances: dict[str, float] = dict(config.getoption(OPTION_TOLERANCE))
        self.across_models: bool = config.getoption(OPTION_ACROSS_MODELS)
        self._model: LoadedModel | None = None
        self._load_error: Exception | None = None
        self._baseline: RunResults | None = None
        # A baseline was given but matched none of this run's case files: the run must not pass.
        self.compared_nothing = False

    @property
    def is_worker(self) -> bool:
        """A pytest-xdist worker: it runs cases, the controller writes the files."""
        return hasattr(self.config, "workerinput")

    @property
    def comparing(self) -> bool:
        return self.baseline_path is not None and not self.update_baseline

    @property
    def baseline(self) -> RunResults:
        if self._baseline is None:
            from seqprobe.records.baseline import load_results

            self._baseline = load_results(self.baseline_path)
        return self._baseline

    def model_info(self) -> dict[str, str]:
        return self._model.info.to_json() if self._model is not None else {"name": self.model_name}

    def tolerances_for(self, case: Case) -> dict[str, float]:
        """The case file's tolerances, overridden by the command line's."""
        return {**case.tolerance, **self.cli_tolerances}

    def regressions(self, item: CaseItem, outcome: CheckOutcome) -> list[str]:
        """Baseline lines that fail this case (empty when not comparing or within tolerance)."""
        if not self.comparing or outcome.error is not None:
            return []
        from seqprobe.records.baseline import ACCEPT_HINT, compare_to_baseline

        current = self.case_result(item, outcome, "failed" if outcome.failures else "passed")
        comparison = compare_to_baseline(
            self.baseline,
            current,
            model=self.model_info(),
            case_files=self.case_files,
            tolerances=self.tolerances_for(item.case),
            across_models=self.across_models,
        )
        if comparison.status != "regressed":
            return []
        # Only the falls fail the case; an improvement of another of its metrics is not a failure.
        lines = [line.removesuffix(f"; {ACCEPT_HINT}") for line in comparison.messages if line.startswith("regressed")]
        return [*lines[:-1], f"{lines[-1]}; {ACCEPT_HINT}"]

    @property
    def model(self) -> LoadedModel:
        if self._load_error is not None:
            raise self._load_error
        if self._model is None:
            from seqprobe.loading.models import load_model

            if self.is_worker:
                _share_cores_with_other_workers()
            try:
                self._model = load_model(
                    self.model_name,
                    device=self.config.getoption(OPTION_DEVICE),
                    dtype=self.config.getoption(OPTION_DTYPE),
                )
            except Exception as error:
                self._load_error = error
                raise
        return self._model

    def select(self, items: list[CaseItem]) -> None:
        """The cases this run will run, after `-k`, node ids and deselection."""
        self.selected = items
        chosen: dict[str, set[str]] = {}
        for item in items:
            chosen.setdefault(item.case.location.path, set()).add(item.case.case_id)
        self._file_runs = {
            path: {"sha256": self.case_files[path], "case_ids": list(ids), "whole": chosen.get(path) == set(ids)}
            for path, ids in self.file_case_ids.items()
        }
        self._positions = {item.case.case_id: position for position, item in enumerate(items)}

    def outcome_for(self, item: CaseItem) -> CheckOutcome:
        case = item.case
        if case.case_id not in self.outcomes:
            from seqprobe.checks.runners import RUNNERS

            # A pytest-xdist worker runs only the items the controller sends it, so batching the
            # whole selection would compute every other worker's cases too.
            pending = (
                [case]
                if self.is_worker
                else [
                    other.case
                    for other in self.selected
                    if other.case.kind == case.kind and other.case.case_id not in self.outcomes
                ]
            )
            if case not in pending:
                pending.append(case)
            print(f"\nseqprobe: running {len(pending)} {case.kind} case(s) on {self.model_name}", file=sys.stderr)
            self.outcomes.update(
                RUNNERS[case.kind](self.model, self.expectations_of, pending, detail=self.report_path is not None)
            )
        return self.outcomes[case.case_id]

    def record(self, item: CaseItem, report: pytest.TestReport) -> dict[str, Any]:
        """The item's result with what the process writing files needs to know of it (plain JSON)."""
        path = item.case.location.path
        return {
            "position": self._positions.get(item.case.case_id, len(self._positions)),
            "result": self._case_result_of(item, report).to_json(),
            "model": self.model_info(),
            "tolerances": self.tolerances_for(item.case),
            "case_file": {"path": path, **self._file_runs[path]},
        }

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = getattr(report, RECORD_ATTRIBUTE, None)
        if record is not None:
            self.received[record["result"]["case_id"]] = record

    def _case_result_of(self, item: CaseItem, report: pytest.TestReport) -> CaseResult:
        if report.passed:
            status = "xpassed" if hasattr(report, "wasxfail") else "passed"
        elif report.skipped:
            status = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        else:
            status = "failed" if report.when == "call" else "error"
        outcome = self.outcomes.get(item.case.case_id)
        if outcome is None:
            from seqprobe.checks.outcome import CheckOutcome

            outcome = CheckOutcome(failures=(str(report.longrepr),))
        elif outcome.error is not None:
            status = "error"
            outcome = replace(outcome, failures=(str(outcome.error),))
        return self.case_result(item, outcome, status)

    def case_result(self, item: CaseItem, outcome: CheckOutcome, status: str) -> CaseResult:
        from seqprobe.records.results import CaseResult

        return CaseResult(
            case_id=item.case.case_id,
            suite=item.case.suite,
            kind=item.case.kind,
            outcome=status,  # type: ignore[arg-type]
            metrics=dict(outcome.metrics),
            prompt=outcome.prompt,
            answer=outcome.answer,
            failures=tuple(outcome.failures),
            known_failure=item.case.known_failure_for(self.expectations_of),
            details=dict(outcome.details),
            lower_is_better=tuple(outcome.lower_is_better),
        )

    def finish(self) -> None:
        """Write the baseline and report the options ask for; nothing when no case ran.

        Under pytest-xdist only the controller writes, from the records every worker sent.
        """
        if not self.received or self.is_worker:
            return
        from datetime import UTC, datetime

        from seqprobe.records.results import CaseResult, RunResults
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
        # The model's metadata as the last case saw it: loaded by then, unless it failed to load.
        results = RunResults(
            model=max((record["model"] for record in records), key=len),
            case_files={path: run.sha256 for path, run in sorted(files.items())},
            cases=tuple(CaseResult.from_json(record["result"]) for record in records),
            environment=_environment(self.config, datetime.now(UTC)),
        )
        case_tolerances = {record["result"]["case_id"]: record["tolerances"] for record in records}
        if self.update_baseline:
            self._update_baseline(results, files, case_tolerances)
        comparison = None
        if self.comparing:
            from seqprobe.records.baseline import compare_runs, summary_lines

            if self.baseline.cases and not self._shares_case_files(results):
                self.summary.append(self._nothing_compared(results))
                self.compared_nothing = True
            comparison = compare_runs(
                self._baseline_for(results, files),
                results,
                tolerances=self.cli_tolerances,
                case_tolerances=case_tolerances,
                across_models=self.across_models,
            )
            self.summary.extend(summary_lines(comparison))
        if self.report_path is not None:
            from seqprobe.records.report import write_report

            print(file=sys.stderr)  # after pytest's progress dots

            written = write_report(
                results,
                self.report_path,
                comparison=comparison,
                baseline_label=self.baseline_path or "",
                protect=[self.baseline_path] if self.baseline_path else [],
                progress=lambda line: print(line, file=sys.stderr),
            )
            self.summary.append(
                f"report written: {written.markdown} (results: {written.results}, {len(written.figures)} figures)"
            )

    def _update_baseline(
        self, results: RunResults, files: dict[str, CaseFileRun], case_tolerances: dict[str, dict[str, float]]
    ) -> None:
        """Merge this run into the baseline file: replace what ran, keep the rest (see baseline_merge)."""
        from seqprobe.records.baseline import load_results, write_baseline
        from seqprobe.records.update import merge_baseline

        assert self.baseline_path is not None  # pytest_configure requires it with --update-baseline
        old = load_results(self.baseline_path) if Path(self.baseline_path).exists() else None
        update = merge_baseline(old, results, files, path=self.baseline_path, case_tolerances=case_tolerances)
        write_baseline(update.results, self.baseline_path)
        self.summary.extend(update.summary_lines(self.baseline_path))

    def _shares_case_files(self, results: RunResults) -> bool:
        from seqprobe.records.baseline import case_file_of

        return any(case_file_of(case.case_id) in results.case_files for case in self.baseline.cases)

    def _nothing_compared(self, results: RunResults) -> str:
        """Why a baseline with cases matched none of this run's files, and how to fix it."""
        from seqprobe.records.baseline import case_file_of

        ours = sorted(results.case_files)[0]
        theirs = case_file_of(self.baseline.cases[0].case_id)
        return (
            f"ERROR: nothing was compared: none of this run's case files is in the baseline {self.baseline_path} "
            f"(this run has {ours!r}, the baseline {theirs!r}). Case ids are paths relative to pytest's rootdir, "
            f"here {self.config.rootpath}. Put a pytest config file (pytest.ini, or [tool.pytest.ini_options] in "
            "pyproject.toml) in the project root the baseline was made in: without one, pytest picks the rootdir "
            "from the paths on the command line, a --model folder's included"
        )

    def _baseline_for(self, results: RunResults, files: dict[str, CaseFileRun]) -> RunResults:
        """The baseline's entries this run answers for: its cases, and the cases its whole files lost.

        A case this run did not select (another file, `-k`, a stopped run) is not "missing" from it.
        """
        from dataclasses import replace as replace_fields

        from seqprobe.records.baseline import case_file_of

        ran = results.by_id()

        def answered(case_id: str) -> bool:
            seen = files.get(case_file_of(case_id))
            return case_id in ran or (seen is not None and seen.whole and case_id not in seen.case_ids)

        return replace_fields(
            self.baseline, cases=tuple(case for case in self.baseline.cases if answered(case.case_id))
        )


def _share_cores_with_other_workers() -> None:
    """Give each of N xdist workers 1/N of the cores, unless the user set a thread count.

    Each worker's torch otherwise starts one thread per core, and N workers oversubscribe them.
    """
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _environment(config: pytest.Config, now: Any) -> dict[str, str]:
    from seqprobe.records.report import run_environment

    return run_environment(command=["pytest", *config.invocation_params.args], now=now)


class CaseFileCollector(pytest.File):
    """One `*.seqprobe.yaml` file; parsing it validates every case in it."""

    def collect(self) -> Iterator[SuiteCollector]:
        from seqprobe.cases.casefile import load_case_file

        display = (
            self.path.relative_to(self.config.rootpath).as_posix()
            if self.path.is_relative_to(self.config.rootpath)
            else self.path.as_posix()
        )
        case_file = load_case_file(self.path, display_path=display)
        state = self.config.stash[state_key]
        state.case_files[display] = case_file.sha256
        state.file_case_ids[display] = tuple(case.case_id for case in case_file.cases())
        for suite in case_file.suites:
            yield SuiteCollector.from_parent(self, name=suite.name, case_file=case_file, suite_name=suite.name)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], **kwargs: Any) -> str | TerminalRepr:  # type: ignore[override]
        """seqprobe's own errors as one line; anything else as pytest shows it (with pytest's keywords)."""
        from seqprobe.errors import SeqprobeError

        if isinstance(excinfo.value, SeqprobeError):
            return f"{type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo, **kwargs)


class SuiteCollector(pytest.Collector):
    def __init__(self, *, case_file: CaseFile, suite_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case_file = case_file
        self.suite_name = suite_name

    def collect(self) -> Iterator[CaseItem]:
        model_name = self.config.stash[state_key].expectations_of
        suite = next(s for s in self.case_file.suites if s.name == self.suite_name)
        for case in suite.cases:
            item = CaseItem.from_parent(self, name=case.name, case=case)
            reason = case.known_failure_for(model_name)
            if reason is not None:
                item.add_marker(
                    pytest.mark.xfail(
                        reason=f"known failure of {model_name}: {reason}", raises=ExpectationMiss, strict=False
                    )
                )
            yield item


class CaseItem(pytest.Item):
    def __init__(self, *, case: Case, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        state = self.config.stash[state_key]
        try:
            outcome = state.outcome_for(self)
        except Exception as error:
            from seqprobe.errors import ModelLoadError

            if isinstance(error, ModelLoadError):
                self.session.shouldfail = f"seqprobe could not load the model: {error}"
            raise
        if outcome.error is not None:
            raise outcome.error
        regressions = state.regressions(self, outcome)
        if regressions:
            raise BaselineRegression([*outcome.failures, *regressions], outcome.explanation)
        if outcome.failures:
            raise ExpectationMiss(list(outcome.failures), outcome.explanation)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], **kwargs: Any) -> str | TerminalRepr:  # type: ignore[override]
        from seqprobe.errors import SeqprobeError

        model = self.config.stash[state_key].model_name
        header = f"case {self.case.suite}::{self.case.name} ({self.case.location}) on {model}"
        if isinstance(excinfo.value, CaseFailure):
            failed = "\n".join(f"  failed: {line}" for line in excinfo.value.lines)
            return f"{header}\n{failed}\n\n{excinfo.value.explanation}"
        if isinstance(excinfo.value, SeqprobeError):
            return f"{header}\n  {type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo, **kwargs)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.location.line - 1, f"{self.case.suite}::{self.case.name}"
