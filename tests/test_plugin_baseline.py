"""The baseline lifecycle and the report, driven from outside through pytester on a tiny model."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests._tiny_models import build_tiny_llama

pytestmark = pytest.mark.filterwarnings("ignore")

PROMPT = "Today it is Sunday, tomorrow it is"

CASES = textwrap.dedent(
    """
    suites:
      tomorrow:
        expect: {max_rank: 100000}
        cases:
          - id: sunday
            prompt: "Today it is Sunday, tomorrow it is"
            answer: " Monday"
            distractors: [" Sunday"]
    """
)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A tiny Llama saved in a folder of its own, so the test can change its weights in place."""
    folder = tmp_path / "model"
    build_tiny_llama(folder)
    return folder


def damage(model_dir: Path, token: str, *, prompt: str = PROMPT, drop: float = 10.0) -> None:
    """Lower `token`'s logit after `prompt` by exactly `drop`, through its (tied) embedding row.

    The final hidden state h does not involve the row (the token is not in the prompt), so moving
    the row by −drop·h/|h|² lowers the logit, row·h, by `drop` and leaves everything else alone.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    (token_id,) = tokenizer(token, add_special_tokens=False)["input_ids"]
    ids = tokenizer(tokenizer.bos_token + prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states[-1][0, -1]  # after the final norm
    weights_file = model_dir / "model.safetensors"
    weights = load_file(weights_file)
    name = "model.embed_tokens.weight"
    weights[name] = weights[name].clone()
    weights[name][token_id] -= drop * hidden / hidden.dot(hidden)
    save_file(weights, weights_file, metadata={"format": "pt"})


def run(pytester: pytest.Pytester, model_dir: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--model", str(model_dir), "-p", "no:cacheprovider", *args)


def test_baseline_lifecycle(pytester: pytest.Pytester, model_dir: Path) -> None:
    pytester.makefile(".seqprobe.yaml", days=CASES)
    baseline = pytester.path / "baselines" / "tiny.json"
    baseline.parent.mkdir()

    first = run(pytester, model_dir, "--baseline", str(baseline), "--update-baseline")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(
        [f"baseline written: {baseline} (1 case: 1 added, 0 changed, 0 within tolerance, 0 dropped, 0 kept (not run))"]
    )
    written = baseline.read_bytes()
    assert json.loads(written)["cases"][0]["case_id"].endswith("days.seqprobe.yaml::tomorrow::sunday")

    second = run(pytester, model_dir, "--baseline", str(baseline))
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(["1 unchanged (1 case)"])

    damage(model_dir, " Monday")
    third = run(pytester, model_dir, "--baseline", str(baseline))
    third.assert_outcomes(failed=1)
    third.stdout.fnmatch_lines(
        [
            "case tomorrow::sunday (*days.seqprobe.yaml:5) on *",
            "  failed: regressed: rank(' Monday') * → * (tolerance 2)",
            "  failed: regressed: logit_diff(' Monday') * → -10 (tolerance 0.5)",
            "  failed: regressed: logprob(' Monday') * → * (tolerance 0.5); to accept, rerun with --update-baseline",
            "*1 regressed (1 case)*",
        ]
    )
    assert baseline.read_bytes() == written, "a failing comparison must leave the baseline untouched"

    fourth = run(pytester, model_dir, "--baseline", str(baseline), "--update-baseline")
    fourth.assert_outcomes(passed=1)
    assert baseline.read_bytes() != written

    fifth = run(pytester, model_dir, "--baseline", str(baseline))
    fifth.assert_outcomes(passed=1)


def test_a_regression_fails_even_a_known_failure(pytester: pytest.Pytester, model_dir: Path) -> None:
    known = CASES.replace(
        'distractors: [" Sunday"]',
        f'distractors: [" Sunday"]\n        expect: {{max_rank: 1}}\n        known_failures: {{"{model_dir}": "random model"}}',
    )
    pytester.makefile(".seqprobe.yaml", days=known)
    baseline = pytester.path / "tiny.json"
    run(pytester, model_dir, "--baseline", str(baseline), "--update-baseline").assert_outcomes(xfailed=1)
    damage(model_dir, " Monday")
    result = run(pytester, model_dir, "--baseline", str(baseline))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*regressed: logit_diff*"])


def test_missing_baseline_says_how_to_make_one(pytester: pytest.Pytester, model_dir: Path) -> None:
    pytester.makefile(".seqprobe.yaml", days=CASES)
    result = run(pytester, model_dir, "--baseline", "nope.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--baseline: results file nope.json does not exist; write it from a run with --update-baseline"]
    )


def test_report_writes_markdown_and_results(pytester: pytest.Pytester, model_dir: Path) -> None:
    pytester.makefile(".seqprobe.yaml", days=CASES)
    result = run(pytester, model_dir, "--report", "reports/tiny.md")
    result.assert_outcomes(passed=1)
    markdown = (pytester.path / "reports" / "tiny.md").read_text(encoding="utf-8")
    assert markdown.startswith(f"# Capability report: {model_dir}\n")
    assert "| `days::tomorrow` |       1 |        1 |" in markdown
    results = json.loads((pytester.path / "reports" / "tiny.json").read_text(encoding="utf-8"))
    (case_file,) = results["case_files"]
    assert case_file.endswith("days.seqprobe.yaml")
    assert set(results["cases"][0]["metrics"]) == {"p_answer", "rank", "logit_diff", "logprob"}


def test_update_baseline_needs_a_file(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--update-baseline")
    result.stderr.fnmatch_lines(["*--update-baseline needs --baseline FILE*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_a_baseline_that_matches_no_case_file_fails_the_run_and_says_why(
    pytester: pytest.Pytester, model_dir: Path
) -> None:
    """Case ids are relative to pytest's rootdir; one that moved would otherwise compare nothing and pass."""
    pytester.makefile(".seqprobe.yaml", days=CASES)
    baseline = pytester.path / "tiny.json"
    run(pytester, model_dir, "--rootdir", str(pytester.path), "--baseline", str(baseline), "--update-baseline")

    moved = run(pytester, model_dir, "--rootdir", str(pytester.path.parent), "--baseline", str(baseline))
    moved.assert_outcomes(passed=1)
    assert moved.ret == pytest.ExitCode.TESTS_FAILED
    moved.stdout.fnmatch_lines(
        [
            "ERROR: nothing was compared: none of this run's case files is in the baseline *tiny.json "
            f"(this run has '{pytester.path.name}/days.seqprobe.yaml', the baseline 'days.seqprobe.yaml'). "
            f"Case ids are paths relative to pytest's rootdir, here {pytester.path.parent}. Put a pytest config *",
            "1 new (1 case)",
        ]
    )


def test_an_html_report_is_one_interactive_file_beside_its_results(pytester: pytest.Pytester, model_dir: Path) -> None:
    pytester.makefile(".seqprobe.yaml", days=CASES)
    result = run(pytester, model_dir, "--report", "reports/tiny.html")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["report written: reports/tiny.html (results: reports/tiny.json, 0 figures)"])
    page = (pytester.path / "reports" / "tiny.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "days.seqprobe.yaml" in page
    assert not (pytester.path / "reports" / "tiny_files").exists()


def test_a_report_of_another_format_is_a_usage_error(pytester: pytest.Pytester, model_dir: Path) -> None:
    result = run(pytester, model_dir, "--report", "reports/tiny.pdf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--report reports/tiny.pdf: give a path ending in .md (markdown with PNGs) or .html*"]
    )
