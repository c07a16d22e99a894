"""The patching engine: equal to transformer_lens.patching, exact invariants, and its errors.

The equality tests run on the three-layer models of tests/_sharp_models.py (Llama with grouped-query
attention, GPT-2, Gemma 3 with a sliding window shorter than the prompt), on which patching moves
the metric by tenths of a logit or more: a difference in the engine shows up instead of hiding
under a tiny clean−corrupted gap.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from seqprobe.bench import reference_hook_names, study_pairs, transformer_lens_sweeps
from seqprobe.engine.architectures import resumable_forward
from seqprobe.engine.patching import (
    PatchingPair,
    logit_diff_metric,
    make_pair,
    patch_sweep,
    prepare_patching,
    recovery,
)
from seqprobe.engine.resume import patched_heads_metric, patched_metric_grid
from seqprobe.errors import PatchingError
from seqprobe.vocabulary.sites import HEAD_SITES, SITES, hook_name

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TEMPLATE = " Today it is {}, tomorrow it is"


def _pairs(bridge, days: list[tuple[str, str, str, str]]) -> list[PatchingPair]:  # type: ignore[no-untyped-def]
    return [
        make_pair(bridge, clean=TEMPLATE.format(c), corrupted=TEMPLATE.format(r), answer=f" {a}", distractor=f" {d}")
        for c, r, a, d in days
    ]


STUDY = [("Sunday", "Tuesday", "Monday", "Wednesday"), ("Friday", "Thursday", "Saturday", "Friday")]


@pytest.fixture(scope="module")
def pairs(sharp_bridge) -> list[PatchingPair]:  # type: ignore[no-untyped-def]
    return _pairs(sharp_bridge, STUDY)


# -- the forward pass -------------------------------------------------------------------------


@torch.no_grad()
def test_forward_reproduces_the_bridge_activations_and_logits(sharp_bridge, pairs) -> None:  # type: ignore[no-untyped-def]
    tokens = torch.stack([pair.clean for pair in pairs])
    logits, cache = sharp_bridge.run_with_cache(tokens)
    forward = resumable_forward(sharp_bridge.original_model)
    run = forward.run(tokens)
    for layer in range(forward.n_layers):
        for site in ("resid_pre", "attn_out", "mlp_out", "z", "pattern"):
            _assert_float_noise(run[site, layer], cache[hook_name(site, layer)])
        # resid_mid is no patching site, so the vocabulary has no hook name for it.
        _assert_float_noise(run["resid_mid", layer], cache[f"blocks.{layer}.hook_resid_mid"])
        # seqprobe keeps values as [batch kv_head pos d_head]; the bridge's hook_v is the transpose.
        _assert_float_noise(run["v", layer].transpose(1, 2), cache[hook_name("v", layer)])
    ids = torch.tensor([[pair.answer_id, pair.distractor_id] for pair in pairs])
    hf_logits = sharp_bridge.original_model(tokens).logits[:, -1]
    torch.testing.assert_close(forward.unembed(run.resid_final[:, -1], ids), hf_logits.gather(-1, ids))
    torch.testing.assert_close(logits[:, -1].gather(-1, ids), hf_logits.gather(-1, ids))


def _assert_float_noise(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding: 1e-5 of the tensor's own scale (activations here reach ~100)."""
    assert actual.shape == expected.shape
    scale = max(1.0, float(expected.abs().max()))
    assert float((actual - expected).abs().max()) <= 1e-5 * scale


# -- equality with transformer_lens.patching ----------------------------------------------------


@pytest.fixture(scope="module")
def transformer_lens_grids(sharp_bridge, pairs) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    """transformer_lens's six sweeps with the raw metric (no normalization to hide behind)."""
    clean = torch.stack([pair.clean for pair in pairs])
    corrupted = torch.stack([pair.corrupted for pair in pairs])
    names = reference_hook_names(sharp_bridge.cfg.n_layers, SITES)
    with torch.inference_mode():
        _, cache = sharp_bridge.run_with_cache(clean, names_filter=names)
        return {
            site: sweep(sharp_bridge, corrupted, cache, lambda logits: logit_diff_metric(logits, pairs))
            for site, sweep in transformer_lens_sweeps().items()
        }


@pytest.mark.parametrize("site", SITES)
def test_sweep_equals_transformer_lens(sharp_bridge, pairs, transformer_lens_grids, site: str) -> None:  # type: ignore[no-untyped-def]
    result = prepare_patching(sharp_bridge, pairs, sites=(site,)).sweep(site)
    expected = transformer_lens_grids[site]
    assert result.metric.shape == expected.shape
    # The metric moves by tenths of a logit across the grid on these models: 1e-5 is a strict bar.
    assert float(expected.max() - expected.min()) > 0.1
    torch.testing.assert_close(result.metric, expected, atol=1e-5, rtol=0)
    expected_recovery = (expected - result.corrupted_metric) / (result.clean_metric - result.corrupted_metric)
    torch.testing.assert_close(result.recovery, expected_recovery, atol=1e-4, rtol=0)


def test_grouped_query_values_are_patched_per_key_value_head(sharp_bridge, pairs) -> None:  # type: ignore[no-untyped-def]
    forward = resumable_forward(sharp_bridge.original_model)
    result = patch_sweep(sharp_bridge, pairs, "v")
    if forward.n_kv_heads == forward.n_heads:
        assert result.labels == tuple(f"H{h}" for h in range(forward.n_heads))
    else:
        assert result.recovery.shape == (forward.n_layers, forward.n_kv_heads)
        assert result.labels == tuple(f"KV{g}" for g in range(forward.n_kv_heads))


# -- heads patched together ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def head_runs(sharp_bridge, pairs):  # type: ignore[no-untyped-def]
    return prepare_patching(sharp_bridge, pairs, sites=HEAD_SITES)


@pytest.fixture(scope="module")
def head_sweeps(head_runs):  # type: ignore[no-untyped-def]
    return {site: head_runs.sweep(site) for site in HEAD_SITES}


def _transformer_lens_heads_together(bridge, pairs, site: str, heads) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The metric of one corrupted run whose heads' `site` activations TransformerLens hooks set to the clean ones."""
    clean = torch.stack([pair.clean for pair in pairs])
    corrupted = torch.stack([pair.corrupted for pair in pairs])
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    names = {layer: hook_name(site, layer) for layer in by_layer}
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(clean, names_filter=list(names.values()))

        def patch(activation: torch.Tensor, hook, *, layer: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
            # Bound per layer: the bridge reports hook aliases (hook_z) under their canonical names.
            for head in by_layer[layer]:
                # z and v: [pair pos head d_head]; pattern: [pair head query key].
                index = (slice(None), head) if site == "pattern" else (slice(None), slice(None), head)
                activation[index] = cache[names[layer]][index]
            return activation

        hooks = [(names[layer], functools.partial(patch, layer=layer)) for layer in sorted(names)]
        return logit_diff_metric(bridge.run_with_hooks(corrupted, fwd_hooks=hooks), pairs)


def _heads(runs, site: str):  # type: ignore[no-untyped-def]
    """Up to six (layer, head) pairs, repeats allowed; key/value heads for "v"."""
    columns = runs.forward.n_kv_heads if site == "v" else runs.forward.n_heads
    head = st.tuples(st.integers(0, runs.forward.n_layers - 1), st.integers(0, columns - 1))
    return st.lists(head, min_size=1, max_size=6)


@pytest.mark.parametrize("site", HEAD_SITES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_heads_patched_together_equal_transformer_lens_hooks(head_runs, site: str, data) -> None:  # type: ignore[no-untyped-def]
    """One resumed run equals one corrupted run with every head's hook on, later heads reading earlier patches."""
    heads = data.draw(_heads(head_runs, site))
    expected = _transformer_lens_heads_together(head_runs.bridge, head_runs.pairs, site, heads)
    with torch.inference_mode():
        ours = patched_heads_metric(
            head_runs.forward, source=head_runs.clean, target=head_runs.corrupted, site=site, heads=heads,
            readout=head_runs.readout,
        ).mean()  # fmt: skip
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)  # float32 rounding on metrics of ~1.5
    expected_recovery = (expected - head_runs.corrupted_metric) / (head_runs.clean_metric - head_runs.corrupted_metric)
    assert head_runs.patch_heads_together(site, heads) == pytest.approx(float(expected_recovery), abs=1e-4)


@pytest.mark.parametrize("site", HEAD_SITES)
def test_heads_in_several_layers_together_are_not_the_sum_of_their_cells(head_runs, head_sweeps, site: str) -> None:  # type: ignore[no-untyped-def]
    """On these models the heads interact, so the oracle above tells one run from a sum of single patches."""
    sweep = head_sweeps[site]
    heads = [(layer, column) for layer in range(sweep.metric.shape[0]) for column in range(sweep.metric.shape[1])]
    together = float(_transformer_lens_heads_together(head_runs.bridge, head_runs.pairs, site, heads))
    summed = head_runs.corrupted_metric + float((sweep.metric - head_runs.corrupted_metric).sum())
    assert abs(together - summed) > 0.01
    assert head_runs.patch_heads_together(site, heads) == pytest.approx(
        (together - head_runs.corrupted_metric) / (head_runs.clean_metric - head_runs.corrupted_metric), abs=1e-4
    )


@pytest.mark.parametrize("site", HEAD_SITES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_one_head_patched_together_is_its_sweep_cell(head_runs, head_sweeps, site: str, data) -> None:  # type: ignore[no-untyped-def]
    """A set of one head is that head's cell of the sweep, though the sweep starts from the cached z."""
    ((layer, head),) = data.draw(_heads(head_runs, site).map(lambda heads: heads[:1]))
    together = head_runs.patch_heads_together(site, [(layer, head)])
    assert together == pytest.approx(head_sweeps[site].at(layer, head), abs=1e-4)


# -- invariants ---------------------------------------------------------------------------------

pair_days = st.lists(
    st.tuples(*(st.sampled_from(DAYS),) * 4).filter(lambda d: d[0] != d[1] and d[2] != d[3]), min_size=1, max_size=3
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(days=pair_days, site=st.sampled_from(SITES))
def test_patching_a_run_into_itself_recovers_exactly_one_or_zero(sharp_bridge, days, site: str) -> None:  # type: ignore[no-untyped-def]
    """Clean activations patched into the clean run give the clean metric (recovery 1) in every cell, and
    for heads patched together; corrupted into corrupted give the corrupted metric (recovery 0)."""
    runs = prepare_patching(sharp_bridge, _pairs(sharp_bridge, days), min_gap=0.0)
    # Mirrored pairs ((Tue→Mon), (Mon→Tue)) can make the two means equal: recovery is then 0/0.
    assume(runs.clean_metric != runs.corrupted_metric)
    every_layer = [(layer, 0) for layer in range(runs.forward.n_layers)]
    for source, expected in ((runs.clean, 1.0), (runs.corrupted, 0.0)):
        grid = patched_metric_grid(runs.forward, source=source, target=source, site=site, readout=runs.readout)
        grid = grid.mean(-1)  # [layer column pair] -> the metric, [layer column]
        if site in HEAD_SITES:
            together = patched_heads_metric(
                runs.forward, source=source, target=source, site=site, heads=every_layer, readout=runs.readout
            )
            grid = torch.cat([grid.flatten(), together.mean()[None]])
        cells = recovery(grid.cpu(), clean=runs.clean_metric, corrupted=runs.corrupted_metric, min_gap=0.0)
        assert torch.equal(cells, torch.full_like(cells, expected))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(days=pair_days)
def test_patching_the_whole_difference_recovers_the_clean_run_and_earlier_positions_nothing(sharp_bridge, days) -> None:  # type: ignore[no-untyped-def]
    """The prompts differ in one token, so its clean embedding (resid_pre of block 0) *is* the clean run."""
    runs = prepare_patching(sharp_bridge, _pairs(sharp_bridge, days), sites=("resid_pre",), min_gap=0.0)
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


def test_heads_together_name_what_the_model_lacks(tiny_llama_bridge) -> None:  # type: ignore[no-untyped-def]
    runs = prepare_patching(tiny_llama_bridge, _pairs(tiny_llama_bridge, STUDY), sites=("v", "resid_pre"), min_gap=0.0)
    with pytest.raises(PatchingError) as error:
        runs.patch_heads_together("v", [(0, 1), (1, 2), (2, 0)])
    assert str(error.value) == (
        "v: the model has no L1KV2, L2KV0: it has layers 0..1 and 2 key/value heads (0..1) per layer"
    )
    with pytest.raises(PatchingError, match=r"^heads are patched at z, v or pattern, not 'resid_pre'$"):
        runs.patch_heads_together("resid_pre", [(0, 0)])
    with pytest.raises(PatchingError, match=r"^site 'z' was not prepared; these runs cached \('v', 'resid_pre'\)$"):
        runs.patch_heads_together("z", [(0, 0)])


def test_token_tensors_of_different_lengths_are_refused() -> None:
    with pytest.raises(PatchingError, match=r"clean has 3 \[1, 2, 3\], corrupted has 2 \[1, 2\]"):
        PatchingPair(
            clean=torch.tensor([1, 2, 3]), corrupted=torch.tensor([1, 2]), answer_ids=(4,), distractor_ids=(5,)
        )


def test_pairs_of_different_lengths_are_refused(tiny_llama_bridge) -> None:  # type: ignore[no-untyped-def]
    short = make_pair(
        tiny_llama_bridge, clean=" it is Sunday", corrupted=" it is Monday", answer=" Monday", distractor=" Tuesday"
    )
    long = _pairs(tiny_llama_bridge, STUDY)[0]
    with pytest.raises(
        PatchingError, match=r"all pairs. prompts must have the same number of tokens.*lengths per pair \[4, 9\]"
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
