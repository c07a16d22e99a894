"""Comparing a run with its baseline: statuses, tolerances, messages, comparability."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqprobe.errors import BaselineError
from seqprobe.records.baseline import compare_case, compare_runs, compare_to_baseline, summary_lines, tolerance_for
from seqprobe.records.results import CaseResult, load_results, write_baseline
from seqprobe.records.update import CaseFileRun, merge_baseline
from seqprobe.vocabulary.metrics import DEFAULT_TOLERANCES, parse_tolerance
from tests.records._builders import CASE_FILE, completion_result, family_result, run_results

HINT = "to accept, rerun with --update-baseline"


def test_a_metric_falling_beyond_its_tolerance_regresses_with_the_issues_message() -> None:
    comparison = compare_case(completion_result(), completion_result(p_answer=0.41))
    assert comparison.status == "regressed"
    assert comparison.messages == (
        "regressed: p(' Monday') 0.62 → 0.41 (tolerance 0.05); to accept, rerun with --update-baseline",
    )
    (p_answer,) = [change for change in comparison.metrics if change.metric == "p_answer"]
    assert p_answer.delta == pytest.approx(-0.21)
    assert p_answer.verdict == "regressed"


def test_changes_within_tolerance_are_unchanged() -> None:
    comparison = compare_case(completion_result(), completion_result(p_answer=0.58, rank=3.0, logit_diff=2.0))
    assert comparison.status == "unchanged"
    assert comparison.messages == ()


def test_rank_is_lower_is_better() -> None:
    worse = compare_case(completion_result(), completion_result(rank=4.0))
    better = compare_case(completion_result(rank=5.0), completion_result(rank=1.0))
    assert (worse.status, better.status) == ("regressed", "improved")
    assert worse.messages == (f"regressed: rank(' Monday') 1 → 4 (tolerance 2); {HINT}",)
    assert better.messages == (f"improved: rank(' Monday') 5 → 1 (tolerance 2); {HINT}",)


def test_a_regression_outweighs_an_improvement_and_every_change_is_listed() -> None:
    comparison = compare_case(completion_result(), completion_result(p_answer=0.9, logit_diff=1.0))
    assert comparison.status == "regressed"
    assert comparison.messages == (
        "improved: p(' Monday') 0.62 → 0.9 (tolerance 0.05)",
        f"regressed: logit_diff(' Monday') 2.5 → 1 (tolerance 0.5); {HINT}",
    )


def test_a_metric_no_longer_measured_is_a_regression_and_a_new_one_is_noted() -> None:
    current = replace(
        completion_result(), metrics={"p_answer": float("nan"), "rank": 1.0, "logit_diff": 2.5, "margin": 1.0}
    )
    comparison = compare_case(completion_result(), current)
    assert comparison.status == "regressed"
    assert comparison.messages == (
        "regressed: p(' Monday') 0.62 → missing (tolerance 0.05)",
        f"new metric: margin = 1 (not in the baseline); {HINT}",
    )


def test_new_and_missing_cases_are_reported_not_passed() -> None:
    new = compare_case(None, completion_result())
    missing = compare_case(completion_result(), None)
    assert (new.status, missing.status) == ("new", "missing")
    assert new.messages == (f"new: not in the baseline; {HINT}",)
    assert missing.messages == (f"missing: in the baseline but not in this run; {HINT}",)
    assert [change.verdict for change in new.metrics] == ["new"] * 3


def test_overrides_replace_defaults_per_metric() -> None:
    loose = compare_case(completion_result(), completion_result(p_answer=0.41), tolerances={"p_answer": 0.3})
    assert loose.status == "unchanged"
    assert compare_case(completion_result(), completion_result(p_answer=0.41), accept_hint=None).messages == (
        "regressed: p(' Monday') 0.62 → 0.41 (tolerance 0.05)",
    )


def test_compare_runs_takes_per_case_tolerances() -> None:
    baseline = run_results(completion_result("sunday"), completion_result("friday"))
    current = run_results(completion_result("sunday", p_answer=0.41), completion_result("friday", p_answer=0.41))
    comparison = compare_runs(baseline, current, case_tolerances={f"{CASE_FILE}::successor::friday": {"p_answer": 0.3}})
    assert [case.status for case in comparison.cases] == ["regressed", "unchanged"]


def test_tolerance_lookup() -> None:
    assert tolerance_for("p_answer", {}) == 0.05
    assert tolerance_for("rank", {"rank": 5}) == 5.0
    assert tolerance_for("recovery:L3H2", {}) == DEFAULT_TOLERANCES["recovery"]
    assert tolerance_for("recovery:L3H2", {"recovery": 0.2}) == 0.2
    assert tolerance_for("recovery:L3H2", {"recovery": 0.2, "recovery:L3H2": 0.3}) == 0.3
    assert tolerance_for("something_else", {}) == 0.1
    assert tolerance_for("something_else", {"*": 0.25}) == 0.25


def test_parse_tolerance() -> None:
    assert parse_tolerance("p_answer=0.1") == ("p_answer", 0.1)
    assert parse_tolerance(" rank = 3") == ("rank", 3.0)
    for bad in ("p_answer", "p_answer=x", "=0.1", "rank=-1", "rank=nan"):
        with pytest.raises(argparse.ArgumentTypeError) as excinfo:
            parse_tolerance(bad)
        assert str(excinfo.value) == (
            f"tolerance {bad!r}: expected METRIC=VALUE with VALUE a number ≥ 0, e.g. p_answer=0.1 or rank=3"
        )


def test_compare_runs_reports_every_kind_of_change() -> None:
    baseline = run_results(completion_result("sunday"), completion_result("friday"), completion_result("gone"))
    current = run_results(
        completion_result("sunday", p_answer=0.41),
        completion_result("friday", p_answer=0.8),
        completion_result("added"),
    )
    comparison = compare_runs(baseline, current)
    assert {case.case_id.rsplit("::")[-1]: case.status for case in comparison.cases} == {
        "sunday": "regressed",
        "friday": "improved",
        "added": "new",
        "gone": "missing",
    }
    assert comparison.has_regressions
    assert [case.case_id.rsplit("::")[-1] for case in comparison.ordered()] == ["sunday", "friday", "added", "gone"]
    assert summary_lines(comparison) == ["1 regressed, 1 improved, 1 new, 1 missing (4 cases)"]


def test_identical_runs_are_unchanged() -> None:
    results = run_results(completion_result("sunday"), completion_result("friday"))
    comparison = compare_runs(results, results)
    assert not comparison.has_regressions
    assert summary_lines(comparison) == ["2 unchanged (2 cases)"]


def test_a_baseline_of_another_model_is_not_compared_blindly() -> None:
    baseline = run_results(completion_result())
    current = replace(
        run_results(completion_result(p_answer=0.1), sha256="ef" * 32, name="gemma-3-270m"),
        environment={"torch": "2.14.0"},
    )
    comparison = compare_runs(baseline, current)
    (case,) = comparison.cases
    assert case.status == "model_changed"
    assert not comparison.has_regressions and not comparison.models_match
    assert case.messages == (
        "not compared: the baseline was made with smollm2-135m (sha256 abababababab), this run "
        f"uses gemma-3-270m (sha256 efefefefefef); {HINT}",
    )
    assert summary_lines(comparison) == [
        "1 model changed (1 case)",
        "different model (not compared): name: smollm2-135m → gemma-3-270m; sha256: abababababab → efefefefefef",
        "environment differs: torch: 2.13.0 → 2.14.0",
    ]
    across = compare_runs(baseline, current, across_models=True)
    assert across.cases[0].status == "regressed"
    assert summary_lines(across)[1].startswith("different model (compared anyway): name: smollm2-135m → gemma-3-270m")


def test_new_weights_under_the_same_name_are_compared_and_stated() -> None:
    baseline = run_results(completion_result())
    current = run_results(completion_result(p_answer=0.1), sha256="ef" * 32)
    comparison = compare_runs(baseline, current)
    assert comparison.cases[0].status == "regressed"
    assert summary_lines(comparison)[1] == "model settings differ: sha256: abababababab → efefefefefef"


def test_dtype_and_device_changes_are_compared_and_stated() -> None:
    baseline = run_results(completion_result())
    current = replace(run_results(completion_result()), model={**baseline.model, "dtype": "float16"})
    comparison = compare_runs(baseline, current)
    assert comparison.cases[0].status == "unchanged"
    assert summary_lines(comparison) == ["1 unchanged (1 case)", "model settings differ: dtype: float32 → float16"]


def test_cases_of_a_changed_case_file_are_shown_but_not_judged() -> None:
    baseline = run_results(completion_result())
    current = run_results(completion_result(p_answer=0.1), case_file="ef" * 32)
    comparison = compare_runs(baseline, current)
    (case,) = comparison.cases
    assert case.status == "case_file_changed"
    assert not comparison.has_regressions
    assert case.messages == (
        f"not compared: case file {CASE_FILE} changed since the baseline (sha256 cdcdcdcdcdcd → efefefefefef); {HINT}",
    )
    assert [change.verdict for change in case.metrics if change.metric == "p_answer"] == ["regressed"]
    assert summary_lines(comparison) == [
        "1 case file changed (1 case)",
        f"case file changed, its cases not compared: {CASE_FILE}: cdcdcdcdcdcd → efefefefefef",
    ]


def test_compare_to_baseline_gives_a_single_case_the_verdict_compare_runs_gives() -> None:
    baseline = run_results(completion_result(), completion_result("friday"))
    current = run_results(completion_result(p_answer=0.41), completion_result("friday"))
    single = compare_to_baseline(baseline, current.cases[0], model=current.model, case_files=current.case_files)
    assert single == compare_runs(baseline, current).cases[0]


def test_baseline_files_round_trip_and_bad_ones_say_how_to_fix(tmp_path: Path) -> None:
    results = run_results(completion_result(), completion_result("friday"))
    path = tmp_path / "baseline.json"
    write_baseline(results, path)
    assert load_results(path) == results

    with pytest.raises(BaselineError) as excinfo:
        load_results(tmp_path / "absent.json")
    assert str(excinfo.value) == (
        f"results file {tmp_path}/absent.json does not exist; write it from a run with --update-baseline"
    )
    (tmp_path / "bad.json").write_text('{"cases": []}', encoding="utf-8")
    with pytest.raises(BaselineError) as excinfo:
        load_results(tmp_path / "bad.json")
    assert str(excinfo.value) == (
        f"{tmp_path}/bad.json is not a seqprobe results file (KeyError: 'model'); use the .json "
        "written beside a --report, or write it from a run with --update-baseline"
    )
    (tmp_path / "future.json").write_text(json.dumps(results.to_json() | {"format_version": 99}), encoding="utf-8")
    with pytest.raises(BaselineError, match=r"format_version=99; this seqprobe reads up to 1: upgrade"):
        load_results(tmp_path / "future.json")


metric_values = st.floats(min_value=-50, max_value=50, allow_nan=False)


@given(p=metric_values, rank=metric_values, diff=metric_values)
def test_a_case_against_itself_is_unchanged(p: float, rank: float, diff: float) -> None:
    case = completion_result(p_answer=p, rank=rank, logit_diff=diff)
    assert compare_case(case, case).status == "unchanged"


@given(before=metric_values, after=metric_values)
def test_swapping_the_runs_swaps_regressed_and_improved(before: float, after: float) -> None:
    forward = compare_case(completion_result(p_answer=before), completion_result(p_answer=after)).status
    backward = compare_case(completion_result(p_answer=after), completion_result(p_answer=before)).status
    swap = {"regressed": "improved", "improved": "regressed", "unchanged": "unchanged"}
    assert backward == swap[forward]


# ---------------------------------------------------------------------------------------------
# The noise rule: a move beyond tolerance with overlapping intervals is within noise


def test_a_drop_beyond_tolerance_with_overlapping_intervals_is_within_noise() -> None:
    # 9 of 10 variants, then 7 of 10: a drop of 0.2, twice the tolerance, that ten variants cannot tell from chance.
    comparison = compare_case(family_result(), family_result(pass_rate=0.7, interval=(0.397, 0.892)))
    assert comparison.status == "within_noise"
    assert comparison.messages == (
        "within noise: pass_rate 0.9 [0.6, 0.98] → 0.7 [0.397, 0.892] (tolerance 0.1; the intervals overlap)",
    )
    (change,) = comparison.metrics
    assert (change.verdict, change.intervals_overlap) == ("within_noise", True)
    comparisons = compare_runs(run_results(family_result()), run_results(comparison.current))  # type: ignore[arg-type]
    assert not comparisons.has_regressions
    assert summary_lines(comparisons) == ["1 within noise (1 case)"]


def test_a_drop_beyond_tolerance_with_disjoint_intervals_is_a_regression() -> None:
    # 95 of 100 variants, then 50 of 100.
    before = family_result(pass_rate=0.95, interval=(0.888, 0.978), n=100)
    after = family_result(pass_rate=0.5, interval=(0.404, 0.596), n=100)
    comparison = compare_case(before, after)
    assert comparison.status == "regressed"
    assert comparison.messages == (
        "regressed: pass_rate 0.95 [0.888, 0.978] → 0.5 [0.404, 0.596] (tolerance 0.1; the intervals do not overlap); "
        f"{HINT}",
    )
    assert compare_runs(run_results(before), run_results(after)).has_regressions


def test_a_gain_with_overlapping_intervals_is_not_an_improvement() -> None:
    comparison = compare_case(family_result(pass_rate=0.7, interval=(0.397, 0.892)), family_result())
    assert comparison.status == "within_noise"
    assert comparison.messages[0].startswith("within noise: pass_rate 0.7 [0.397, 0.892] → 0.9 [0.6, 0.98]")


def test_without_an_interval_on_both_sides_the_tolerance_rule_holds() -> None:
    old_file = family_result(interval=None)
    comparison = compare_case(old_file, family_result(pass_rate=0.7, interval=(0.397, 0.892)))
    assert comparison.status == "regressed"
    assert comparison.messages == (f"regressed: pass_rate 0.9 → 0.7 [0.397, 0.892] (tolerance 0.1); {HINT}",)
    within = compare_case(old_file, family_result(pass_rate=0.85))
    assert within.status == "unchanged" and within.messages == ()


def test_a_move_within_tolerance_stays_unchanged_whatever_the_intervals() -> None:
    comparison = compare_case(family_result(), family_result(pass_rate=0.85, interval=(0.95, 0.99)))
    assert comparison.status == "unchanged" and comparison.messages == ()


def test_a_change_of_interval_level_between_runs_is_stated() -> None:
    baseline = replace(run_results(family_result()), interval_level=0.95)
    current = replace(run_results(family_result()), interval_level=0.8)
    assert summary_lines(compare_runs(baseline, current)) == [
        "1 unchanged (1 case)",
        "environment differs: interval_level: 0.95 → 0.8",
    ]
    assert summary_lines(compare_runs(baseline, replace(current, interval_level=None))) == ["1 unchanged (1 case)"]


interval_bounds = st.tuples(st.floats(0, 1), st.floats(0, 1)).map(sorted).map(tuple)


@given(before=st.floats(0, 1), after=st.floats(0, 1), old=interval_bounds, new=interval_bounds)
def test_only_disjoint_intervals_beyond_tolerance_change_a_verdict(
    before: float, after: float, old: tuple[float, float], new: tuple[float, float]
) -> None:
    status = compare_case(family_result(pass_rate=before, interval=old), family_result(pass_rate=after, interval=new))
    plain = compare_case(family_result(pass_rate=before, interval=None), family_result(pass_rate=after, interval=None))
    overlap = max(old[0], new[0]) <= min(old[1], new[1])
    if plain.status == "unchanged":
        assert status.status == "unchanged"
    else:
        assert status.status == ("within_noise" if overlap else plain.status)


def test_intervals_and_the_level_round_trip_through_the_results_file(tmp_path: Path) -> None:
    results = replace(run_results(completion_result(), family_result()), interval_level=0.95)
    data = results.to_json()
    assert data["interval_level"] == 0.95
    assert data["cases"][1]["intervals"] == {"pass_rate": [0.6, 0.98]}
    assert data["cases"][1]["details"]["intervals"] == {"pass_rate": {"level": 0.95, "method": "wilson", "n": 10}}
    assert data["cases"][0]["intervals"] == {}
    path = tmp_path / "baseline.json"
    write_baseline(results, path)
    assert load_results(path) == results


def test_a_results_file_from_before_intervals_still_loads(tmp_path: Path) -> None:
    data = run_results(family_result(interval=None)).to_json()
    for case in data["cases"]:
        del case["intervals"]
    assert "interval_level" not in data
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    loaded = load_results(path)
    assert loaded.interval_level is None and loaded.cases[0].intervals == {}
    bad = json.loads(json.dumps(data))
    bad["cases"][0]["intervals"] = {"pass_rate": [0.9]}
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(BaselineError, match=r"intervals\['pass_rate'\] must be \[low, high\], found \[0.9\]"):
        load_results(path)


def test_interval_lists_become_tuples_so_records_compare_equal() -> None:
    listed = replace(family_result(), intervals={"pass_rate": [0.6, 0.98]})
    assert listed == family_result() and listed.intervals == {"pass_rate": (0.6, 0.98)}
    with pytest.raises(ValueError, match="has low > high"):
        CaseResult.from_json(family_result().to_json() | {"intervals": {"pass_rate": [0.9, 0.1]}})


def test_an_update_stores_intervals_and_counts_moves_within_noise_apart() -> None:
    files = {CASE_FILE: CaseFileRun(sha256="cd" * 32, case_ids=(family_result().case_id,), whole=True)}
    old = replace(run_results(family_result()), interval_level=0.95)
    new = replace(run_results(family_result(pass_rate=0.7, interval=(0.397, 0.892))), interval_level=0.95)
    update = merge_baseline(old, new, files, path="base.json")
    assert update.results.cases[0].intervals == {"pass_rate": (0.397, 0.892)}
    assert update.results.interval_level == 0.95
    assert (update.changed, update.noise, update.unchanged) == ((), (family_result().case_id,), ())
    assert update.summary_lines("base.json") == [
        "baseline written: base.json (1 case: 0 added, 0 changed, 0 within tolerance, 1 within noise, "
        "0 dropped, 0 kept (not run))"
    ]
