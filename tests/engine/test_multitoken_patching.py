"""Patching with answers and distractors of several tokens: the continuation's log-probability as the metric.

The oracles: plain transformers (each continuation's teacher-forced log-probability, one prompt at
a time, no padding) for the clean and corrupted metrics, and transformer_lens.patching's sweeps,
run on the same padded rows with the same metric, for every cell of every site.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqprobe.bench import reference_hook_names, transformer_lens_sweeps
from seqprobe.engine.metric import ContinuationReadout, NextTokenReadout, readout_rows
from seqprobe.engine.patching import PatchingPair, logit_diff_metric, make_pair, prepare_patching
from seqprobe.engine.resume import patched_heads_metric, patched_metric_grid
from seqprobe.errors import PatchingError
from seqprobe.vocabulary.sites import HEAD_SITES, POSITION_SITES, SITES

TEMPLATE = " Today it is {}, tomorrow it is"
# Answers and distractors of one, two and three tokens, mixed within and across pairs.
MULTI = [
    ("Sunday", "Tuesday", " Monday Tuesday", " Wednesday"),
    ("Friday", "Thursday", " Saturday", " Friday Saturday Sunday"),
]


def _pairs(bridge, rows) -> list[PatchingPair]:  # type: ignore[no-untyped-def]
    return [
        make_pair(bridge, clean=TEMPLATE.format(c), corrupted=TEMPLATE.format(r), answer=a, distractor=d)
        for c, r, a, d in rows
    ]


@pytest.fixture(scope="module")
def pairs(sharp_bridge) -> list[PatchingPair]:  # type: ignore[no-untyped-def]
    made = _pairs(sharp_bridge, MULTI)
    assert [len(p.answer_ids) for p in made] == [2, 1] and [len(p.distractor_ids) for p in made] == [1, 3]
    return made


@pytest.fixture(scope="module")
def runs(sharp_bridge, pairs):  # type: ignore[no-untyped-def]
    return prepare_patching(sharp_bridge, pairs, sites=SITES)


def _teacher_forced(model, prompt: torch.Tensor, continuation: tuple[int, ...]) -> float:  # type: ignore[no-untyped-def]
    """log p(continuation | prompt) by plain transformers: one unpadded forward, log_softmax, gather."""
    tokens = torch.cat([prompt, torch.tensor(continuation)])[None]
    logprobs = model(tokens).logits[0].float().log_softmax(-1)
    positions = torch.arange(prompt.numel() - 1, tokens.shape[1] - 1)
    return float(logprobs[positions, torch.tensor(continuation)].sum())


@torch.no_grad()
def test_clean_and_corrupted_metrics_equal_plain_transformers(sharp_bridge, pairs, runs) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(runs.readout, ContinuationReadout)
    model = sharp_bridge.original_model
    for side, per_pair in (("clean", runs.clean_pairs), ("corrupted", runs.corrupted_pairs)):
        expected = torch.tensor(
            [
                _teacher_forced(model, getattr(p, side), p.answer_ids)
                - _teacher_forced(model, getattr(p, side), p.distractor_ids)
                for p in pairs
            ]
        )
        torch.testing.assert_close(per_pair, expected, atol=1e-4, rtol=0)
    assert runs.clean_metric == pytest.approx(float(runs.clean_pairs.mean()))


@pytest.fixture(scope="module")
def transformer_lens_grids(sharp_bridge, pairs, runs) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    clean = readout_rows(pairs, runs.readout, [p.clean for p in pairs])
    corrupted = readout_rows(pairs, runs.readout, [p.corrupted for p in pairs])
    names = reference_hook_names(sharp_bridge.cfg.n_layers, SITES)
    with torch.inference_mode():
        _, cache = sharp_bridge.run_with_cache(clean, names_filter=names)
        return {
            site: sweep(sharp_bridge, corrupted, cache, lambda logits: logit_diff_metric(logits, pairs))
            for site, sweep in transformer_lens_sweeps().items()
        }


@pytest.mark.parametrize("site", SITES)
def test_multi_token_sweep_equals_transformer_lens(runs, transformer_lens_grids, site: str) -> None:  # type: ignore[no-untyped-def]
    """Position sweeps patch the prompt's positions: transformer_lens's grid over the whole rows, cut to the prompt."""
    result = runs.sweep(site)
    expected = transformer_lens_grids[site]
    if site in POSITION_SITES:
        n_prompt = runs.pairs[0].clean.numel()
        assert expected.shape[1] > n_prompt
        expected = expected[:, :n_prompt]
    assert float(expected.max() - expected.min()) > 0.1
    torch.testing.assert_close(result.metric, expected, atol=1e-4, rtol=0)
    assert result.pair_metric is not None
    torch.testing.assert_close(result.pair_metric.mean(-1), result.metric, atol=1e-6, rtol=0)


def test_heads_together_with_multi_token_answers_is_the_sweep_cell(runs) -> None:  # type: ignore[no-untyped-def]
    sweep = runs.sweep("z")
    assert runs.patch_heads_together("z", [(1, 2)]) == pytest.approx(sweep.at(1, 2), abs=1e-4)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(site=st.sampled_from(SITES), which=st.sampled_from(["clean", "corrupted"]))
def test_patching_a_multi_token_run_into_itself_changes_nothing(runs, site: str, which: str) -> None:  # type: ignore[no-untyped-def]
    run = getattr(runs, which)
    own = getattr(runs, f"{which}_pairs")
    with torch.inference_mode():
        grid = patched_metric_grid(runs.forward, source=run, target=run, site=site, readout=runs.readout)
        if site in HEAD_SITES:
            together = patched_heads_metric(
                runs.forward, source=run, target=run, site=site, heads=[(0, 0), (2, 0)], readout=runs.readout
            )
            torch.testing.assert_close(together.cpu(), own, atol=0, rtol=0)
    torch.testing.assert_close(grid.cpu(), own.expand_as(grid), atol=0, rtol=0)


@torch.no_grad()
def test_one_token_continuations_score_the_logit_difference(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    """For one-token answers the continuation readout and the next-token readout agree: the normalizer cancels."""
    one_token = _pairs(sharp_bridge, [("Sunday", "Tuesday", " Monday", " Wednesday")])
    runs = prepare_patching(sharp_bridge, one_token, sites=("resid_pre",))
    assert isinstance(runs.readout, NextTokenReadout)
    continuation = ContinuationReadout(
        targets=torch.tensor([[one_token[0].answer_id], [one_token[0].distractor_id]]),
        mask=torch.ones(2, 1, dtype=torch.bool),
        first=runs.readout.first,
    )
    rows = runs.clean.resid_final[[0, 0], runs.readout.first :]  # the same prompt for both rows
    torch.testing.assert_close(continuation.per_pair(runs.forward, rows), runs.clean_pairs, atol=1e-4, rtol=0)


def test_linear_views_refuse_multi_token_answers(runs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PatchingError, match=r"read one answer and one distractor logit.*multi-token answers"):
        runs.token_ids  # noqa: B018
    with pytest.raises(PatchingError, match=r"the answer is 2 tokens"):
        runs.pairs[0].answer_id  # noqa: B018


@pytest.mark.real_model
def test_smollm2_multi_token_resid_pre_equals_transformer_lens_on_sampled_layers(real_model) -> None:  # type: ignore[no-untyped-def]
    """ " Buenos Aires" against " Lima", clean Argentina / corrupted Peru: two layers of the grid, to 1e-4."""
    import pandas as pd
    import transformer_lens.patching as tl_patching

    bridge = real_model.bridge
    pairs = [
        make_pair(bridge, clean=f"The capital of {c} is", corrupted=f"The capital of {r} is", answer=a, distractor=d)
        for c, r, a, d in [
            ("Argentina", "Peru", " Buenos Aires", " Lima"),
            ("Peru", "Argentina", " Lima", " Buenos Aires"),
        ]
    ]
    assert max(len(p.answer_ids) for p in pairs) > 1
    runs = prepare_patching(bridge, pairs, sites=("resid_pre",))
    result = runs.sweep("resid_pre")
    clean = readout_rows(pairs, runs.readout, [p.clean for p in pairs])
    corrupted = readout_rows(pairs, runs.readout, [p.corrupted for p in pairs])
    n_prompt = pairs[0].clean.numel()
    layers = [bridge.cfg.n_layers // 2, bridge.cfg.n_layers - 1]
    cells = pd.DataFrame([(layer, pos) for layer in layers for pos in range(n_prompt)], columns=["layer", "pos"])
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(clean, names_filter=lambda name: name.endswith("hook_resid_pre"))
        expected = tl_patching.generic_activation_patch(
            bridge, corrupted, cache, lambda out: logit_diff_metric(out, pairs),
            patch_setter=tl_patching.layer_pos_patch_setter, activation_name="resid_pre", index_df=cells,
        )  # fmt: skip
    torch.testing.assert_close(result.metric[layers].flatten(), expected.cpu(), atol=1e-4, rtol=0)
    assert result.clean_metric - result.corrupted_metric > 1.0
