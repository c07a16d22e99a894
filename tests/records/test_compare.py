"""`seqprobe compare`: exit codes, terminal summary and the pinned markdown diff."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from seqprobe.records.compare import compare_main
from seqprobe.records.results import CaseResult, RunResults
from tests.records._builders import CASE_FILE, completion_result, family_result, run_results


def healthy() -> RunResults:
    return run_results(
        completion_result("sunday", answer=" Monday", p_answer=0.62, rank=1.0, logit_diff=2.5),
        completion_result("monday", answer=" Tuesday", p_answer=0.55, rank=1.0, logit_diff=1.8),
        completion_result("friday", answer=" Saturday", p_answer=0.2, rank=2.0, logit_diff=0.3, outcome="failed"),
        CaseResult(
            case_id=f"{CASE_FILE}::successor::sunday_patching",
            suite="successor",
            kind="patching",
            outcome="passed",
            metrics={"recovery": 0.83},
        ),
        command="pytest cases/",
    )


def damaged() -> RunResults:
    """The same model with a layer zeroed: other weights, worse answers, one case improved by luck."""
    good = healthy()
    sunday, monday, friday, patching = good.cases
    return replace(
        good,
        model={**good.model, "sha256": "ef" * 32},
        cases=(
            replace(sunday, outcome="failed", metrics={"p_answer": 0.41, "rank": 4.0, "logit_diff": 2.3}),
            monday,
            replace(friday, outcome="passed", metrics={"p_answer": 0.35, "rank": 1.0, "logit_diff": 0.5}),
            replace(patching, metrics={"recovery": 0.3}),
        ),
        environment={**good.environment, "date": "2025-01-02T00:00:00+00:00"},
    )


EXPECTED_DIFF = """\
# seqprobe compare

- **Old:** `old.json`: smollm2-135m (sha256 `abababababab`), 2025-01-01T00:00:00+00:00
- **New:** `new.json`: smollm2-135m (sha256 `efefefefefef`), 2025-01-02T00:00:00+00:00

**Summary:** 2 regressed, 1 improved, 1 unchanged (4 cases).

- model settings differ: sha256: abababababab → efefefefefef

## Regressions

- `cases/days.seqprobe.yaml::successor::sunday_patching`: regressed: recovery 0.83 → 0.3 (tolerance 0.1)
- `cases/days.seqprobe.yaml::successor::sunday`: regressed: p(' Monday') 0.62 → 0.41 (tolerance 0.05); regressed: rank(' Monday') 1 → 4 (tolerance 2)

## Cases, biggest changes first

| Case                                                   | Status        | Metric                  |    Old |    New |    Change |   Tolerance |
|:-------------------------------------------------------|:--------------|:------------------------|-------:|-------:|----------:|------------:|
| `cases/days.seqprobe.yaml::successor::sunday_patching` | **regressed** | recovery                |   0.83 |    0.3 | **-0.53** |         0.1 |
| `cases/days.seqprobe.yaml::successor::sunday`          | **regressed** | outcome                 | passed | failed |           |             |
|                                                        |               | p(' Monday')            |   0.62 |   0.41 | **-0.21** |        0.05 |
|                                                        |               | rank(' Monday')         |      1 |      4 |    **+3** |           2 |
|                                                        |               | logit_diff(' Monday')   |    2.5 |    2.3 |      -0.2 |         0.5 |
| `cases/days.seqprobe.yaml::successor::friday`          | improved      | outcome                 | failed | passed |           |             |
|                                                        |               | p(' Saturday')          |    0.2 |   0.35 | **+0.15** |        0.05 |
|                                                        |               | rank(' Saturday')       |      2 |      1 |        -1 |           2 |
|                                                        |               | logit_diff(' Saturday') |    0.3 |    0.5 |      +0.2 |         0.5 |
| `cases/days.seqprobe.yaml::successor::monday`          | unchanged     | p(' Tuesday')           |   0.55 |   0.55 |         0 |        0.05 |
|                                                        |               | rank(' Tuesday')        |      1 |      1 |         0 |           2 |
|                                                        |               | logit_diff(' Tuesday')  |    1.8 |    1.8 |         0 |         0.5 |
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(healthy().dumps(), encoding="utf-8")
    new.write_text(damaged().dumps(), encoding="utf-8")
    return old, new


def test_identical_runs_exit_0(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    old, _ = files
    assert compare_main([str(old), str(old)]) == 0
    assert capsys.readouterr().out == "4 unchanged (4 cases)\n"


def test_the_damaged_model_exits_1_and_names_the_regressions(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = files
    assert compare_main([str(old), str(new)]) == 1
    assert capsys.readouterr().out == (
        "2 regressed, 1 improved, 1 unchanged (4 cases)\n"
        "model settings differ: sha256: abababababab → efefefefefef\n"
        f"{CASE_FILE}::successor::sunday_patching: regressed: recovery 0.83 → 0.3 (tolerance 0.1)\n"
        f"{CASE_FILE}::successor::sunday: regressed: p(' Monday') 0.62 → 0.41 (tolerance 0.05); "
        "regressed: rank(' Monday') 1 → 4 (tolerance 2)\n"
    )


def test_the_diff_report_is_pinned(files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert compare_main(["old.json", "new.json", "--out", "diffs/diff.md"]) == 1
    assert (tmp_path / "diffs" / "diff.md").read_text(encoding="utf-8") == EXPECTED_DIFF


def test_a_looser_tolerance_accepts_the_change(files: tuple[Path, Path]) -> None:
    old, new = files
    loose = ["--tolerance", "p_answer=0.3", "--tolerance", "rank=5", "--tolerance", "recovery=0.6"]
    assert compare_main([str(old), str(new), *loose]) == 0


def test_an_unreadable_file_exits_2_with_the_fix(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, _ = files
    assert compare_main([str(old), str(tmp_path / "nope.json")]) == 2
    assert capsys.readouterr().err == (
        f"seqprobe compare: results file {tmp_path}/nope.json does not exist; pass the .json "
        "written beside a --report, or a --baseline file\n"
    )


def test_a_malformed_tolerance_is_a_usage_error(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    old, new = files
    with pytest.raises(SystemExit) as excinfo:
        compare_main([str(old), str(new), "--tolerance", "p_answer"])
    assert excinfo.value.code == 2
    assert "argument --tolerance: tolerance 'p_answer': expected METRIC=VALUE" in capsys.readouterr().err


def test_a_reader_that_stops_early_gets_no_traceback_and_the_diff_is_written(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """`seqprobe compare ... | head -1`: the pipe closes after one line; the report and exit code stand."""
    old, new = files
    code = "import sys; from seqprobe.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", code, "compare", str(old), str(new), "--out", str(tmp_path / "diff.md")]
    compare = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert compare.stdout is not None and compare.stderr is not None
    compare.stdout.close()  # the reader is gone before the first line
    assert compare.wait() == 1
    assert "Traceback" not in compare.stderr.read().decode()
    assert (tmp_path / "diff.md").read_text(encoding="utf-8").startswith("# seqprobe compare")


def test_intervals_show_beside_values_and_overlapping_ones_are_within_noise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(
        run_results(
            family_result("noisy"), family_result("clear", pass_rate=0.95, interval=(0.888, 0.978), n=100)
        ).dumps()
    )
    new.write_text(
        run_results(
            family_result("noisy", pass_rate=0.7, interval=(0.397, 0.892)),
            family_result("clear", pass_rate=0.95, interval=(0.888, 0.978), n=100),
        ).dumps()
    )
    assert compare_main([str(old), str(new), "--out", str(tmp_path / "diff.md")]) == 0, "noise is no regression"
    assert capsys.readouterr().out == "1 within noise, 1 unchanged (2 cases)\n"
    table = (tmp_path / "diff.md").read_text(encoding="utf-8").split("## Cases, biggest changes first", 1)[1]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.strip().splitlines()[2:]]
    assert rows == [
        [
            f"`{CASE_FILE}::successor::noisy`",
            "within noise",
            "pass_rate",
            "0.9 [0.6, 0.98]",
            "0.7 [0.397, 0.892]",
            "-0.2",
            "0.1",
        ],
        [
            f"`{CASE_FILE}::successor::clear`",
            "unchanged",
            "pass_rate",
            "0.95 [0.888, 0.978]",
            "0.95 [0.888, 0.978]",
            "0",
            "0.1",
        ],
    ]

    # Fifty of a hundred variants: the intervals part, and the drop is a regression.
    new.write_text(
        run_results(
            family_result("noisy"), family_result("clear", pass_rate=0.5, interval=(0.404, 0.596), n=100)
        ).dumps()
    )
    assert compare_main([str(old), str(new)]) == 1
    assert capsys.readouterr().out.splitlines()[1] == (
        f"{CASE_FILE}::successor::clear: regressed: pass_rate 0.95 [0.888, 0.978] → 0.5 [0.404, 0.596] "
        "(tolerance 0.1; the intervals do not overlap)"
    )
