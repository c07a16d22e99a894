"""Attribution patching, direct logit attribution and the logit lens, against transformer_lens."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from seqprobe.bench import reference_hook_names
from seqprobe.engine.attribution import (
    DLA_NEEDS,
    LENS_NEEDS,
    agreement,
    attribution_patching,
    direct_logit_attribution,
    logit_lens,
)
from seqprobe.engine.patching import PatchingPair, PatchingRuns, logit_diff_metric, make_pair, prepare_patching
from seqprobe.errors import PatchingError
from seqprobe.vocabulary.sites import POSITION_SITES, SITES

TEMPLATE = " Today it is {}, tomorrow it is"
STUDY = [("Sunday", "Tuesday", "Monday", "Wednesday"), ("Friday", "Thursday", "Saturday", "Friday")]


def _pairs(bridge) -> list[PatchingPair]:  # type: ignore[no-untyped-def]
    return [
        make_pair(bridge, clean=TEMPLATE.format(c), corrupted=TEMPLATE.format(r), answer=f" {a}", distractor=f" {d}")
        for c, r, a, d in STUDY
    ]


def test_attribution_equals_transformer_lens_gradient_cache(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    """Each estimate is (clean − corrupted) · ∂metric/∂activation, summed over what the cell patches,
    with the gradients transformer_lens's own attribution patching captures."""
    from transformer_lens.tools.analysis.attribution_patching import cache_activation_and_gradient

    bridge = sharp_bridge
    pairs = _pairs(bridge)
    runs = prepare_patching(bridge, pairs)
    estimates = attribution_patching(runs)
    hooks = reference_hook_names(bridge.cfg.n_layers, SITES)
    clean = torch.stack([pair.clean for pair in pairs])
    corrupted = torch.stack([pair.corrupted for pair in pairs])
    with torch.enable_grad():
        source = cache_activation_and_gradient(
            bridge, clean, lambda out: logit_diff_metric(out, pairs), hooks, compute_gradient=False
        )
        target = cache_activation_and_gradient(bridge, corrupted, lambda out: logit_diff_metric(out, pairs), hooks)
    # Which axes one cell sums over, in the bridge's layouts.
    summed = {"z": (0, 1, 3), "v": (0, 1, 3), "pattern": (0, 2, 3)} | dict.fromkeys(POSITION_SITES, (0, 2))
    for site in SITES:
        grid = []
        for layer in range(bridge.cfg.n_layers):
            hook = hooks[SITES.index(site) * bridge.cfg.n_layers + layer]
            effect = (source.activations[hook] - target.activations[hook]) * target.gradients[hook]
            grid.append(effect.sum(dim=summed[site]))
        expected = runs.corrupted_metric + torch.stack(grid)
        assert estimates[site].method == "attribution"
        torch.testing.assert_close(estimates[site].metric, expected, atol=1e-4, rtol=1e-4)


def test_attribution_agrees_with_exact_patching_on_a_near_linear_model(tiny_bridge) -> None:  # type: ignore[no-untyped-def]
    """The default-init tiny models are close to linear, where the first-order estimate is close to exact
    — except for swapping the substituted token's embedding (resid_pre), a jump too large for it."""
    runs = prepare_patching(tiny_bridge, _pairs(tiny_bridge), min_gap=1e-4)
    estimates = attribution_patching(runs)
    for site in SITES:
        exact = runs.sweep(site)
        figures = agreement(exact, estimates[site], k=3)
        assert figures.site == site and figures.k == 3
        assert -1.0 <= figures.correlation <= 1.0 and 0.0 <= figures.top_k_overlap <= 1.0
        if site != "resid_pre":
            assert figures.correlation > 0.95, figures
            assert figures.top_k_overlap == 1.0, figures
        if site in POSITION_SITES:
            # Before the substituted token clean and corrupted agree: both methods give exactly 0.
            before = slice(None, exact.column("substituted"))
            assert torch.equal(estimates[site].recovery[:, before], exact.recovery[:, before])


def test_agreement_refuses_grids_of_different_sites(tiny_llama_bridge) -> None:  # type: ignore[no-untyped-def]
    runs = prepare_patching(tiny_llama_bridge, _pairs(tiny_llama_bridge), min_gap=1e-4)
    with pytest.raises(
        PatchingError, match=r"agreement compares one site's two grids: got 'z' \(2, 4\) and 'v' \(2, 2\)"
    ):
        agreement(runs.sweep("z"), runs.sweep("v"))


def _view_runs(bridge) -> PatchingRuns:  # type: ignore[no-untyped-def]
    """Runs for DLA and the lens, each clean prompt's answer scored against that prompt's own day."""
    own_days = [bridge.to_single_token(f" {c}") for c, *_ in STUDY]
    pairs = [replace(pair, distractor_ids=(day,)) for pair, day in zip(_pairs(bridge), own_days, strict=True)]
    return prepare_patching(bridge, pairs, sites=("resid_pre",), keep_clean=DLA_NEEDS | LENS_NEEDS)


def _tokens_and_directions(model, runs: PatchingRuns) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    """The clean prompts, and each one's answer − distractor unembedding direction times the final norm's weight."""
    norm = model.transformer.ln_f if model.config.model_type == "gpt2" else model.model.norm
    unembed = model.get_output_embeddings().weight.detach()
    answers = [pair.answer_id for pair in runs.pairs]
    distractors = [pair.distractor_id for pair in runs.pairs]
    return torch.stack([pair.clean for pair in runs.pairs]), norm.weight.detach() * (
        unembed[answers] - unembed[distractors]
    )


def test_direct_attributions_add_up_to_the_logit_difference(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    dla = direct_logit_attribution(_view_runs(sharp_bridge))
    n_layers = sharp_bridge.cfg.n_layers
    assert dla.labels[:3] == ("embed", "L0_attn", "L0_mlp") and len(dla.labels) == 1 + 2 * n_layers
    assert dla.by_head.shape == (n_layers, sharp_bridge.cfg.n_heads)
    assert abs(dla.residual - dla.constant) < 1e-4


def test_head_attributions_add_up_to_their_blocks_attention_and_its_bias(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    """A block's attention write is its heads' writes plus the output projection's bias, which no head
    writes: GPT-2's c_proj has one (its share measured with transformer_lens), Llama's and Gemma's none."""
    runs = _view_runs(sharp_bridge)
    dla = direct_logit_attribution(runs)
    model = sharp_bridge.original_model
    bias_share = torch.zeros(sharp_bridge.cfg.n_layers)
    if model.config.model_type == "gpt2":
        tokens, directions = _tokens_and_directions(model, runs)
        biases = torch.stack([block.attn.c_proj.bias.detach() for block in model.transformer.h])  # [layer d_model]
        with torch.no_grad():
            _, cache = sharp_bridge.run_with_cache(tokens)
            stack = biases[:, None].expand(-1, len(tokens), -1)  # [layer batch d_model]
            scaled = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
        bias_share = (scaled * directions).sum(-1).mean(-1)  # [layer]
        assert float(bias_share.abs().max()) > 0.01
    torch.testing.assert_close(dla.by_head.sum(1) + bias_share, dla.by_component[1::2], atol=1e-4, rtol=1e-4)


def test_direct_attribution_matches_apply_ln_to_stack(tiny_bridge) -> None:  # type: ignore[no-untyped-def]
    """Per-component DLA through the cached final-norm scale, as transformer_lens computes it."""
    runs = _view_runs(tiny_bridge)
    dla = direct_logit_attribution(runs)
    tokens, directions = _tokens_and_directions(tiny_bridge.original_model, runs)  # directions: [batch d_model]
    _, cache = tiny_bridge.run_with_cache(tokens)
    stack, labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)  # [component batch d_model]
    scaled = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
    expected = (scaled * directions).sum(-1).mean(-1)  # [component]
    ours = dla.by_component if "pos_embed" not in labels else _with_pos_embed_split(dla, expected)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


def _with_pos_embed_split(dla, expected: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """transformer_lens lists GPT-2's token and position embeddings apart; seqprobe's "embed" is their sum."""
    assert dla.by_component[0] == pytest.approx(float(expected[0] + expected[1]), abs=1e-5)
    return torch.cat([expected[:2], dla.by_component[1:]])


def test_the_studys_dla_gap_is_the_folded_final_layernorm_bias(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The study's recipe (fold_ln, apply_ln_to_stack, tokens_to_residual_directions, / len(prompts))
    misses the real logit difference by the mean of b_U[answer] − b_U[distractor] and nothing else."""
    from transformer_lens.model_bridge import TransformerBridge

    from tests._tiny_models import build_tiny_gpt2

    model = build_tiny_gpt2(tmp_path)
    with torch.no_grad():
        model.transformer.ln_f.bias.copy_(torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(1)))
    model.save_pretrained(tmp_path)
    bridge = TransformerBridge.boot_transformers(str(tmp_path), device="cpu")
    runs = _view_runs(bridge)
    dla = direct_logit_attribution(runs)
    answers = [pair.answer_id for pair in runs.pairs]
    distractors = [pair.distractor_id for pair in runs.pairs]
    unembed = model.lm_head.weight.detach()
    bias_term = float(((unembed[answers] - unembed[distractors]) @ model.transformer.ln_f.bias.detach()).mean())
    assert abs(dla.constant - bias_term) < 1e-5 and abs(bias_term) > 0.01
    assert abs(dla.residual - bias_term) < 1e-5

    bridge.enable_compatibility_mode(disable_warnings=True)  # fold_ln, centre weights and unembedding, as the study
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(torch.stack([pair.clean for pair in runs.pairs]))
        real = float(logit_diff_metric(logits, runs.pairs))
        final = cache.apply_ln_to_stack(cache["resid_post", -1][:, -1], layer=-1, pos_slice=-1)
        to_direction = bridge.tokens_to_residual_directions
        directions = to_direction(torch.tensor(answers)) - to_direction(torch.tensor(distractors))
        studys = float((final * directions).sum() / len(runs.pairs))
        b_u = bridge.unembed.b_U
        folded_bias = float((b_u[answers] - b_u[distractors]).mean())
    assert real - studys == pytest.approx(folded_bias, abs=1e-5)
    assert folded_bias == pytest.approx(bias_term, abs=1e-5)


def test_logit_lens_ends_at_the_models_logit_difference(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    runs = _view_runs(sharp_bridge)
    lens = logit_lens(runs)
    assert lens.logit_diff.shape == (sharp_bridge.cfg.n_layers + 1,)
    assert float(lens.logit_diff[-1]) == pytest.approx(direct_logit_attribution(runs).logit_diff, abs=1e-5)
    top = float(lens.logit_diff.max())
    assert lens.first_layer_reaching(top) == int(lens.logit_diff.argmax())
    assert lens.first_layer_reaching(top + 1.0) is None


def test_the_views_read_the_cached_clean_run_and_say_what_it_lacks(tiny_llama_bridge) -> None:  # type: ignore[no-untyped-def]
    """DLA and the lens run nothing: without what they read cached, they say how to prepare the runs."""
    runs = prepare_patching(tiny_llama_bridge, _pairs(tiny_llama_bridge), sites=("resid_pre",))
    lens = logit_lens(runs)  # resid_pre is what the resid_pre sweep caches from the clean run
    assert float(lens.logit_diff[-1]) == pytest.approx(runs.clean_metric, abs=1e-5)
    with pytest.raises(PatchingError) as error:
        direct_logit_attribution(runs)
    assert str(error.value) == (
        "direct_logit_attribution reads the cached clean run's attn_out, mlp_out, resid_pre, z, but these runs did "
        "not keep attn_out, mlp_out, z; prepare them with prepare_patching(..., keep_clean=['attn_out', 'mlp_out', "
        "'resid_pre', 'z'])"
    )
