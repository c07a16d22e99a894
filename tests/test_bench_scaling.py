"""`seqprobe bench --pairs P --length N`: its arguments, its token-level pairs, its JSON, and runs on tiny models.

No timing is asserted: a benchmark's numbers belong in the README, measured on an idle machine.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqprobe.bench import SweepTiming
from seqprobe.bench_command import bench_parser, is_scaling_run, main
from seqprobe.bench_paths import BENCH_SWEEPS
from seqprobe.bench_scaling import (
    ReferencePlan,
    ScalingResult,
    ScalingRun,
    reference_cells,
    run_scaling,
    substituted_position,
    token_pairs,
)
from seqprobe.engine.metric import logit_diff_metric
from seqprobe.errors import PatchingError
from seqprobe.loading.models import loaded_from_bridge

# --- arguments ------------------------------------------------------------------------------


def test_pairs_length_and_sites_parse_to_tuples() -> None:
    args = bench_parser().parse_args(
        ["--pairs", "4,8,16", "--length", "10", "--sites", "z,resid_pre", "--no-reference"]
    )
    assert args.pairs == (4, 8, 16) and args.length == (10,)
    assert args.sites == ("z", "resid_pre")
    assert args.reference is False
    assert is_scaling_run(args)


def test_the_default_bench_is_the_studys_grid_with_every_site() -> None:
    args = bench_parser().parse_args([])
    assert args.pairs is None and args.length is None and args.reference is None and args.out is None
    assert args.sites == BENCH_SWEEPS  # the six patching sites, then the path sweep and the curve (study's grid only)
    assert args.dtype is None  # float32 for a named model, a random model's own dtype otherwise
    assert not is_scaling_run(args)
    assert is_scaling_run(bench_parser().parse_args(["--model", "random:tinyllama-1.1b"]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pairs", "0"], "expected positive whole numbers separated by commas, e.g. 4,8,16; got '0'"),
        (["--length", "10,x"], "got '10,x'"),
        (["--sites", "z,resid"], "unknown site 'resid' (did you mean 'resid_pre'?); choose from "),
    ],
)
def test_bad_values_say_what_was_expected(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_reference_flags_need_a_scaling_run(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--no-reference"])
    assert exit_.value.code == 2
    assert "--reference/--no-reference apply to --pairs/--length runs" in capsys.readouterr().err


def test_an_unknown_random_model_lists_the_random_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", "random:nope", "--pairs", "1"]) == 2
    err = capsys.readouterr().err
    assert "ModelLoadError: unknown random model 'random:nope'; the random models are: random:tinyllama-1.1b (" in err


def test_help_lists_the_scaling_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    usage = " ".join(capsys.readouterr().out.split())
    for flag in ("--pairs P[,P...]", "--length N[,N...]", "--sites SITE[,SITE...]", "--reference, --no-reference"):
        assert flag in usage
    assert "--out PATH" in usage and "random:tinyllama-1.1b" in usage


# --- the pairs ------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.integers(1, 5), length=st.integers(2, 24), seed=st.integers(0, 2**31))
def test_token_pairs_follow_the_stated_rule(tiny_llama_bridge, pairs: int, length: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    bridge = tiny_llama_bridge
    built = token_pairs(bridge, pairs=pairs, length=length, seed=seed)
    assert len(built) == pairs
    where = substituted_position(length)
    special = set(bridge.tokenizer.all_special_ids)
    for pair in built:
        assert pair.clean.shape == pair.corrupted.shape == (length,)
        assert pair.clean[0] == bridge.tokenizer.bos_token_id
        differ = (pair.clean != pair.corrupted).nonzero().flatten().tolist()
        assert differ == [where]
        assert not special & set(pair.clean[1:].tolist()) and pair.corrupted[where].item() not in special
        assert pair.answer_id != pair.distractor_id
    # Deterministic, and the first pairs of a larger set are the smaller set.
    again = token_pairs(bridge, pairs=pairs + 1, length=length, seed=seed)
    for first, second in zip(built, again, strict=False):
        assert torch.equal(first.clean, second.clean) and torch.equal(first.corrupted, second.corrupted)
        assert (first.answer_ids, first.distractor_ids) == (second.answer_ids, second.distractor_ids)


def test_token_pairs_have_a_positive_gap_on_every_pair(tiny_bridge) -> None:  # type: ignore[no-untyped-def]
    built = token_pairs(tiny_bridge, pairs=3, length=9, seed=1)
    with torch.inference_mode():
        clean = tiny_bridge(torch.stack([p.clean for p in built]))
        corrupted = tiny_bridge(torch.stack([p.corrupted for p in built]))
    for i, pair in enumerate(built):
        gap = logit_diff_metric(clean[i : i + 1], [pair]) - logit_diff_metric(corrupted[i : i + 1], [pair])
        assert gap > 0
    assert substituted_position(9) == 4  # the study's "Sunday" is token 4 of 9


def test_token_pairs_refuse_impossible_sizes(tiny_llama_bridge) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PatchingError, match=r"got pairs=2, length=1"):
        token_pairs(tiny_llama_bridge, pairs=2, length=1)
    with pytest.raises(PatchingError, match=r"length <= the model's context \(128\), got pairs=1, length=129"):
        token_pairs(tiny_llama_bridge, pairs=1, length=129)


def test_reference_cells_count_transformer_lens_forward_passes(tiny_llama_bridge) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_llama_bridge.cfg  # 2 layers, 4 heads sharing 2 key/value heads
    assert reference_cells(tiny_llama_bridge, "resid_pre", length=7) == cfg.n_layers * 7
    assert reference_cells(tiny_llama_bridge, "z", length=7) == cfg.n_layers * 4
    assert reference_cells(tiny_llama_bridge, "v", length=7) == cfg.n_layers * 2


# --- the JSON -------------------------------------------------------------------------------


def _run(*, ran: bool) -> ScalingRun:
    rows = (
        SweepTiming("setup", 0.5, 1.0 if ran else 0.0, 0.0, 10, 20 if ran else 0),
        SweepTiming("z", 2.0, 30.0 if ran else 0.0, 3e-6 if ran else 0.0, 400, 50 if ran else 0),
    )
    plan = ReferencePlan(ran, 31.0, "ran" if ran else "skipped (--no-reference)")
    return ScalingRun(pairs=8, length=20, substituted=10, rows=rows, reference=plan, max_resident_bytes=5_000)


def test_scaling_json_has_peak_memory_for_every_run_and_sweep() -> None:
    result = ScalingResult(
        model="m", source="s", dtype="bfloat16", device="cpu", parameters=10, parameter_bytes=20,
        sites=("z",), seed=0, max_memory=6_000_000_000, runs=(_run(ran=True), _run(ran=False)),
    )  # fmt: skip
    data = json.loads(json.dumps(result.to_json()))
    assert data["model"] == "m" and data["dtype"] == "bfloat16" and data["max_memory"] == 6_000_000_000
    ran, skipped = data["runs"]
    for run in (ran, skipped):
        assert run["pairs"] == 8 and run["length"] == 20 and run["substituted_position"] == 10
        assert run["peak_memory_bytes"] == 400 and run["max_resident_bytes"] == 5_000
        assert run["seqprobe_seconds"] == pytest.approx(2.5)
        assert all("peak_memory_bytes" in sweep for sweep in run["sweeps"].values())
        assert run["sweeps"]["z"]["peak_memory_bytes"] == 400
    assert ran["speedup"] == pytest.approx(31.0 / 2.5) and ran["max_abs_diff"] == pytest.approx(3e-6)
    assert ran["sweeps"]["z"]["transformer_lens_seconds"] == 30.0
    assert ran["transformer_lens"] == {"ran": True, "estimated_seconds": 31.0, "reason": "ran"}
    # What did not run is null, never a made-up 0.
    assert skipped["transformer_lens_seconds"] is None and skipped["speedup"] is None
    assert skipped["max_abs_diff"] is None
    assert skipped["sweeps"]["z"]["transformer_lens_seconds"] is None
    assert skipped["transformer_lens"]["reason"] == "skipped (--no-reference)"
    table = result.format()
    assert table.splitlines()[0] == "m on cpu, bfloat16, 0.0M parameters (0 MB); token-level pairs, seed 0"
    assert "pairs=8 length=20: transformer_lens skipped (--no-reference)" in table


# --- runs on tiny models --------------------------------------------------------------------


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_a_scaling_run_matches_transformer_lens_and_skips_it_when_told(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    loaded = loaded_from_bridge(sharp_bridge, name="sharp-llama")
    progress = io.StringIO()
    sites = ("mlp_out", "v")
    result = run_scaling(loaded, pairs=(1, 2), lengths=(6,), sites=sites, progress=progress)
    assert [(run.pairs, run.length) for run in result.runs] == [(1, 6), (2, 6)]
    for run in result.runs:
        assert run.reference.ran  # a tiny model's sweeps are far under the limit
        assert [row.site for row in run.rows] == ["setup", *sites]
        assert max(row.max_abs_diff for row in run.rows) < 1e-4
        assert run.peak_memory_bytes >= 0 and run.max_resident_bytes
    assert "transformer_lens: v sweep" in progress.getvalue()
    skipped = run_scaling(loaded, pairs=(2,), lengths=(5,), sites=("z",), reference=False, progress=None)
    (run,) = skipped.runs
    assert not run.reference.ran and run.reference.reason.startswith("skipped (--no-reference); estimated ")
    assert [row.site for row in run.rows] == ["setup", "z"] and run.seqprobe_seconds > 0
    assert skipped.to_json()["runs"][0]["transformer_lens_seconds"] is None


def test_the_command_runs_a_grid_on_a_model_folder(tiny_llama_dir: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "nested" / "scaling.json"
    argv = ["--model", str(tiny_llama_dir), "--device", "cpu", "--pairs", "1,2", "--length", "4,6"]
    assert main([*argv, "--sites", "z,resid_pre", "--no-reference", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    assert printed["dtype"] == "float32" and printed["sites"] == ["z", "resid_pre"]
    assert [(run["pairs"], run["length"]) for run in printed["runs"]] == [(1, 4), (1, 6), (2, 4), (2, 6)]
    assert all(set(run["sweeps"]) == {"setup", "z", "resid_pre"} for run in printed["runs"])
    assert all(isinstance(run["peak_memory_bytes"], int) for run in printed["runs"])
