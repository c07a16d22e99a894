"""The markdown report, its PNGs and results file, the figure contract, and atomic writing."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqprobe.errors import BaselineError
from seqprobe.records import atomic
from seqprobe.records.atomic import atomic_open, write_text_atomic
from seqprobe.records.figure_specs import AttentionHead, AttentionSpec, FigureSpec, HeatmapSpec, LineSpec, ScatterSpec
from seqprobe.records.formatting import markdown_code, markdown_table, markdown_text
from seqprobe.records.plots import figure_filename, render_figure
from seqprobe.records.report import render_report, write_report
from seqprobe.records.results import CaseResult, RunResults, run_environment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FILE = "cases/days.seqprobe.yaml"

HEATMAP = HeatmapSpec(
    name="resid_pre",
    title="Recovery from patching resid_pre",
    values=((0.0, 0.9, -0.2), (0.1, 0.3, 1.0)),
    row_labels=("L0", "L1"),
    col_labels=("<bos>_0", "Sunday_1", " is_2"),
    x_label="Position",
    y_label="Layer",
    colorbar_label="recovery",
)
LINE = LineSpec(
    name="logit_lens",
    title="Logit lens",
    x_labels=("0_pre", "1_pre", "final"),
    values=(-1.0, 0.5, 2.0),
    x_label="Layer",
    y_label="logit diff",
)
SCATTER = ScatterSpec(
    name="z_vs_v",
    title="Output vs value patching",
    x=(0.1, -0.2, 0.5),
    y=(0.12, -0.1, math.nan),  # not measured: null in JSON, not drawn
    point_labels=("L0H0", "L0H1", "L1H0"),
    x_label="Value patch",
    y_label="Output patch",
)
ATTENTION = AttentionSpec(
    name="top_heads",
    title="Top heads",
    heads=(AttentionHead(label="L1H0", pattern=((1.0, 0.0), (0.25, 0.75))),),
    tokens=("<bos>", "$5"),
)


def sample_results() -> RunResults:
    """Two suites, every outcome, a family and a patching case with claims and two figures."""
    completion = {"kind": "completion", "suite": "successor", "lower_is_better": ("rank",)}
    return RunResults(
        model={
            "name": "smollm2-135m",
            "source": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)",
            "sha256": "a5fd" + "0" * 56 + "6818",
            "dtype": "float32",
            "device": "cpu",
        },
        case_files={FILE: "1234567890abcdef" + "0" * 48},
        cases=(
            CaseResult(
                case_id=f"{FILE}::successor::sunday",
                outcome="passed",
                metrics={"p_answer": 0.62, "rank": 1.0, "logit_diff": 2.5},
                prompt="Today it is Sunday, tomorrow it is",
                answer=" Monday",
                details={
                    "top_k": [
                        {"token": " Monday", "logit": 12.3, "prob": 0.62},
                        {"token": " Sunday", "logit": 9.8, "prob": 0.05},
                        {"token": " the", "logit": 9.1, "prob": 0.025},
                        {"token": " a", "logit": 8.0, "prob": 0.01},
                    ],
                    "distractors": [" Sunday"],
                },
                **completion,
            ),
            CaseResult(
                case_id=f"{FILE}::successor::friday",
                outcome="failed",
                metrics={"p_answer": 0.12, "rank": 3.0, "logit_diff": -0.4},
                prompt="Today it is Friday, tomorrow it is",
                answer=" Saturday",
                failures=("p(' Saturday') = 0.12 < min_prob=0.3",),
                details={"top_k": [{"token": " Friday", "logit": 11.0, "prob": 0.3}]},
                **completion,
            ),
            CaseResult(
                case_id=f"{FILE}::successor::pipes",
                outcome="xfailed",
                metrics={"p_answer": 0.01, "rank": 40.0, "logit_diff": -3.0},
                prompt="a | b\nc",
                answer=" |",
                known_failure="too small to count pipes",
                **completion,
            ),
            CaseResult(
                case_id=f"{FILE}::successor::weekday_family",
                suite="successor",
                kind="family",
                outcome="xpassed",
                metrics={"pass_rate": 0.9},
                prompt="Today it is {day}, tomorrow it is",
                details={
                    "variants_total": 70,
                    "variants_run": 20,
                    "sampled": True,
                    "failing_variants": ["v1", "v2", "v3", "v4"],
                },
            ),
            CaseResult(
                case_id=f"{FILE}::successor::sunday_patching",
                suite="successor",
                kind="patching",
                outcome="passed",
                metrics={"recovery": 0.83},
                prompt="Today it is Sunday, tomorrow it is",
                details={
                    "claims": [
                        {"text": "resid_pre at Sunday recovers", "value": 0.83, "threshold": 0.6, "passed": True},
                        {"text": "L1H0 moves the day", "value": 0.2, "threshold": 0.5, "passed": False},
                    ],
                    "figures": [HEATMAP.to_json(), LINE.to_json()],
                },
            ),
            CaseResult(
                case_id="cases/other.seqprobe.yaml::robustness::case_swap",
                suite="robustness",
                kind="invariance",
                outcome="skipped",
                metrics={"margin": 1.25, "extra_metric": 1234.5},
            ),
        ),
        environment={
            "seqprobe": "0.1.0",
            "transformer_lens": "4.3.0",
            "torch": "2.13.0+cpu",
            "python": "3.11.2",
            "date": "2025-01-02T03:04:05+00:00",
            "command": "pytest cases/ --report reports/smollm2.md",
        },
    )


EXPECTED_REPORT = """\
# Capability report: smollm2-135m

- **Model:** smollm2-135m
- **Source:** HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)
- **Weights sha256:** `a5fd000000000000000000000000000000000000000000000000000000006818`
- **dtype / device:** float32 / cpu
- **Versions:** seqprobe 0.1.0 · transformer_lens 4.3.0 · torch 2.13.0+cpu
- **Date:** 2025-01-02T03:04:05+00:00
- **Every metric:** [smollm2.json](smollm2.json)
- **Case files:** `cases/days.seqprobe.yaml` (sha256 `1234567890ab`)

Reproduce with:

```sh
pytest cases/ --report reports/smollm2.md
```

## Summary

| Suite               |   Cases |   Passed |   Failed |   Known failures |   Gained (xpass) |   Skipped |
|:--------------------|--------:|---------:|---------:|-----------------:|-----------------:|----------:|
| `days::successor`   |       5 |        2 |        1 |                1 |                1 |         0 |
| `other::robustness` |       1 |        0 |        0 |                0 |                0 |         1 |
| **Total**           |       6 |        2 |        1 |                1 |                1 |         1 |

## Suite `days::successor`

### Completions

| Outcome       | Case     | Prompt                               | Answer        |   p(answer) |   Rank |   Logit diff vs distractor | Top-3                                              | Notes                                   |
|:--------------|:---------|:-------------------------------------|:--------------|------------:|-------:|---------------------------:|:---------------------------------------------------|:----------------------------------------|
| **failed**    | `friday` | `Today it is Friday, tomorrow it is` | `' Saturday'` |        0.12 |      3 |                       -0.4 | `' Friday'` 0.3                                    | p(' Saturday') = 0.12 \\< min_prob=0.3   |
| known failure | `pipes`  | `a \\| b\\nc`                          | `' \\|'`       |        0.01 |     40 |                         -3 |                                                    | known failure: too small to count pipes |
| passed        | `sunday` | `Today it is Sunday, tomorrow it is` | `' Monday'`   |        0.62 |      1 |                        2.5 | `' Monday'` 0.62, `' Sunday'` 0.05, `' the'` 0.025 |                                         |

### Phrasing families

| Outcome    | Case             | Prompt                              |   Pass rate | Variants        | Failing variants                  | Notes   |
|:-----------|:-----------------|:------------------------------------|------------:|:----------------|:----------------------------------|:--------|
| **gained** | `weekday_family` | `Today it is {day}, tomorrow it is` |         0.9 | 20/70 (sampled) | `v1`<br>`v2`<br>`v3`<br>(+1 more) |         |

### Activation patching

| Outcome   | Case              | Prompt                               |   Recovery | Notes   |
|:----------|:------------------|:-------------------------------------|-----------:|:--------|
| passed    | `sunday_patching` | `Today it is Sunday, tomorrow it is` |       0.83 |         |

#### `sunday_patching`

| Claim                        |   Value |   Threshold | Holds   |
|:-----------------------------|--------:|------------:|:--------|
| resid_pre at Sunday recovers |    0.83 |         0.6 | yes     |
| L1H0 moves the day           |     0.2 |         0.5 | **no**  |

![Recovery from patching resid_pre](smollm2_files/cases_days.seqprobe.yaml_successor_sunday_patching__resid_pre.png)

![Logit lens](smollm2_files/cases_days.seqprobe.yaml_successor_sunday_patching__logit_lens.png)

## Suite `other::robustness`

### Invariances

| Outcome   | Case        | Prompt   |   Margin |   extra_metric | Notes   |
|:----------|:------------|:---------|---------:|---------------:|:--------|
| skipped   | `case_swap` |          |     1.25 |           1234 |         |
"""


def test_report_markdown_is_pinned() -> None:
    text = render_report(sample_results(), figures_dir="smollm2_files", results_file="smollm2.json")
    assert text == EXPECTED_REPORT


def test_report_has_a_baseline_section_when_compared() -> None:
    from dataclasses import replace

    from seqprobe.records.baseline import compare_runs

    old = sample_results()
    sunday = replace(old.cases[0], metrics={**old.cases[0].metrics, "p_answer": 0.41})
    new = replace(old, cases=(sunday, *old.cases[1:]))
    text = render_report(new, comparison=compare_runs(old, new), baseline_label="reports/base.json")
    section = text[text.index("## Baseline") : text.index("## Summary")]
    assert section == (
        "## Baseline\n"
        "\n"
        "Compared with `reports/base.json`: 1 regressed, 5 unchanged (6 cases).\n"
        "\n"
        "| Case                                          | Status    | Details                                                                                       |\n"
        "|:----------------------------------------------|:----------|:----------------------------------------------------------------------------------------------|\n"
        "| `cases/days.seqprobe.yaml::successor::sunday` | regressed | regressed: p(' Monday') 0.62 → 0.41 (tolerance 0.05); to accept, rerun with --update-baseline |\n"
        "\n"
    )


def test_write_report_writes_pngs_json_and_markdown_that_links_them(tmp_path: Path) -> None:
    results = sample_results()
    lines: list[str] = []
    files = write_report(results, tmp_path / "reports" / "smollm2.md", progress=lines.append)

    markdown = (tmp_path / "reports" / "smollm2.md").read_text(encoding="utf-8")
    assert markdown == EXPECTED_REPORT
    assert files.results == tmp_path / "reports" / "smollm2.json"
    assert RunResults.load(files.results) == results
    names = sorted(path.name for path in files.figures)
    assert names == [
        "cases_days.seqprobe.yaml_successor_sunday_patching__logit_lens.png",
        "cases_days.seqprobe.yaml_successor_sunday_patching__resid_pre.png",
    ]
    for name in names:
        assert (tmp_path / "reports" / "smollm2_files" / name).read_bytes().startswith(PNG_MAGIC)
        assert f"](smollm2_files/{name})" in markdown
    assert lines == [
        f"seqprobe: drawing figure 1/2: {FILE}::successor::sunday_patching resid_pre",
        f"seqprobe: drawing figure 2/2: {FILE}::successor::sunday_patching logit_lens",
    ]


def test_rewriting_a_report_removes_figures_it_no_longer_has(tmp_path: Path) -> None:
    from dataclasses import replace

    results = sample_results()
    report = tmp_path / "run.md"
    write_report(results, report)
    patching = results.cases[4]
    fewer = replace(patching, details={**patching.details, "figures": [LINE.to_json()]})
    write_report(replace(results, cases=(*results.cases[:4], fewer, results.cases[5])), report)
    assert [p.name for p in (tmp_path / "run_files").iterdir()] == [
        "cases_days.seqprobe.yaml_successor_sunday_patching__logit_lens.png"
    ]
    write_report(replace(results, cases=results.cases[:4]), report)
    assert not (tmp_path / "run_files").exists()


def test_an_interrupted_report_leaves_the_previous_one_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    report = tmp_path / "run.md"
    old = sample_results()
    write_report(old, report)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    # Every file is fully written to its temporary twin before fsync fails.
    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    new = replace(old, model={**old.model, "name": "gemma-3-270m"})
    with pytest.raises(OSError, match="No space left"):
        write_report(new, report)

    after = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert after == before


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_atomic_open_keeps_the_old_file_when_the_writer_fails_midway(
    tmp_path: Path, error: type[BaseException]
) -> None:
    target = tmp_path / "report.md"
    write_text_atomic(target, "old report\n")
    with pytest.raises(error), atomic_open(target) as handle:
        handle.write("half of a new rep")
        raise error
    assert target.read_text(encoding="utf-8") == "old report\n"
    assert os.listdir(tmp_path) == ["report.md"]


def test_a_failing_png_write_keeps_the_old_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    target = tmp_path / "heatmap.png"
    render_figure(HEATMAP, target)
    old = target.read_bytes()

    def half_then_crash(self: Figure, handle, **kwargs) -> None:  # type: ignore[no-untyped-def]
        handle.write(PNG_MAGIC)
        raise MemoryError("killed while drawing")

    monkeypatch.setattr(Figure, "savefig", half_then_crash)
    with pytest.raises(MemoryError):
        render_figure(LINE, target)
    assert target.read_bytes() == old
    assert os.listdir(tmp_path) == ["heatmap.png"]


def test_a_report_never_overwrites_the_baseline(tmp_path: Path) -> None:
    baseline = tmp_path / "smollm2.json"
    baseline.write_text("{}", encoding="utf-8")
    with pytest.raises(BaselineError) as excinfo:
        write_report(sample_results(), tmp_path / "smollm2.md", protect=[baseline])
    assert str(excinfo.value) == (
        f"report {tmp_path}/smollm2.md would write its results to {tmp_path}/smollm2.json, the "
        "baseline file; only --update-baseline writes a baseline: pick another --report name"
    )
    assert sorted(os.listdir(tmp_path)) == ["smollm2.json"]


def test_a_bad_figure_spec_writes_nothing_and_names_the_case(tmp_path: Path) -> None:
    from dataclasses import replace

    results = sample_results()
    broken = {**HEATMAP.to_json(), "row_labels": ["L0"]}
    patching = replace(results.cases[4], details={"figures": [LINE.to_json(), broken]})
    with pytest.raises(ValueError) as excinfo:
        write_report(replace(results, cases=(patching,)), tmp_path / "run.md")
    assert str(excinfo.value) == (
        f"case {FILE}::successor::sunday_patching: details['figures']: figure 'resid_pre' "
        "(heatmap): values are 2 × [3, 3], labels say 1 × 3; give one row per row label and "
        "one value per column label"
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("spec", [HEATMAP, LINE, SCATTER, ATTENTION], ids=lambda spec: spec.kind)
def test_every_figure_kind_round_trips_and_renders(spec: FigureSpec, tmp_path: Path) -> None:
    import json

    data = json.loads(json.dumps(spec.to_json()))
    again = FigureSpec.from_json(data)
    assert type(again) is type(spec)
    assert again.to_json() == data
    render_figure(again, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes().startswith(PNG_MAGIC)


def test_figure_spec_errors_say_what_a_kind_needs() -> None:
    with pytest.raises(ValueError) as excinfo:
        FigureSpec.from_json({"kind": "line", "name": "lens", "title": "t", "value": [1.0]})
    assert str(excinfo.value) == (
        "figure 'lens' (line): missing fields ['values', 'x_label', 'x_labels', 'y_label'], "
        "unknown fields ['value']; a line figure has "
        "['high', 'low', 'name', 'title', 'values', 'x_label', 'x_labels', 'y_label']"
    )
    with pytest.raises(ValueError, match=r"kind='pie'; expected one of \['attention', "):
        FigureSpec.from_json({"kind": "pie", "name": "p"})


def test_figure_filenames_are_readable_and_safe() -> None:
    assert figure_filename("cases/days.yaml::successor::sunday", "resid_pre") == (
        "cases_days.yaml_successor_sunday__resid_pre.png"
    )
    assert figure_filename("../a b::c", "L3 heads (z)") == "a_b_c__L3_heads_z.png"


@given(case_id=st.text(), name=st.text())
def test_figure_filenames_never_leave_the_folder(case_id: str, name: str) -> None:
    filename = figure_filename(case_id, name)
    assert "/" not in filename and "\\" not in filename and not filename.startswith(".")
    assert filename.isascii() and filename.endswith(".png")


@given(cells=st.lists(st.text(), min_size=1, max_size=4))
def test_any_text_stays_in_its_table_cell(cells: list[str]) -> None:
    for escape in (markdown_code, markdown_text):
        table = markdown_table([{"a": escape(cell), "b": "x"} for cell in cells])
        rows = table.split("\n")
        assert len(rows) == len(cells) + 2
        # A cell's own pipes are escaped, so each row has exactly the table's three.
        assert all(row.replace("\\|", "").count("|") == 3 for row in rows)


def test_run_environment_records_versions_date_and_command() -> None:
    env = run_environment(
        command=["pytest", "cases/", "--report", "my reports/a.md"],
        now=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert env["date"] == "2025-01-02T03:04:05+00:00"
    assert env["command"] == "pytest cases/ --report 'my reports/a.md'"
    assert set(env) == {"seqprobe", "transformer_lens", "torch", "python", "date", "command"}
    assert env["torch"].startswith("2.")


def test_importing_the_report_modules_loads_neither_matplotlib_nor_pandas() -> None:
    code = (
        "import sys, seqprobe.records.report, seqprobe.records.compare, seqprobe.records.baseline, seqprobe.records.plots;"
        "print(sorted(m for m in ('matplotlib', 'pandas', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"


def test_coinciding_scatter_points_share_one_label_and_long_titles_wrap() -> None:
    from seqprobe.records.plots import TITLE_WIDTH, _draw_scatter

    spec = ScatterSpec(
        name="z_vs_v",
        title="head output vs value patching (near y = x: the head moves the information it reads)",
        # L2H1 and L2H2 read the same key/value head: one point, as on grouped-query models.
        x=(0.77, 0.77, 0.1, 0.0),
        y=(-0.01, -0.012, 0.8, 0.0),
        point_labels=("L2H1", "L2H2", "L2H0", "L0H0"),
        x_label="v",
        y_label="z",
    )
    axes = _draw_scatter(spec).axes[0]
    assert sorted(text.get_text() for text in axes.texts) == ["L0H0", "L2H0", "L2H1, L2H2"]
    title_lines = axes.get_title().split("\n")
    assert len(title_lines) == 2 and all(len(line) <= TITLE_WIDTH for line in title_lines)


# ---------------------------------------------------------------------------------------------
# Intervals: beside their values, stated once, as error bars on lines

LINE_WITH_INTERVALS = LineSpec(
    name="recovery_by_layer",
    title="Recovery by layer, 95% bootstrap over pairs",
    x_labels=("L0", "L1", "L2"),
    values=(0.1, 0.8, math.nan),
    x_label="Layer",
    y_label="recovery",
    low=(0.0, 0.6, math.nan),
    high=(0.3, 0.95, math.nan),
)


def interval_results() -> RunResults:
    """A family with a Wilson interval on its pass rate, a patching case with bootstrap intervals and claims."""
    family = CaseResult(
        case_id=f"{FILE}::successor::weekday_family",
        suite="successor",
        kind="family",
        outcome="passed",
        metrics={"pass_rate": 0.9},
        intervals={"pass_rate": (0.596, 0.982)},
        details={"intervals": {"pass_rate": {"level": 0.95, "method": "wilson", "n": 10}}},
    )
    bootstrap = {"level": 0.95, "method": "bootstrap", "n": 4, "resamples": 2000, "seed": 0}
    patching = CaseResult(
        case_id=f"{FILE}::successor::sunday_patching",
        suite="successor",
        kind="patching",
        outcome="passed",
        metrics={"recovery": 0.83, "rank": 1.0},
        intervals={"recovery": (0.61, 0.97)},
        details={
            "intervals": {"recovery": bootstrap},
            "claims": [
                {
                    "text": "resid_pre recovers",
                    "value": 0.83,
                    "threshold": 0.6,
                    "passed": True,
                    "interval": [0.61, 0.97],
                }
            ],
            "figures": [LINE_WITH_INTERVALS.to_json()],
        },
    )
    return RunResults(
        model={"name": "tiny"}, case_files={FILE: "0" * 64}, cases=(family, patching), interval_level=0.95
    )


def test_intervals_follow_their_values_and_are_stated_once() -> None:
    text = render_report(interval_results())
    assert text.count("- **Intervals:** ") == 1
    assert (
        "- **Intervals:** 95%; pass_rate: Wilson score interval over variants; recovery: percentile bootstrap "
        "over pairs (2000 resamples, seed 0)." in text
    )
    rows = {
        line.split("|")[2].strip(): [cell.strip() for cell in line.split("|")]
        for line in text.splitlines()
        if "| `" in line
    }
    assert "0.9 [0.596, 0.982]" in rows["`weekday_family`"]
    assert "0.83 [0.61, 0.97]" in rows["`sunday_patching`"] and "1" in rows["`sunday_patching`"], "rank has no interval"
    assert "| resid_pre recovers | 0.83 [0.61, 0.97] |" in text.replace("  ", "")


def test_a_report_without_intervals_says_nothing_of_them() -> None:
    assert "Intervals" not in render_report(sample_results())


def test_line_intervals_round_trip_and_render_as_error_bars(tmp_path: Path) -> None:
    import json

    data = json.loads(json.dumps(LINE_WITH_INTERVALS.to_json()))
    assert (data["low"], data["high"]) == ([0.0, 0.6, None], [0.3, 0.95, None])
    again = FigureSpec.from_json(data)
    assert again.to_json() == data and isinstance(again, LineSpec) and again.has_intervals
    assert "low" not in LINE.to_json() and "high" not in LINE.to_json(), "a line without intervals writes what it did"
    render_figure(again, tmp_path / "line.png")
    assert (tmp_path / "line.png").read_bytes().startswith(PNG_MAGIC)


def test_line_intervals_need_both_bounds_one_per_value() -> None:
    fields = {
        "name": "lens",
        "title": "t",
        "x_labels": ("a", "b"),
        "values": (1.0, 2.0),
        "x_label": "x",
        "y_label": "y",
    }
    with pytest.raises(ValueError) as excinfo:
        LineSpec(**fields, low=(0.0, 1.0))
    assert str(excinfo.value) == (
        "figure 'lens' (line): 2 low and 0 high bounds for 2 values; give both, one of each per value "
        "(NaN where a value has none)"
    )
    with pytest.raises(ValueError, match="3 low and 3 high bounds for 2 values"):
        LineSpec(**fields, low=(0.0, 1.0, 2.0), high=(1.0, 2.0, 3.0))
