"""The pytest plugin: collects `*.seqprobe.yaml` case files and runs each case as a test item.

pytest loads this module at start-up through the `pytest11` entry point in every project that
installs seqprobe, so it imports nothing heavy: torch, transformers and the model load only when
the first case runs (`--collect-only` loads nothing). Only files named `*.seqprobe.yaml` (or
`.seqprobe.yml`) are collected, so a project's other YAML is never touched. The hooks are thin:
one run's work is `seqprobe.session.SeqprobeSession`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from seqprobe.records.intervals import DEFAULT_LEVEL, parse_level
from seqprobe.session import RECORD_ATTRIBUTE, RunSettings, SeqprobeSession
from seqprobe.vocabulary.metrics import parse_tolerance
from seqprobe.vocabulary.options import (
    DEVICE,
    DEVICE_MAP,
    DTYPE,
    MAX_MEMORY,
    MODEL,
    add_max_memory_option,
    add_model_options,
)

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr

    from seqprobe.casefiles.base import Case
    from seqprobe.casefiles.reader import CaseFile
    from seqprobe.loading.models import LoadedModel

__all__ = ["CaseFileCollector", "CaseItem", "SuiteCollector"]

GROUP = "seqprobe"
OPTION_REPORT = "--report"
OPTION_BASELINE = "--baseline"
OPTION_UPDATE_BASELINE = "--update-baseline"
OPTION_TOLERANCE = "--tolerance"
OPTION_ACROSS_MODELS = "--compare-across-models"
OPTION_AS_MODEL = "--as-model"
OPTION_INTERVAL_LEVEL = "--interval-level"
# A markdown report with PNGs beside it, or one interactive HTML file.
REPORT_SUFFIXES = (".md", ".html")

state_key = pytest.StashKey[SeqprobeSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "seqprobe: language-model capability and mechanism cases")
    add_model_options(group.addoption)
    add_max_memory_option(group.addoption)
    group.addoption(
        OPTION_REPORT,
        default=None,
        metavar="PATH.md|PATH.html",
        help="write a capability report: markdown with PNGs (PATH.md) or one interactive, offline file (PATH.html); "
        "every metric goes to PATH.json beside it",
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
        type=parse_tolerance,
        help="baseline tolerance for one metric, e.g. --tolerance p_answer=0.1 (repeatable; overrides case files)",
    )
    group.addoption(
        OPTION_INTERVAL_LEVEL,
        default=DEFAULT_LEVEL,
        type=parse_level,
        metavar="LEVEL",
        help="level of the intervals on pass rates, margins and recoveries, strictly between 0 and 1 "
        f"(default: {DEFAULT_LEVEL}); a baseline change whose intervals overlap is within noise",
    )


def _settings(config: pytest.Config) -> RunSettings:
    model = config.getoption(MODEL.flag)
    return RunSettings(
        model=model,
        device=config.getoption(DEVICE.flag),
        dtype=config.getoption(DTYPE.flag),
        device_map=config.getoption(DEVICE_MAP.flag),
        expectations_of=config.getoption(OPTION_AS_MODEL) or model,
        report=config.getoption(OPTION_REPORT),
        baseline=config.getoption(OPTION_BASELINE),
        update_baseline=config.getoption(OPTION_UPDATE_BASELINE),
        tolerances=dict(config.getoption(OPTION_TOLERANCE)),
        across_models=config.getoption(OPTION_ACROSS_MODELS),
        interval_level=config.getoption(OPTION_INTERVAL_LEVEL),
        max_memory=config.getoption(MAX_MEMORY.flag),
    )


def _check_paths(settings: RunSettings) -> None:
    """Refuse option combinations that would write the wrong file, before anything runs."""
    if settings.update_baseline and not settings.baseline:
        raise pytest.UsageError(f"{OPTION_UPDATE_BASELINE} needs {OPTION_BASELINE} FILE: the file to write")
    if settings.report is None:
        return
    from seqprobe.records.report import results_path_for

    if Path(settings.report).suffix not in REPORT_SUFFIXES:
        raise pytest.UsageError(
            f"{OPTION_REPORT} {settings.report}: give a path ending in .md (markdown with PNGs) or .html "
            "(one interactive, self-contained file); its results go beside it as .json"
        )
    if (
        settings.baseline is not None
        and results_path_for(settings.report).resolve() == Path(settings.baseline).resolve()
    ):
        raise pytest.UsageError(
            f"{OPTION_REPORT} {settings.report} would write its results over the baseline {settings.baseline}; "
            f"choose another report name (only {OPTION_UPDATE_BASELINE} writes a baseline)"
        )


def pytest_configure(config: pytest.Config) -> None:
    settings = _settings(config)
    _check_paths(settings)
    state = config.stash[state_key] = SeqprobeSession(
        settings,
        rootpath=config.rootpath,
        command=config.invocation_params.args,
        is_worker=hasattr(config, "workerinput"),
    )
    # Registered as a plugin for its pytest_runtest_logreport, which pytest hands no config.
    config.pluginmanager.register(state, "seqprobe-session")
    if settings.comparing:
        from seqprobe.errors import BaselineError

        try:
            state.baseline  # noqa: B018 - read it now: a bad file is a usage error, before any model loads
        except BaselineError as error:
            raise pytest.UsageError(f"{OPTION_BASELINE}: {error}") from None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    from seqprobe.casefiles.reader import is_case_file

    if is_case_file(file_path):
        return CaseFileCollector.from_parent(parent, path=file_path)
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    cases = [item.case for item in session.items if isinstance(item, CaseItem)]
    others = [item.nodeid for item in session.items if not isinstance(item, CaseItem)]
    session.config.stash[state_key].select(cases, test_ids=others)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    state = item.config.stash[state_key]
    # On the report, the results travel with it: pytest-xdist forwards a worker's reports,
    # attributes included, to the controller, which alone writes files.
    if isinstance(item, CaseItem) and (report.when == "call" or (report.when == "setup" and not report.passed)):
        setattr(report, RECORD_ATTRIBUTE, [state.record(item.case, report)])
    elif report.when == "call" and item.nodeid in state.python_cases:
        setattr(report, RECORD_ATTRIBUTE, state.python_records(item.nodeid, report))
    return report


@pytest.fixture(scope="session")
def seqprobe_model(request: pytest.FixtureRequest) -> LoadedModel:
    """The model under test (`--model`, `--device`, `--dtype`): the one the run's case files use, loaded once."""
    return request.config.stash[state_key].model


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


class CaseFileCollector(pytest.File):
    """One `*.seqprobe.yaml` file; parsing it validates every case in it."""

    def collect(self) -> Iterator[SuiteCollector]:
        from seqprobe.casefiles.reader import display_path, load_case_file

        case_file = load_case_file(self.path, display_path=display_path(self.path, self.config.rootpath))
        self.config.stash[state_key].add_case_file(case_file)
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
        model_name = self.config.stash[state_key].settings.expectations_of
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
            outcome = state.outcome_for(self.case)
        except Exception as error:
            from seqprobe.errors import ModelLoadError

            if isinstance(error, ModelLoadError):
                self.session.shouldfail = f"seqprobe could not load the model: {error}"
            raise
        if outcome.error is not None:
            raise outcome.error
        regressions = state.regressions(self.case, outcome)
        if regressions:
            raise BaselineRegression([*outcome.failures, *regressions], outcome.explanation)
        if outcome.failures:
            raise ExpectationMiss(list(outcome.failures), outcome.explanation)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], **kwargs: Any) -> str | TerminalRepr:  # type: ignore[override]
        from seqprobe.errors import SeqprobeError

        model = self.config.stash[state_key].settings.model
        header = f"case {self.case.suite}::{self.case.name} ({self.case.location}) on {model}"
        if isinstance(excinfo.value, CaseFailure):
            failed = "\n".join(f"  failed: {line}" for line in excinfo.value.lines)
            return f"{header}\n{failed}\n\n{excinfo.value.explanation}"
        if isinstance(excinfo.value, SeqprobeError):
            return f"{header}\n  {type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo, **kwargs)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.location.line - 1, f"{self.case.suite}::{self.case.name}"
