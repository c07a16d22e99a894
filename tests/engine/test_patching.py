"""The patching engine: equal to transformer_lens.patching, exact invariants, and its errors.

The equality tests run on the three-layer models of tests/_sharp_models.py (Llama with grouped-query
attention, GPT-2, Gemma 3 with a sliding window shorter than the prompt), on which patching moves
the metric by tenths of a logit or more: a difference in the engine shows up instead of hiding
under a tiny clean−corrupted gap.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqprobe.bench import reference_hook_names, study_pairs, transformer_lens_sweeps
from seqprobe.engine.forward import resumable_forward
from seqprobe.engine.patching import (
    SITES,
    PatchingPair,
    logit_diff_metric,
    make_pair,
    patch_sweep,
    patched_metric_grid,
    prepare_patching,
    recovery,
)
from seqprobe.errors import PatchingError
from tests._sharp_models import BUILDERS, sharp_bridge

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TEMPLATE = " Today it is {}, tomorrow it is"


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def bridge(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return sharp_bridge(request.param, tmp_path_factory.mktemp(f"sharp-{request.param}"))


def _pairs(bridge, days: list[tuple[str, str, str, str]]) -> list[PatchingPair]:  # type: ignore[no-untyped-def]
    return [
        make_pair(bridge, clean=TEMPLATE.format(c), corrupted=TEMPLATE.format(r), answer=f" {a}", distractor=f" {d}")
        for c, r, a, d in days
    ]


STUDY = [("Sunday", "Tuesday", "Monday", "Wednesday"), ("Friday", "Thursday", "Saturday", "Friday")]


@pytest.fixture(scope="module")
def pairs(bridge) -> list[PatchingPair]:  # type: ignore[no-untyped-def]
    return _pairs(bridge, STUDY)


# -- the forward pass -------------------------------------------------------------------------


@torch.no_grad()
def test_forward_reproduces_the_bridge_activations_and_logits(bridge, pairs) -> None:  # type: ignore[no-untyped-def]
    tokens = torch.stack([pair.clean for pair in pairs])
    logits, cache = bridge.run_with_cache(tokens)
    forward = resumable_forward(bridge.original_model)
    run = forward.run(tokens)
    hooks = {
        "resid_pre": "blocks.{}.hook_resid_pre", "attn_out": "blocks.{}.hook_attn_out",
        "resid_mid": "blocks.{}.hook_resid_mid", "mlp_out": "blocks.{}.hook_mlp_out",
        "z": "blocks.{}.attn.hook_z", "pattern": "blocks.{}.attn.hook_pattern",
    }  # fmt: skip
    for layer in range(forward.n_layers):
        for name, hook in hooks.items():
            _assert_float_noise(run[name, layer], cache[hook.format(layer)])
        # seqprobe keeps values as [batch kv_head pos d_head]; the bridge's hook_v is the transpose.
        _assert_float_noise(run["v", layer].transpose(1, 2), cache[f"blocks.{layer}.attn.hook_v"])
    ids = torch.tensor([[pair.answer_id, pair.distractor_id] for pair in pairs])
    hf_logits = bridge.original_model(tokens).logits[:, -1]
    torch.testing.assert_close(forward.unembed(run.resid_final[:, -1], ids), hf_logits.gather(-1, ids))
    torch.testing.assert_close(logits[:, -1].gather(-1, ids), hf_logits.gather(-1, ids))


def _assert_float_noise(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding: 1e-5 of the tensor's own scale (activations here reach ~100)."""
    assert actual.shape == expected.shape
    scale = max(1.0, float(expected.abs().max()))
    assert float((actual - expected).abs().max()) <= 1e-5 * scale


# -- equality with transformer_lens.patching ----------------------------------------------------


@pytest.fixture(scope="module")
def transformer_lens_grids(bridge, pairs) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    """transformer_lens's six sweeps with the raw metric (no normalization to hide behind)."""
    clean = torch.stack([pair.clean for pair in pairs])
    corrupted = torch.stack([pair.corrupted for pair in pairs])
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(clean, names_filter=reference_hook_names(bridge.cfg.n_layers, SITES))
        return {
            site: sweep(bridge, corrupted, cache, lambda logits: logit_diff_metric(logits, pairs))
            for site, sweep in transformer_lens_sweeps().items()
        }


@pytest.mark.parametrize("site", SITES)
def test_sweep_equals_transformer_lens(bridge, pairs, transformer_lens_grids, site: str) -> None:  # type: ignore[no-untyped-def]
    result = prepare_patching(bridge, pairs, sites=(site,)).sweep(site)
    expected = transformer_lens_grids[site]
    assert result.metric.shape == expected.shape
    # The metric moves by tenths of a logit across the grid on these models: 1e-5 is a strict bar.
    assert float(expected.max() - expected.min()) > 0.1
    torch.testing.assert_close(result.metric, expected, atol=1e-5, rtol=0)
    expected_recovery = (expected - result.corrupted_metric) / (result.clean_metric - result.corrupted_metric)
    torch.testing.assert_close(result.recovery, expected_recovery, atol=1e-4, rtol=0)


def test_grouped_query_values_are_patched_per_key_value_head(bridge, pairs) -> None:  # type: ignore[no-untyped-def]
    forward = resumable_forward(bridge.original_model)
    result = patch_sweep(bridge, pairs, "v")
    if forward.n_kv_heads == forward.n_heads:
        assert result.labels == tuple(f"H{h}" for h in range(forward.n_heads))
    else:
        assert result.recovery.shape == (forward.n_layers, forward.n_kv_heads)
        assert result.labels == tuple(f"KV{g}" for g in range(forward.n_kv_heads))


# -- invariants ---------------------------------------------------------------------------------

pair_days = st.lists(
    st.tuples(*(st.sampled_from(DAYS),) * 4).filter(lambda d: d[0] != d[1] and d[2] != d[3]), min_size=1, max_size=3
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(days=pair_days, site=st.sampled_from(SITES))
def test_patching_a_run_into_itself_recovers_exactly_one_or_zero(bridge, days, site: str) -> None:  # type: ignore[no-untyped-def]
    """Clean activations patched into the clean run give the clean metric (recovery 1) in every cell;
    corrupted into corrupted give the corrupted metric (recovery 0)."""
    runs = prepare_patching(bridge, _pairs(bridge, days), min_gap=0.0)
    for source, expected in ((runs.clean, 1.0), (runs.corrupted, 0.0)):
        grid = patched_metric_grid(runs.forward, source=source, target=source, site=site, token_ids=runs.token_ids)
        cells = recovery(grid.cpu(), clean=runs.clean_metric, corrupted=runs.corrupted_metric, min_gap=0.0)
        assert torch.equal(cells, torch.full_like(cells, expected))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(days=pair_days)
def test_patching_the_whole_difference_recovers_the_clean_run_and_earlier_positions_nothing(bridge, days) -> None:  # type: ignore[no-untyped-def]
    """The prompts differ in one token, so its clean embedding (resid_pre of block 0) *is* the clean run."""
    runs = prepare_patching(bridge, _pairs(bridge, days), sites=("resid_pre",), min_gap=0.0)
    result = runs.sweep("resid_pre")
    substituted = result.column("substituted")
    torch.testing.assert_close(result.metric[0, substituted], torch.tensor(runs.clean_metric), atol=1e-5, rtol=1e-5)
    before = result.metric[:, :substituted]
    assert torch.equal(before, torch.full_like(before, runs.corrupted_metric))


# -- naming and errors --------------------------------------------------------------------------


def test_columns_are_named_by_token_and_role(tiny_llama_bridge) -> None:  # type: ignore[no-untyped-def]
    pairs = _pairs(tiny_llama_bridge, STUDY)
    runs = prepare_patching(tiny_llama_bridge, pairs, min_gap=0.0)
    resid = runs.sweep("resid_pre")
    assert resid.labels[:5] == ("<|bos|>_0", "Today_1", "it_2", "is_3", "Sunday_4")
    assert resid.positions == {"substituted": 4, "final": len(resid.labels) - 1}
    assert resid.column("substituted") == resid.column("Sunday_4") == 4
    assert resid.at(1, "final") == float(resid.recovery[1, -1])
    assert runs.sweep("z").labels == ("H0", "H1", "H2", "H3")
    with pytest.raises(PatchingError, match=r"resid_pre: no column 'Monday_4'; choose one of \['substituted', 'final'"):
        resid.column("Monday_4")


def test_prompts_of_different_lengths_name_both_tokenizations(tiny_llama_bridge) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PatchingError) as error:
        make_pair(
            tiny_llama_bridge,
            clean=" it is Sunday",
            corrupted=" it is Sundays",
            answer=" Monday",
            distractor=" Tuesday",
        )
    assert str(error.value) == (
        "patching: clean and corrupted prompts must tokenize to the same length, so that a position means the same "
        "slot in both runs: clean ' it is Sunday' is 4 tokens ['<|bos|>', ' it', ' is', ' Sunday'], corrupted "
        "' it is Sundays' is 5 tokens ['<|bos|>', ' it', ' is', ' Sunday', 's']; substitute words that are the same "
        "number of tokens"
    )


def test_token_tensors_of_different_lengths_are_refused() -> None:
    with pytest.raises(PatchingError, match=r"clean has 3 \[1, 2, 3\], corrupted has 2 \[1, 2\]"):
        PatchingPair(clean=torch.tensor([1, 2, 3]), corrupted=torch.tensor([1, 2]), answer_id=4, distractor_id=5)


def test_pairs_of_different_lengths_are_refused(tiny_llama_bridge) -> None:  # type: ignore[no-untyped-def]
    short = make_pair(
        tiny_llama_bridge, clean=" it is Sunday", corrupted=" it is Monday", answer=" Monday", distractor=" Tuesday"
    )
    long = _pairs(tiny_llama_bridge, STUDY)[0]
    with pytest.raises(
        PatchingError, match=r"all pairs must have the same number of tokens.*lengths per pair \[4, 9\]"
    ):
        prepare_patching(tiny_llama_bridge, [short, long])


def test_recovery_is_undefined_when_clean_and_corrupted_agree(tiny_llama_bridge) -> None:  # type: ignore[no-untyped-def]
    same = make_pair(
        tiny_llama_bridge,
        clean=TEMPLATE.format("Sunday"),
        corrupted=TEMPLATE.format("Sunday"),
        answer=" Monday",
        distractor=" Tuesday",
    )
    runs = prepare_patching(tiny_llama_bridge, [same])
    with pytest.raises(PatchingError) as error:
        runs.sweep("resid_pre")
    metric = runs.clean_metric
    assert str(error.value) == (
        f"recovery is undefined: clean metric {metric:.4f} and corrupted metric {metric:.4f} differ by 0.0000, less "
        "than min_gap=0.01, so (patched − corrupted) / (clean − corrupted) would divide by almost zero. Choose a "
        "corrupted prompt that moves the model towards the distractor (its metric should be well below the clean "
        "one), or a distractor the corrupted prompt favours"
    )
    with pytest.raises(PatchingError, match="recovery is undefined"):
        recovery(torch.zeros(2), clean=1.0, corrupted=1.0 + 1e-4)


def test_unknown_sites_and_architectures_are_named(tiny_llama_bridge) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PatchingError, match=r"unknown patching site\(s\) \['resid_post'\]; choose from \('resid_pre'"):
        prepare_patching(tiny_llama_bridge, _pairs(tiny_llama_bridge, STUDY), sites=("resid_post",))

    class Unknown(torch.nn.Module):
        config = type("Config", (), {"model_type": "mamba"})()

    with pytest.raises(PatchingError, match=r"no forward for model_type='mamba'; it covers llama, gpt2, gemma3_text"):
        resumable_forward(Unknown())


# -- the real model -----------------------------------------------------------------------------


@pytest.mark.real_model
def test_smollm2_resid_pre_equals_transformer_lens_on_sampled_layers(real_model) -> None:  # type: ignore[no-untyped-def]
    """Two layers of the study's resid_pre grid (18 transformer_lens forwards, a few seconds), to 1e-4."""
    import pandas as pd
    import transformer_lens.patching as tl_patching

    bridge = real_model.bridge
    pairs = study_pairs(bridge)
    runs = prepare_patching(bridge, pairs, sites=("resid_pre", "v"))
    result = runs.sweep("resid_pre")
    # SmolLM2's 9 query heads share 3 key/value heads: one value column per key/value head.
    assert runs.sweep("v").labels == ("KV0", "KV1", "KV2")
    clean = torch.stack([pair.clean for pair in pairs])
    corrupted = torch.stack([pair.corrupted for pair in pairs])
    layers = [bridge.cfg.n_layers // 2, bridge.cfg.n_layers - 1]  # a middle block, and the last (final position only)
    cells = pd.DataFrame([(layer, pos) for layer in layers for pos in range(clean.shape[1])], columns=["layer", "pos"])
    with torch.inference_mode():
        logits, cache = bridge.run_with_cache(clean, names_filter=lambda name: name.endswith("hook_resid_pre"))
        clean_metric = float(logit_diff_metric(logits, pairs))
        corrupted_metric = float(logit_diff_metric(bridge(corrupted), pairs))
        expected = tl_patching.generic_activation_patch(
            bridge, corrupted, cache,
            lambda out: (logit_diff_metric(out, pairs) - corrupted_metric) / (clean_metric - corrupted_metric),
            patch_setter=tl_patching.layer_pos_patch_setter, activation_name="resid_pre", index_df=cells,
        )  # fmt: skip
    torch.testing.assert_close(result.recovery[layers].flatten(), expected.cpu(), atol=1e-4, rtol=0)
    assert result.clean_metric - result.corrupted_metric > 1.0
