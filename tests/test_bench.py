"""`seqprobe bench`: the shape of its result and its JSON, on a tiny model (no timing assertions)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from seqprobe.bench import STUDY_PAIRS, BenchResult, SweepTiming, run_benchmark, study_pairs
from seqprobe.bench_command import main
from seqprobe.bench_paths import BENCH_SWEEPS, patching_sites, top_sender
from seqprobe.engine.patching import prepare_patching
from seqprobe.vocabulary.options import DTYPES
from seqprobe.vocabulary.sites import SITES


def test_study_pairs_are_the_studys_four_with_the_corrupted_answer_as_distractor() -> None:
    assert STUDY_PAIRS[0] == (
        "Today it is Sunday, tomorrow it is",
        "Today it is Tuesday, tomorrow it is",
        " Monday",
        " Wednesday",
    )
    assert [pair[2] for pair in STUDY_PAIRS] == [" Monday", " Saturday", " Friday", " Tuesday"]
    assert [pair[3] for pair in STUDY_PAIRS] == [" Wednesday", " Friday", " Sunday", " Thursday"]


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_run_benchmark_times_every_sweep_in_both_tools(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    bridge = sharp_bridge
    progress = io.StringIO()
    sites = ("mlp_out", "v")  # a position sweep and a head sweep keep transformer_lens's part short
    result = run_benchmark(bridge, study_pairs(bridge), model="tiny-llama", sites=sites, progress=progress)
    assert [row.site for row in result.rows] == ["setup", *sites]
    assert all(row.seqprobe_seconds > 0 and row.transformer_lens_seconds > 0 for row in result.rows)
    assert result.max_abs_diff < 1e-4
    assert all(row.seqprobe_peak_memory_bytes >= 0 for row in result.rows)
    assert "transformer_lens: mlp_out sweep" in progress.getvalue()
    # A budget of one lane runs every configuration alone: the same grids.
    budgeted = run_benchmark(bridge, study_pairs(bridge), model="tiny-llama", sites=sites, progress=None, max_memory=1)
    assert budgeted.max_abs_diff < 1e-4
    table = result.format()
    assert table.splitlines()[0] == "tiny-llama on cpu"
    assert "total" in table and "speedup" in table
    assert result.load_average is not None  # Linux has a load average
    assert table.splitlines()[-1].startswith("load average (1 min) at start ")


# The keys `seqprobe bench --json` promises, named by the issue that asked for them.
ISSUE_KEYS = {"seqprobe_seconds", "transformer_lens_seconds", "speedup", "max_abs_diff", "peak_memory_bytes"}


def test_bench_json_has_the_issue_keys_and_per_sweep_figures() -> None:
    rows = (SweepTiming("setup", 0.5, 1.0, 0.0, 10, 20), SweepTiming("resid_pre", 1.5, 29.0, 2e-6, 300, 40))
    data = json.loads(json.dumps(BenchResult(model="m", device="cpu", rows=rows).to_json()))
    assert ISSUE_KEYS <= data.keys()
    assert data["peak_memory_bytes"] == 300
    assert data["seqprobe_seconds"] == pytest.approx(2.0)
    assert data["transformer_lens_seconds"] == pytest.approx(30.0)
    assert data["speedup"] == pytest.approx(15.0)
    assert data["max_abs_diff"] == pytest.approx(2e-6)
    assert data["load_average"] is None
    assert data["sweeps"]["resid_pre"] == {
        "seqprobe_seconds": 1.5,
        "transformer_lens_seconds": 29.0,
        "speedup": pytest.approx(29.0 / 1.5),
        "max_abs_diff": 2e-6,
        "peak_memory_bytes": 300,
        "transformer_lens_peak_memory_bytes": 40,
    }


def test_bench_takes_the_model_options_of_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    usage = " ".join(capsys.readouterr().out.split())
    assert "--model MODEL" in usage and "--json" in usage and "--max-memory SIZE" in usage
    assert "--dtype {" + ",".join(DTYPES) + "}" in usage
    assert "torch device: auto (cuda when available), cpu, cuda, cuda:1, ... (default: auto)" in usage


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_the_default_command_runs_the_studys_grid_on_the_sites_asked(sharp_model_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "bench.json"
    assert (
        main(["--model", str(sharp_model_dir), "--device", "cpu", "--sites", "mlp_out", "--json", "--out", str(out)])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == data
    assert list(data["sweeps"]) == ["setup", "mlp_out"]
    assert ISSUE_KEYS <= data.keys()
    assert data["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_the_path_sweep_is_timed_against_transformer_lens_from_the_top_z_head(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    progress = io.StringIO()
    pairs = study_pairs(sharp_bridge)
    result = run_benchmark(sharp_bridge, pairs, model="tiny-llama", sites=("path",), progress=progress)
    assert [row.site for row in result.rows] == ["setup", "path"]
    (path,) = result.rows[1:]
    assert path.seqprobe_seconds > 0 and path.transformer_lens_seconds > 0
    assert path.max_abs_diff < 1e-4
    z = prepare_patching(sharp_bridge, pairs, sites=("z",)).sweep("z").recovery
    layer, head = top_sender(z)
    assert float(z[layer, head]) == float(z.max())
    assert f"transformer_lens: path sweep from L{layer}H{head} into every later head's q took" in progress.getvalue()
    assert set(result.to_json()["sweeps"]["path"]) == set(result.to_json()["sweeps"]["setup"])


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_the_faithfulness_curve_is_timed_against_hooked_transformer_lens_runs(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    progress = io.StringIO()
    result = run_benchmark(
        sharp_bridge, study_pairs(sharp_bridge), model="tiny-llama", sites=("curve",), progress=progress
    )
    assert [row.site for row in result.rows] == ["setup", "curve"]
    (curve,) = result.rows[1:]
    assert curve.seqprobe_seconds > 0 and curve.transformer_lens_seconds > 0
    assert curve.max_abs_diff < 1e-4
    # The tiny model has 3 layers of 4 heads: its curve has all 12 of them, fewer than CURVE_POINTS.
    step = "faithfulness curve of the top 12 heads by z recovery (resample ablation)"
    assert f"seqprobe: {step} took" in progress.getvalue()
    assert f"transformer_lens: {step} took" in progress.getvalue()


def test_the_path_sweep_and_the_curve_need_the_z_sweep() -> None:
    assert BENCH_SWEEPS == (*SITES, "path", "curve")
    assert patching_sites(("mlp_out", "path")) == patching_sites(("mlp_out", "curve")) == ("mlp_out", "z")
    assert patching_sites(("z", "path")) == patching_sites(("z",)) == ("z",)
    assert top_sender(torch.tensor([[0.1, float("nan")], [0.5, 0.2]])) == (1, 0)
