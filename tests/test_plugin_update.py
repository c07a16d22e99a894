"""Baselines and reports never lose data: subset updates merge, parallel runs write what serial runs do."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore")


def cases_file(suite: str, days: list[str]) -> str:
    entries = "".join(
        f"""
          - id: {day.lower()}
            prompt: "Today it is {day}, tomorrow it is"
            answer: " Monday"
            distractors: [" {day}"]
        """
        for day in days
    )
    return textwrap.dedent(
        f"""
        suites:
          {suite}:
            expect: {{max_rank: 100000}}
            cases:
        """
    ) + textwrap.indent(textwrap.dedent(entries), "      ")


DAYS = ["Sunday", "Tuesday", "Wednesday", "Thursday"]
MONTHS_AS_DAYS = ["Friday", "Saturday"]


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    pytester.makefile(".seqprobe.yaml", days=cases_file("tomorrow", DAYS), other=cases_file("next", MONTHS_AS_DAYS))
    return pytester.path / "baseline.json"


def run(pytester: pytest.Pytester, model: Path, *args: str) -> pytest.RunResult:
    # The model folder lies outside the project: name the rootdir, as a project's pytest.ini would.
    return pytester.runpytest("--model", str(model), "--rootdir", str(pytester.path), "-p", "no:cacheprovider", *args)


def case_ids(path: Path) -> list[str]:
    return [case["case_id"] for case in json.loads(path.read_text(encoding="utf-8"))["cases"]]


ALL_IDS = [
    *(f"days.seqprobe.yaml::tomorrow::{day.lower()}" for day in DAYS),
    *(f"other.seqprobe.yaml::next::{day.lower()}" for day in MONTHS_AS_DAYS),
]
ALL_IDS.sort(key=lambda case_id: case_id.split("::")[0])


def test_a_k_subset_update_keeps_every_other_entry(
    pytester: pytest.Pytester, tiny_llama_dir: Path, suite: Path
) -> None:
    run(pytester, tiny_llama_dir, "--baseline", str(suite), "--update-baseline").assert_outcomes(passed=6)
    assert case_ids(suite) == ALL_IDS
    before = json.loads(suite.read_text(encoding="utf-8"))["cases"]

    subset = run(pytester, tiny_llama_dir, "-k", "tuesday", "--baseline", str(suite), "--update-baseline")
    subset.assert_outcomes(passed=1, deselected=5)
    subset.stdout.fnmatch_lines(
        [f"baseline written: {suite} (6 cases: 0 added, 0 changed, 1 within tolerance, 0 dropped, 5 kept (not run))"]
    )
    after = json.loads(suite.read_text(encoding="utf-8"))["cases"]
    rerun = [i for i, entry in enumerate(before) if entry["case_id"].endswith("::tuesday")]
    assert [e for i, e in enumerate(after) if i not in rerun] == [e for i, e in enumerate(before) if i not in rerun]
    # The re-measured case ran alone, without the prompts it shared a prefix tree with: float32 rounding.
    for i in rerun:
        assert after[i]["metrics"] == pytest.approx(before[i]["metrics"], rel=1e-5, abs=1e-6)

    compared = run(pytester, tiny_llama_dir, "-k", "tuesday", "--baseline", str(suite))
    compared.stdout.fnmatch_lines(["1 unchanged (1 case)"])


def test_a_case_file_subset_update_keeps_the_other_files(
    pytester: pytest.Pytester, tiny_llama_dir: Path, suite: Path
) -> None:
    run(pytester, tiny_llama_dir, "days.seqprobe.yaml", "--baseline", str(suite), "--update-baseline")
    assert len(case_ids(suite)) == 4
    result = run(pytester, tiny_llama_dir, "other.seqprobe.yaml", "--baseline", str(suite), "--update-baseline")
    result.stdout.fnmatch_lines(["baseline written: * (6 cases: 2 added, 0 changed, * 0 dropped, 4 kept (not run))"])
    assert case_ids(suite) == ALL_IDS
    written = json.loads(suite.read_text(encoding="utf-8"))
    assert sorted(written["case_files"]) == ["days.seqprobe.yaml", "other.seqprobe.yaml"]


def test_a_whole_file_run_drops_a_removed_case_and_lists_it(
    pytester: pytest.Pytester, tiny_llama_dir: Path, suite: Path
) -> None:
    run(pytester, tiny_llama_dir, "--baseline", str(suite), "--update-baseline")
    pytester.makefile(".seqprobe.yaml", days=cases_file("tomorrow", [day for day in DAYS if day != "Wednesday"]))

    partial = run(pytester, tiny_llama_dir, "-k", "sunday", "--baseline", str(suite), "--update-baseline")
    partial.stdout.fnmatch_lines(
        ["*not written: case file days.seqprobe.yaml changed since *measured 1 of its 3 cases*"]
    )
    assert partial.ret == pytest.ExitCode.TESTS_FAILED
    assert "days.seqprobe.yaml::tomorrow::wednesday" in case_ids(suite), "a refused update leaves the file as it was"

    whole = run(pytester, tiny_llama_dir, "days.seqprobe.yaml", "--baseline", str(suite), "--update-baseline")
    whole.stdout.fnmatch_lines(
        [
            f"baseline written: {suite} (5 cases: 0 added, 0 changed, 3 within tolerance, 1 dropped, 2 kept (not run))",
            "dropped from the baseline (no longer in its case file): days.seqprobe.yaml::tomorrow::wednesday",
        ]
    )
    assert case_ids(suite) == [case_id for case_id in ALL_IDS if not case_id.endswith("wednesday")]


def test_a_subset_update_with_another_model_is_refused(
    pytester: pytest.Pytester, tiny_llama_dir: Path, tiny_gpt2_dir: Path, suite: Path
) -> None:
    run(pytester, tiny_llama_dir, "--baseline", str(suite), "--update-baseline")
    before = suite.read_bytes()
    result = run(pytester, tiny_gpt2_dir, "-k", "sunday", "--baseline", str(suite), "--update-baseline")
    result.stdout.fnmatch_lines(["*not written: * holds 5 cases of model * that this run of * did not measure*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert suite.read_bytes() == before


def assert_same_numbers(obtained: object, expected: object, where: str = "") -> None:
    """Equal structures; floats equal to float32 noise (a worker batches differently, to 1e-4 as the oracles)."""
    if isinstance(expected, float) and isinstance(obtained, float):
        assert obtained == pytest.approx(expected, rel=1e-4, abs=1e-6), where
    elif isinstance(expected, dict) and isinstance(obtained, dict):
        assert sorted(obtained) == sorted(expected), where
        for key in expected:
            assert_same_numbers(obtained[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list) and isinstance(obtained, list):
        assert len(obtained) == len(expected), where
        for i, (left, right) in enumerate(zip(obtained, expected, strict=True)):
            assert_same_numbers(left, right, f"{where}[{i}]")
    else:
        assert obtained == expected, where


def test_parallel_runs_write_what_a_serial_run_writes(
    pytester: pytest.Pytester, tiny_llama_dir: Path, suite: Path
) -> None:
    serial = run(pytester, tiny_llama_dir, "--report", "serial/r.md", "--baseline", "serial.json", "--update-baseline")
    serial.assert_outcomes(passed=6)
    parallel = run(
        pytester,
        tiny_llama_dir,
        "-n",
        "2",
        "--report",
        "parallel/r.md",
        "--baseline",
        "parallel.json",
        "--update-baseline",
    )
    parallel.assert_outcomes(passed=6)
    for serial_file, parallel_file in (("serial/r.json", "parallel/r.json"), ("serial.json", "parallel.json")):
        expected = json.loads((pytester.path / serial_file).read_text(encoding="utf-8"))
        obtained = json.loads((pytester.path / parallel_file).read_text(encoding="utf-8"))
        assert [case["case_id"] for case in obtained["cases"]] == ALL_IDS
        del obtained["environment"], expected["environment"]  # the date and the command line
        assert_same_numbers(obtained, expected)
    assert "| `days::tomorrow` |       4 |        4 |" in (pytester.path / "parallel/r.md").read_text(encoding="utf-8")
    assert not list(pytester.path.glob("parallel/*.tmp")), "only the controller writes, once"


def test_parallel_comparison_reports_every_case(pytester: pytest.Pytester, tiny_llama_dir: Path, suite: Path) -> None:
    run(pytester, tiny_llama_dir, "--baseline", str(suite), "--update-baseline")
    result = run(pytester, tiny_llama_dir, "-n", "2", "--baseline", str(suite))
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["6 unchanged (6 cases)"])


def test_a_file_that_is_not_utf8_fails_only_its_own_collection(
    pytester: pytest.Pytester, tiny_llama_dir: Path, suite: Path
) -> None:
    (pytester.path / "latin1.seqprobe.yaml").write_bytes(b"suites:\n  s:\n    cases:\n      - id: caf\xe9\n")
    (pytester.path / "utf16.seqprobe.yaml").write_bytes(b"\xff\xfes\x00u\x00")
    result = run(pytester, tiny_llama_dir, "--continue-on-collection-errors")
    result.assert_outcomes(passed=6, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*CaseFileError: latin1.seqprobe.yaml:4: not valid UTF-8: byte b'\\xe9' at offset 39 (column 16) "
            "invalid continuation byte; save the file as UTF-8",
            "*CaseFileError: utf16.seqprobe.yaml:1: not valid UTF-8: byte b'\\xff' at offset 0 (column 1) *",
        ]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_a_known_failure_naming_a_missing_case_is_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".seqprobe.yaml",
        stale=cases_file("tomorrow", DAYS).replace(
            "    expect: {max_rank: 100000}\n",
            "    expect: {max_rank: 100000}\n    known_failures:\n      tiny: {reason: r, cases: [sunday, tuesdya]}\n",
        ),
    )
    result = pytester.runpytest("--collect-only", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*CaseFileError: stale.seqprobe.yaml:5: known_failures[[]tiny] names case 'tuesdya', which suite 'tomorrow' "
            "does not have (did you mean 'tuesday'?); its cases: sunday, tuesday, wednesday, thursday"
        ]
    )
