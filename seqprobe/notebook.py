"""Run case files from Python, in a notebook or a script, without pytest.

A researcher writing cases next to a model in a notebook wants the numbers as a table, not a
pytest session. `run(paths_or_cases, model=...)` is `pytest FILES --model NAME` without pytest:
every file is parsed first (a bad file raises its CaseFileError, naming file:line, before any
model loads); the model loads once, or is the bridge already in memory; every case of a kind goes
to that kind's runner in one call, batched as in the plugin; and each outcome is recorded with the
status the plugin gives it (`seqprobe.checks.recording`). So `NotebookResults.results` is the
`RunResults` that `pytest FILES --model NAME --report X.md` writes as X.json: the same case ids
(paths relative to the current directory, as pytest's are to its rootdir when run from it), the
same outcomes and metrics.

`NotebookResults` shows itself as a table in Jupyter and turns into a pandas DataFrame, the
failing cases, a case's figure specs, or the markdown report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from seqprobe.loading.known import DEFAULT_MODEL
from seqprobe.records.intervals import DEFAULT_LEVEL

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

    from seqprobe.casefiles.base import Case
    from seqprobe.checks.outcome import CheckOutcome
    from seqprobe.loading.models import LoadedModel
    from seqprobe.records.figure_specs import FigureSpec
    from seqprobe.records.report import ReportFiles
    from seqprobe.records.results import CaseResult, RunResults

    # What `run` takes: a case file, a folder of them, a parsed case, or several of these.
    CaseSource: TypeAlias = str | os.PathLike[str] | Case

__all__ = ["NotebookResults", "run"]

# Statuses in the order the summary line counts them; the plugin's words for them.
SUMMARY_ORDER = ("passed", "failed", "error", "xfailed", "xpassed", "skipped")
# Outcomes `failures()` returns: the cases that did not do what their file expects.
FAILING = ("failed", "error")
# The columns of `to_pandas()` before the metrics, in order.
CASE_COLUMNS = ("case_id", "suite", "kind", "outcome", "known_failure", "prompt", "answer")
# Rows `_repr_html_` shows before eliding the middle; `to_pandas()` has them all.
HTML_MAX_ROWS = 200


@dataclass(frozen=True)
class NotebookResults:
    """One `run()`'s results, with views for a notebook."""

    results: RunResults
    # Whether the runners were asked for figures (detail=True); without, `figures` has nothing to give.
    detail: bool = False

    def to_pandas(self) -> pd.DataFrame:
        """One row per case: its id, suite, kind, outcome, known failure, prompt, answer, then one column per metric.

        A metric with an interval in some case gets two more columns, `METRIC_low` and
        `METRIC_high`, after the metrics. A case without some metric or interval has NaN there.
        """
        import pandas as pd

        rows = [
            {
                **{column: getattr(case, column) for column in CASE_COLUMNS},
                **case.metrics,
                **{
                    f"{name}_{side}": bound
                    for name, pair in case.intervals.items()
                    for side, bound in zip(("low", "high"), pair, strict=True)
                },
            }
            for case in self.results.cases
        ]
        bounded = dict.fromkeys(name for case in self.results.cases for name in case.intervals)
        bounds = [f"{name}_{side}" for name in bounded for side in ("low", "high")]
        return pd.DataFrame(rows, columns=[*CASE_COLUMNS, *self._metrics(), *bounds])

    def counts(self) -> dict[str, int]:
        """Outcome -> number of cases, for the outcomes that occur, in the summary's order."""
        outcomes = [case.outcome for case in self.results.cases]
        return {outcome: outcomes.count(outcome) for outcome in SUMMARY_ORDER if outcome in outcomes}

    def summary(self) -> str:
        """ "4 cases on NAME: 1 passed, 1 failed, 1 xfailed, 1 xpassed", as pytest counts them."""
        counts = ", ".join(f"{n} {outcome}" for outcome, n in self.counts().items())
        head = f"{len(self.results.cases)} cases on {self.results.model.get('name', 'unnamed model')}"
        return f"{head}: {counts}" if counts else head

    def failures(self) -> NotebookResults:
        """The cases that failed or errored (known failures and gains are not failures)."""
        failing = tuple(case for case in self.results.cases if case.outcome in FAILING)
        return replace(self, results=replace(self.results, cases=failing))

    def figures(self, case_id: str) -> list[FigureSpec]:
        """The figure specs of the case `case_id` (patching cases, when run with detail=True)."""
        from seqprobe.records.figure_specs import FigureSpec

        case = self._case(case_id)
        if not self.detail and case.kind == "patching":
            raise ValueError(f"case {case_id!r} was run without figures; rerun with run(..., detail=True)")
        return [FigureSpec.from_json(spec) for spec in case.details.get("figures", [])]

    def write_report(self, path: str | Path) -> ReportFiles:
        """The markdown report at `path` (NAME.md), with NAME.json and the PNGs, as `--report` writes it."""
        from seqprobe.records.report import write_report

        return write_report(self.results, path)

    def _repr_html_(self) -> str:
        from html import escape

        table = self.to_pandas().to_html(escape=True, index=False, na_rep="", max_rows=HTML_MAX_ROWS)
        return f"<p>{escape(self.summary())}</p>\n{table}"

    def _repr_markdown_(self) -> str:
        from seqprobe.records.formatting import format_value, markdown_code, markdown_table, markdown_text

        metrics = self._metrics()
        rows = [
            {
                "case": markdown_code(case.case_id),
                "outcome": case.outcome,
                "prompt": markdown_code(case.prompt),
                "answer": markdown_code(case.answer),
                "known failure": markdown_text(case.known_failure or ""),
                **{metric: format_value(case.metrics.get(metric)) for metric in metrics},
            }
            for case in self.results.cases
        ]
        table = markdown_table(rows, right=metrics) if rows else "No cases."
        return f"{markdown_text(self.summary())}\n\n{table}\n"

    def _metrics(self) -> list[str]:
        """Every metric some case has, in the order they first occur."""
        return list(dict.fromkeys(name for case in self.results.cases for name in case.metrics))

    def _case(self, case_id: str) -> CaseResult:
        by_id = self.results.by_id()
        if case_id not in by_id:
            from seqprobe.casefiles.validation import suggest

            raise KeyError(f"no case {case_id!r} in these results{suggest(case_id, by_id)}")
        return by_id[case_id]


def run(
    paths_or_cases: CaseSource | Iterable[CaseSource],
    *,
    model: str | os.PathLike[str] | TransformerBridge | LoadedModel = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str = "float32",
    as_model: str | None = None,
    detail: bool = False,
    interval_level: float = DEFAULT_LEVEL,
    progress: bool | None = None,
) -> NotebookResults:
    """Run case files, folders of them (every case file below) or parsed cases on `model`.

    `model` is what `--model` takes (a known name, hub id, folder or .gguf file; `device` and
    `dtype` apply to it), or a TransformerBridge or LoadedModel already in memory, used as it is.
    `as_model` holds it to another model's known failures and per-model expectations (a bridge
    answers to its cfg.model_name otherwise). `detail=True` also computes the report's figures.
    `interval_level` is the level of the intervals on aggregates, as `--interval-level` (ValueError
    unless strictly between 0 and 1). `progress` shows a bar (default: in a notebook, or when stderr
    is a terminal).
    """
    from datetime import UTC, datetime

    from seqprobe.checks.recording import case_result, status_of
    from seqprobe.checks.runners import RUNNERS
    from seqprobe.loading.device_maps import device_map_of
    from seqprobe.loading.models import resolve_model
    from seqprobe.progress import progress_bar
    from seqprobe.records.intervals import check_level
    from seqprobe.records.results import RunResults, run_environment

    check_level(interval_level)
    cases, case_files = _gather(paths_or_cases)
    by_kind: dict[str, list[Case]] = {}
    for case in cases:
        by_kind.setdefault(case.kind, []).append(case)
    with progress_bar(total=len(cases), enabled=progress) as bar:
        if isinstance(model, str | os.PathLike):
            bar.set_description(f"loading {os.fspath(model)}")
        loaded = resolve_model(model, device=device, dtype=dtype)
        expectations_of = as_model or loaded.info.name
        outcomes: dict[str, CheckOutcome] = {}
        for kind, of_kind in by_kind.items():
            bar.set_description(f"{kind} cases on {loaded.info.name}")
            outcomes.update(
                RUNNERS[kind](loaded, expectations_of, of_kind, detail=detail, interval_level=interval_level)
            )
            bar.update(len(of_kind))
    recorded = tuple(
        case_result(
            case,
            outcomes[case.case_id],
            status=status_of(case, outcomes[case.case_id], expectations_of=expectations_of),
            expectations_of=expectations_of,
        )
        for case in cases
    )
    command = _equivalent_command(
        cases, loaded.info.to_json(), as_model=as_model, interval_level=interval_level,
        device_map=device_map_of(loaded.bridge),
    )  # fmt: skip
    results = RunResults(
        model=loaded.info.to_json(),
        case_files=dict(sorted(case_files.items())),
        cases=recorded,
        environment=run_environment(command=command, now=datetime.now(UTC)),
        interval_level=interval_level,
    )
    return NotebookResults(results, detail=detail)


def _gather(paths_or_cases: CaseSource | Iterable[CaseSource]) -> tuple[list[Case], dict[str, str]]:
    """Every case to run, once each in the order given, and the sha256 of each case file read.

    Cases handed over already parsed add no sha256: their file may have changed since.
    """
    from seqprobe.casefiles.base import Case
    from seqprobe.casefiles.reader import display_path, load_case_file

    sources = [paths_or_cases] if isinstance(paths_or_cases, str | os.PathLike | Case) else list(paths_or_cases)
    cases: dict[str, Case] = {}
    case_files: dict[str, str] = {}
    for source in sources:
        if isinstance(source, Case):
            cases.setdefault(source.case_id, source)
            continue
        path = Path(os.path.abspath(source))
        found = _case_files_below(path) if path.is_dir() else [path]
        if not found:
            raise FileNotFoundError(f"{source}: a folder with no *.seqprobe.yaml case files below it")
        for file in found:
            case_file = load_case_file(file, display_path=display_path(file, Path.cwd()))
            case_files[case_file.path] = case_file.sha256
            for case in case_file.cases():
                cases.setdefault(case.case_id, case)
    if not cases:
        raise ValueError(f"paths_or_cases={paths_or_cases!r}: no cases to run; pass case files, folders or cases")
    return list(cases.values()), case_files


def _case_files_below(folder: Path) -> list[Path]:
    """The case files below `folder`, sorted, skipping what pytest skips there: hidden folders and virtualenvs."""
    from seqprobe.casefiles.reader import is_case_file

    found: list[Path] = []
    for root, folders, files in os.walk(folder):
        folders[:] = [
            name for name in folders if not name.startswith(".") and not Path(root, name, "pyvenv.cfg").exists()
        ]
        found += [Path(root, name) for name in files if is_case_file(Path(name))]
    return sorted(found)


def _equivalent_command(
    cases: list[Case],
    model: dict[str, str],
    *,
    as_model: str | None,
    interval_level: float = DEFAULT_LEVEL,
    device_map: Mapping[str, Any] | None = None,
) -> list[str]:
    """The pytest command that runs the same cases on the same model: the report's "Reproduce with".

    A model split by a device map is placed by that map (`--device-map` as JSON), not by a device.
    """
    from seqprobe.plugin import OPTION_AS_MODEL, OPTION_INTERVAL_LEVEL
    from seqprobe.vocabulary.options import DEVICE, DEVICE_MAP, DTYPE, MODEL

    files = dict.fromkeys(case.location.path for case in cases)
    placement = [DEVICE_MAP.flag, json.dumps(dict(device_map))] if device_map else [DEVICE.flag, model["device"]]
    command = ["pytest", *files, MODEL.flag, model["name"], *placement, DTYPE.flag, model["dtype"]]
    command += [OPTION_AS_MODEL, as_model] if as_model else []
    return [*command, OPTION_INTERVAL_LEVEL, str(interval_level)] if interval_level != DEFAULT_LEVEL else command
