"""`seqprobe.notebook.run`: case files run from Python give the plugin's results, and show as tables.

The fast tests use the tiny Llama model, with cases written so that each of the plugin's outcomes
occurs once (as tests/test_plugin.py does); the `real_model` test runs the committed days cases
on smollm2-135m against the committed baseline.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from seqprobe.casefiles.reader import load_case_file
from seqprobe.errors import CaseFileError, ModelLoadError
from seqprobe.loading.models import BRIDGE_SOURCE
from seqprobe.notebook import CASE_COLUMNS, NotebookResults, run
from seqprobe.progress import progress_bar
from seqprobe.records.figure_specs import FigureSpec
from seqprobe.records.results import RunResults

pytestmark = pytest.mark.filterwarnings("ignore")

PROMPT = "Today it is Sunday, tomorrow it is"
CASE_FILE = "days.seqprobe.yaml"
OUTCOMES = {"passes": "passed", "fails": "failed", "known-failure": "xfailed", "gained": "xpassed", "errors": "error"}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ranked(tiny_llama_bridge) -> list[str]:
    """The tiny model's next-token predictions after PROMPT among day names, best first."""
    days = [" Monday", " Tuesday", " Wednesday", " Thursday", " Friday", " Saturday", " Sunday"]
    ids = [int(tiny_llama_bridge.to_tokens(day, prepend_bos=False)[0, 0]) for day in days]
    with torch.inference_mode():
        logits = tiny_llama_bridge(PROMPT)[0, -1]
    return [day for _, day in sorted(zip((-float(logits[i]) for i in ids), days, strict=True))]


def case_text(model: Path, ranked: list[str], *, prompt: str = PROMPT) -> str:
    """One case per outcome of the plugin, for the tiny model at `model` (its known failures' key).

    A known failure whose answer is two tokens errors: an error is never the failure recorded.
    """
    best, worst = ranked[0], ranked[-1]
    return textwrap.dedent(
        f"""
        defaults:
          expect: {{max_rank: 100000}}
        suites:
          tomorrow:
            cases:
              - id: passes
                prompt: "{prompt}"
                answer: "{best}"
                distractors: ["{worst}"]
              - id: fails
                prompt: "{prompt}"
                answer: "{worst}"
                distractors: ["{best}"]
                expect: {{min_logit_diff: 0.0}}
              - id: known-failure
                prompt: "{prompt}"
                answer: "{worst}"
                distractors: ["{best}"]
                expect: {{min_logit_diff: 0.0}}
                known_failures: {{"{model}": "the tiny model is random"}}
              - id: gained
                prompt: "{prompt}"
                answer: "{best}"
                distractors: ["{worst}"]
                expect: {{min_logit_diff: 0.0}}
                known_failures: {{"{model}": "expected to fail, but passes"}}
              - id: errors
                prompt: "{prompt}"
                answer: " Mon day"
                known_failures: {{"{model}": "two tokens"}}
        """
    )


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_llama_dir: Path, ranked: list[str]) -> Path:
    """tmp_path as the current directory, holding the four-outcome case file."""
    (tmp_path / CASE_FILE).write_text(case_text(tiny_llama_dir, ranked), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def outcomes_of(results: NotebookResults) -> dict[str, str]:
    return {case.case_id.rsplit("::", 1)[-1]: case.outcome for case in results.results.cases}


def assert_same_cases(ours: RunResults, theirs: RunResults) -> None:
    assert [case.case_id for case in ours.cases] == [case.case_id for case in theirs.cases]
    for mine, other in zip(ours.cases, theirs.cases, strict=True):
        assert (mine.outcome, mine.known_failure, mine.failures) == (other.outcome, other.known_failure, other.failures)
        assert mine.metrics.keys() == other.metrics.keys()
        for name, value in mine.metrics.items():
            assert value == pytest.approx(other.metrics[name], abs=1e-6), (mine.case_id, name)


def test_run_gives_what_the_plugins_report_records(
    pytester: pytest.Pytester, tiny_llama_dir: Path, tiny_llama_bridge, ranked: list[str]
) -> None:
    """From a path or from a bridge: the same ids, outcomes and metrics as `pytest --report`'s JSON."""
    pytester.makefile(".seqprobe.yaml", days=case_text(tiny_llama_dir, ranked))
    # `--model=FOLDER` in one argument: pytest takes a separate existing path for a test path,
    # which would move its rootdir (and the ids) up to the folder's common ancestor with this one.
    result = pytester.runpytest(f"--model={tiny_llama_dir}", "--report", "report.md")
    result.assert_outcomes(passed=1, failed=2, xfailed=1, xpassed=1)
    plugin = RunResults.load(pytester.path / "report.json")

    by_name = run(CASE_FILE, model=str(tiny_llama_dir), device="cpu")
    assert_same_cases(by_name.results, plugin)
    assert by_name.results.model == plugin.model
    assert by_name.results.case_files == plugin.case_files
    assert outcomes_of(by_name) == OUTCOMES

    by_bridge = run(CASE_FILE, model=tiny_llama_bridge)
    assert_same_cases(by_bridge.results, plugin)
    assert by_bridge.results.model["source"] == BRIDGE_SOURCE


def test_the_table_has_a_row_per_case_and_a_column_per_metric(in_tmp: Path, tiny_llama_bridge) -> None:
    frame = run(CASE_FILE, model=tiny_llama_bridge).to_pandas()
    assert list(frame["case_id"]) == [f"{CASE_FILE}::tomorrow::{name}" for name in OUTCOMES]
    assert list(frame.columns) == [*CASE_COLUMNS, "p_answer", "rank", "logit_diff", "logprob"]
    assert dict(zip(frame["case_id"].str.rsplit("::").str[-1], frame["outcome"], strict=True)) == OUTCOMES
    assert frame.loc[frame["outcome"] == "xfailed", "known_failure"].item() == "the tiny model is random"
    assert frame["known_failure"].isna().sum() == 2
    assert frame.loc[frame["outcome"] == "error", ["p_answer", "rank", "logit_diff"]].isna().all(axis=None)


def test_folders_lists_and_parsed_cases_run_alike(in_tmp: Path, tiny_llama_bridge) -> None:
    """A folder finds every case file below it; a file given twice, or its cases, run once each."""
    (in_tmp / "sub").mkdir()
    (in_tmp / CASE_FILE).rename(in_tmp / "sub" / CASE_FILE)
    ids = [f"sub/{CASE_FILE}::tomorrow::{name}" for name in OUTCOMES]
    cases = list(load_case_file(f"sub/{CASE_FILE}").cases())
    for source in (".", ["sub", f"sub/{CASE_FILE}"], cases):
        results = run(source, model=tiny_llama_bridge).results
        assert [case.case_id for case in results.cases] == ids


def test_failures_html_and_markdown(in_tmp: Path, tiny_llama_bridge) -> None:
    results = run(CASE_FILE, model=tiny_llama_bridge)
    failing = [case.case_id for case in results.failures().results.cases]
    assert failing == [f"{CASE_FILE}::tomorrow::fails", f"{CASE_FILE}::tomorrow::errors"]
    summary = f"5 cases on {tiny_llama_bridge.cfg.model_name}: 1 passed, 1 failed, 1 error, 1 xfailed, 1 xpassed"
    assert results.summary() == summary
    markdown = results._repr_markdown_()
    assert markdown.startswith(summary)
    assert f"| `{CASE_FILE}::tomorrow::known-failure` | xfailed " in markdown
    assert "the tiny model is random" in markdown
    html = results._repr_html_()
    assert html.startswith(f"<p>{summary}</p>")
    assert html.count("<tr") == 6  # the header and one row per case


def test_html_escapes_what_the_case_file_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_llama_dir: Path, tiny_llama_bridge, ranked: list[str]
) -> None:
    (tmp_path / CASE_FILE).write_text(case_text(tiny_llama_dir, ranked, prompt="<b>Sunday</b> & then"), "utf-8")
    monkeypatch.chdir(tmp_path)
    html = run(CASE_FILE, model=tiny_llama_bridge)._repr_html_()
    assert "<b>" not in html
    assert "&lt;b&gt;Sunday&lt;/b&gt; &amp; then" in html


def test_a_patching_case_has_figures_when_run_with_detail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_llama_bridge
) -> None:
    (tmp_path / "m.seqprobe.yaml").write_text(
        textwrap.dedent(
            """
            suites:
              mechanism:
                cases:
                  - kind: patching
                    id: sunday
                    pairs:
                      - {clean: "Today it is Sunday, tomorrow it is", corrupted: "Today it is Tuesday, tomorrow it is",
                         answer: " Monday", distractor: " Wednesday"}
                    claims:
                      - patch: {site: resid_pre, at: substituted, layers: [0, 0], min_recovery: 0.0}
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    case_id = "m.seqprobe.yaml::mechanism::sunday"
    detailed = run("m.seqprobe.yaml", model=tiny_llama_bridge, detail=True)
    figures = detailed.figures(case_id)
    assert figures and all(isinstance(figure, FigureSpec) for figure in figures)
    with pytest.raises(ValueError, match=r"rerun with run\(\.\.\., detail=True\)"):
        run("m.seqprobe.yaml", model=tiny_llama_bridge).figures(case_id)
    with pytest.raises(KeyError, match="did you mean 'm.seqprobe.yaml::mechanism::sunday'"):
        detailed.figures("m.seqprobe.yaml::mechanism::sundy")


def test_write_report_writes_the_results_file(in_tmp: Path, tiny_llama_bridge) -> None:
    results = run(CASE_FILE, model=tiny_llama_bridge)
    written = results.write_report(in_tmp / "reports" / "tiny.md")
    assert RunResults.load(written.results) == results.results
    assert "Reproduce with:" in written.markdown.read_text(encoding="utf-8")
    command = results.results.environment["command"]
    assert command == f"pytest {CASE_FILE} --model {tiny_llama_bridge.cfg.model_name} --device cpu --dtype float32"


FAMILY_FILE = """
suites:
  robust:
    cases:
      - kind: family
        id: any-rank
        over: {day: days}
        prompt: "Today it is {day}, tomorrow it is"
        answer: " {day+1}"
        expect: {min_pass_rate: 0.9, max_rank: 100000}
"""


def test_the_interval_level_reaches_every_aggregate_and_the_command(in_tmp: Path, tiny_llama_bridge) -> None:
    from seqprobe.records.intervals import wilson_interval

    (in_tmp / "f.seqprobe.yaml").write_text(FAMILY_FILE, encoding="utf-8")
    results = run("f.seqprobe.yaml", model=tiny_llama_bridge, interval_level=0.9).results
    assert results.interval_level == 0.9
    (case,) = results.cases
    interval = wilson_interval(7, 7, level=0.9)
    assert case.intervals == {"pass_rate": (interval.low, interval.high)}
    assert case.details["intervals"] == {"pass_rate": {"level": 0.9, "method": "wilson", "n": 7}}
    assert results.environment["command"].endswith("--dtype float32 --interval-level 0.9")
    default = run("f.seqprobe.yaml", model=tiny_llama_bridge).results
    assert default.interval_level == 0.95 and "--interval-level" not in default.environment["command"]


def test_a_level_outside_0_and_1_is_refused_before_any_model_loads(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match=r"a probability between 0 and 1 \(e.g. 0.95\), got 95"):
        run(CASE_FILE, model="no-such-model", interval_level=95)


def test_a_bad_case_file_raises_before_any_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken.seqprobe.yaml").write_text(
        "suites:\n  s:\n    cases:\n      - id: a\n        prompt: x\n        answr: ' y'\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CaseFileError, match=r"^broken\.seqprobe\.yaml:6: unknown key 'answr'"):
        run("broken.seqprobe.yaml", model="no-such-model")


def test_an_unknown_model_name_is_a_model_load_error(in_tmp: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown model 'no-such-model'"):
        run(CASE_FILE, model="no-such-model")


def test_nothing_to_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no \\*.seqprobe.yaml case files below it"):
        run(tmp_path, model="no-such-model")
    with pytest.raises(ValueError, match="no cases to run"):
        run([], model="no-such-model")


def test_progress_shows_only_when_asked_or_on_a_terminal(
    in_tmp: Path, tiny_llama_bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    with progress_bar(total=1) as bar:
        assert bar.disable  # pytest captures stderr: not a terminal
    with progress_bar(total=1, enabled=False) as bar:
        assert bar.disable
    run(CASE_FILE, model=tiny_llama_bridge)
    assert capsys.readouterr().err == ""
    run(CASE_FILE, model=tiny_llama_bridge, progress=True)
    assert "completion cases on" in capsys.readouterr().err


@pytest.mark.real_model
def test_the_days_cases_match_the_committed_baseline(real_model, monkeypatch: pytest.MonkeyPatch) -> None:
    """From the repo root, as the baseline was made: every case of the file, within its tolerances."""
    from seqprobe.records.baseline import compare_case

    monkeypatch.chdir(ROOT)
    path = "cases/days.seqprobe.yaml"
    results = run(path, model=real_model.bridge, as_model="smollm2-135m")
    frame = results.to_pandas()
    assert len(frame) == 21
    baseline = RunResults.from_json(json.loads((ROOT / "baselines" / "smollm2-135m.json").read_text("utf-8")))
    expected = {case.case_id: case for case in baseline.cases if case.case_id.startswith(f"{path}::")}
    assert sorted(frame["case_id"]) == sorted(expected)
    ours = results.results.by_id()
    for case in load_case_file(path).cases():
        comparison = compare_case(expected[case.case_id], ours[case.case_id], tolerances=case.tolerance)
        assert comparison.status == "unchanged", comparison.messages


def test_intervals_become_low_and_high_columns() -> None:
    from tests.records._builders import completion_result, family_result, run_results

    results = NotebookResults(run_results(completion_result(), family_result(interval=(0.6, 0.98))))
    frame = results.to_pandas()
    assert list(frame.columns)[-3:] == ["pass_rate", "pass_rate_low", "pass_rate_high"]
    family = frame[frame["kind"] == "family"].iloc[0]
    assert (family["pass_rate_low"], family["pass_rate_high"]) == (0.6, 0.98)
    assert frame[frame["kind"] == "completion"][["pass_rate_low", "pass_rate_high"]].isna().all(axis=None)
