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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from seqprobe.casefile import Case, CaseFile
    from seqprobe.checks import CheckOutcome
    from seqprobe.models import LoadedModel
    from seqprobe.results import CaseResult

__all__ = ["CaseFileCollector", "CaseItem", "SeqprobeSession"]

GROUP = "seqprobe"
OPTION_MODEL = "--model"
OPTION_DEVICE = "--device"
OPTION_DTYPE = "--dtype"
OPTION_REPORT = "--report"
OPTION_BASELINE = "--baseline"
OPTION_UPDATE_BASELINE = "--update-baseline"
OPTION_TOLERANCE = "--tolerance"
DEFAULT_MODEL = "smollm2-135m"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "seqprobe: language-model capability and mechanism cases")
    group.addoption(
        OPTION_MODEL,
        default=DEFAULT_MODEL,
        help=f"model to test: a known name, a hub name, a model folder or a .gguf file (default: {DEFAULT_MODEL})",
    )
    group.addoption(OPTION_DEVICE, default="auto", help="torch device: auto (cuda when available), cpu, cuda, cuda:1, ...")
    group.addoption(OPTION_DTYPE, default="float32", choices=("float32", "bfloat16", "float16"), help="weights dtype (default: float32)")
    group.addoption(OPTION_REPORT, default=None, metavar="PATH.md", help="write a markdown capability report (with PNGs and a PATH.json results file)")
    group.addoption(OPTION_BASELINE, default=None, metavar="PATH.json", help="compare every case with this results file; a metric that falls beyond its tolerance fails the case")
    group.addoption(OPTION_UPDATE_BASELINE, action="store_true", default=False, help="write this run's results to the --baseline file instead of comparing")
    group.addoption(
        OPTION_TOLERANCE,
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="baseline tolerance for one metric, e.g. --tolerance p_answer=0.1 (repeatable; overrides case files)",
    )


state_key = pytest.StashKey["SeqprobeSession"]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[state_key] = SeqprobeSession(config)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    from seqprobe.casefile import is_case_file

    if is_case_file(file_path):
        return CaseFileCollector.from_parent(parent, path=file_path)
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[state_key].selected = [item for item in session.items if isinstance(item, CaseItem)]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if isinstance(item, CaseItem) and (report.when == "call" or (report.when == "setup" and not report.passed)):
        item.config.stash[state_key].record(item, report)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[state_key].finish()


class CaseFailure(Exception):
    """A case ran and missed an expectation (as opposed to an error running it)."""

    def __init__(self, lines: list[str], explanation: str) -> None:
        self.lines = lines
        self.explanation = explanation
        super().__init__("; ".join(lines))


class SeqprobeSession:
    """Per-session state: options, the lazily loaded model, outcomes and recorded results."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.model_name: str = config.getoption(OPTION_MODEL, DEFAULT_MODEL)
        self.selected: list[CaseItem] = []
        self.outcomes: dict[str, CheckOutcome] = {}
        self.results: list[CaseResult] = []
        self.case_files: dict[str, str] = {}
        self._model: LoadedModel | None = None
        self._load_error: Exception | None = None

    @property
    def model(self) -> LoadedModel:
        if self._load_error is not None:
            raise self._load_error
        if self._model is None:
            from seqprobe.models import load_model

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

    def outcome_for(self, item: CaseItem) -> CheckOutcome:
        case = item.case
        if case.case_id not in self.outcomes:
            from seqprobe.checks import get_runner

            pending = [
                other.case
                for other in self.selected
                if other.case.kind == case.kind and other.case.case_id not in self.outcomes
            ]
            if case not in pending:
                pending.append(case)
            print(f"\nseqprobe: running {len(pending)} {case.kind} case(s) on {self.model_name}", file=sys.stderr)
            self.outcomes.update(get_runner(case.kind)(self.model, self.model_name, pending))
        return self.outcomes[case.case_id]

    def record(self, item: CaseItem, report: pytest.TestReport) -> None:
        from seqprobe.results import CaseResult

        if report.passed:
            status = "xpassed" if hasattr(report, "wasxfail") else "passed"
        elif report.skipped:
            status = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        else:
            status = "failed" if report.when == "call" else "error"
        outcome = self.outcomes.get(item.case.case_id)
        if outcome is not None and outcome.error is not None:
            status = "error"
        self.results.append(
            CaseResult(
                case_id=item.case.case_id,
                suite=item.case.suite,
                kind=item.case.kind,
                outcome=status,
                metrics=dict(outcome.metrics) if outcome else {},
                prompt=outcome.prompt if outcome else "",
                answer=outcome.answer if outcome else "",
                failures=tuple(outcome.failures) if outcome else (str(report.longrepr),),
                known_failure=item.case.known_failure_for(self.model_name),
                details=dict(outcome.details) if outcome else {},
                lower_is_better=outcome.lower_is_better if outcome else (),
            )
        )

    def finish(self) -> None:
        """Write what the options ask for; nothing when no case ran."""


class CaseFileCollector(pytest.File):
    """One `*.seqprobe.yaml` file; parsing it validates every case in it."""

    def collect(self) -> Iterator[SuiteCollector]:
        from seqprobe.casefile import load_case_file

        display = self.path.relative_to(self.config.rootpath).as_posix() if self.path.is_relative_to(self.config.rootpath) else self.path.as_posix()
        case_file = load_case_file(self.path, display_path=display)
        self.config.stash[state_key].case_files[display] = case_file.sha256
        for suite in case_file.suites:
            yield SuiteCollector.from_parent(self, name=suite.name, case_file=case_file, suite_name=suite.name)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:  # type: ignore[override]
        from seqprobe.errors import SeqprobeError

        if isinstance(excinfo.value, SeqprobeError):
            return f"{type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)


class SuiteCollector(pytest.Collector):
    def __init__(self, *, case_file: CaseFile, suite_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case_file = case_file
        self.suite_name = suite_name

    def collect(self) -> Iterator[CaseItem]:
        model_name = self.config.stash[state_key].model_name
        suite = next(s for s in self.case_file.suites if s.name == self.suite_name)
        for case in suite.cases:
            item = CaseItem.from_parent(self, name=case.name, case=case)
            reason = case.known_failure_for(model_name)
            if reason is not None:
                item.add_marker(pytest.mark.xfail(reason=f"known failure of {model_name}: {reason}", raises=CaseFailure, strict=False))
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
        if outcome.failures:
            raise CaseFailure(list(outcome.failures), outcome.explanation)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:  # type: ignore[override]
        from seqprobe.errors import SeqprobeError

        model = self.config.stash[state_key].model_name
        header = f"case {self.case.suite}::{self.case.name} ({self.case.location}) on {model}"
        if isinstance(excinfo.value, CaseFailure):
            failed = "\n".join(f"  failed: {line}" for line in excinfo.value.lines)
            return f"{header}\n{failed}\n\n{excinfo.value.explanation}"
        if isinstance(excinfo.value, SeqprobeError):
            return f"{header}\n  {type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.location.line - 1, f"{self.case.suite}::{self.case.name}"
