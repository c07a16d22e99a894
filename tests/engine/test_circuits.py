"""Ablations and circuit evaluation: equal to TransformerLens runs with hooks, exact invariants, and errors.

The oracle is one plain `bridge.run_with_hooks` per configuration, with hooks on
`blocks.L.attn.hook_z`, `hook_attn_out`, `hook_mlp_out` and `hook_resid_pre` that overwrite the
replaced activations with values TransformerLens itself cached (the corrupted run, the mean of the
reference run, zeros, or the clean run), scored by `logit_diff_metric` pair by pair. The models are
the sharp three-layer ones of tests/_sharp_models.py (GPT-2, Llama with grouped-query attention,
Gemma 3 with a sliding window), on which switching a head off moves the metric by tenths of a logit.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqprobe.engine.circuits import CircuitRuns
from seqprobe.engine.metric import readout_rows
from seqprobe.engine.patching import PatchingPair, logit_diff_metric, make_pair
from seqprobe.errors import CircuitError
from seqprobe.vocabulary.circuits import (
    ABLATION_METHODS,
    COMPONENT_KINDS,
    COMPONENT_SITES,
    DIRECTIONS,
    SCOPES,
    Component,
)
from seqprobe.vocabulary.sites import hook_name

TEMPLATE = " Today it is {}, tomorrow it is"
STUDY = [("Sunday", "Tuesday", " Monday", " Wednesday"), ("Friday", "Thursday", " Saturday", " Friday")]
# Answers and distractors of one to three tokens: the continuation readout.
MULTI = [
    ("Sunday", "Tuesday", " Monday Tuesday", " Wednesday"),
    ("Friday", "Thursday", " Saturday", " Friday Saturday Sunday"),
]
REFERENCE_DAYS = ("Monday", "Wednesday", "Saturday")
# Where a configuration's replaced value comes from, in the oracle.
OFF, CLEAN = "off", "clean"
SLOW = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _pairs(bridge, rows) -> list[PatchingPair]:  # type: ignore[no-untyped-def]
    return [
        make_pair(bridge, clean=TEMPLATE.format(c), corrupted=TEMPLATE.format(r), answer=a, distractor=d)
        for c, r, a, d in rows
    ]


def _reference(bridge) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    return [_pairs(bridge, [(day, day, " Monday", " Monday")])[0].clean for day in REFERENCE_DAYS]


@pytest.fixture(scope="module")
def circuit_runs(sharp_bridge):  # type: ignore[no-untyped-def]
    """CircuitRuns per (rows, method, scope), built once per architecture."""

    @functools.cache
    def build(rows: str, method: str, scope: str = "heads", max_memory: int | None = None) -> CircuitRuns:
        pairs = _pairs(sharp_bridge, STUDY if rows == "study" else MULTI)
        reference = _reference(sharp_bridge) if method == "mean" else None
        return CircuitRuns(sharp_bridge, pairs, method=method, scope=scope, reference=reference, max_memory=max_memory)

    return build


# -- the oracle -------------------------------------------------------------------------------------


@functools.cache
def _transformer_lens_values(
    runs: CircuitRuns, reference: tuple[torch.Tensor, ...] | None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """TransformerLens's own clean activations and the method's values, at every hook a component has.

    Resample: the corrupted rows' cache; mean: the reference cache's mean over its rows (the days'
    prompts, `_reference`, unless given); zero: zeros.
    """
    bridge, pairs = runs.bridge, runs.pairs
    names = [hook_name(site, layer) for layer in range(runs.forward.n_layers) for site in COMPONENT_SITES.values()]
    with torch.inference_mode():

        def cached(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
            # Read by name: the bridge may list an alias such as hook_z under its canonical name.
            _, cache = bridge.run_with_cache(tokens, names_filter=names)
            return {name: cache[name] for name in names}

        clean = cached(readout_rows(pairs, runs.readout, [p.clean for p in pairs]))
        if runs.method == "resample":
            off = cached(readout_rows(pairs, runs.readout, [p.corrupted for p in pairs]))
        elif runs.method == "mean":
            means = cached(torch.stack(list(reference or _reference(bridge))))
            off = {name: value.mean(0, keepdim=True) for name, value in means.items()}
        else:
            off = {name: torch.zeros_like(value[:1]) for name, value in clean.items()}
    return clean, off


def _hooked_metric(
    runs: CircuitRuns,
    config: Mapping[Component, str],
    *,
    at: int | None = None,
    off_at: bool = True,
    reference: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Each pair's metric of the clean rows run by TransformerLens with `config`'s activations overwritten.

    OFF takes the method's value (`_transformer_lens_values`; a mean only at the prompt's
    positions), CLEAN the clean rows' own; `at` restricts OFF (`off_at`) or CLEAN to one position.
    """
    clean_cache, off = _transformer_lens_values(runs, None if reference is None else tuple(reference))
    one = slice(None) if at is None else slice(at, at + 1)
    off_positions, clean_positions = (one, slice(None)) if off_at else (slice(None), one)
    if runs.method == "mean":
        off_positions = slice(*off_positions.indices(runs.n_prompt)[:2])
    with torch.inference_mode():
        by_hook: dict[str, list[tuple[Component, torch.Tensor, slice]]] = {}
        for component, role in config.items():
            name = hook_name(component.site, component.layer)
            value, positions = (off[name], off_positions) if role == OFF else (clean_cache[name], clean_positions)
            by_hook.setdefault(name, []).append((component, value, positions))

        def overwrite(activation: torch.Tensor, hook, *, name: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
            for component, value, positions in by_hook[name]:
                # z: [row pos head d_head], the others [row pos d_model]
                index = (slice(None), positions) + ((component.head,) if component.kind == "head" else ())
                activation[index] = value[index].expand_as(activation[index])
            return activation

        hooks = [(name, functools.partial(overwrite, name=name)) for name in by_hook]
        clean = readout_rows(runs.pairs, runs.readout, [p.clean for p in runs.pairs])
        logits = runs.bridge.run_with_hooks(clean, fwd_hooks=hooks)
    per_pair = logits.shape[0] // len(runs.pairs)
    return torch.stack(
        [logit_diff_metric(logits[i * per_pair : (i + 1) * per_pair], [p]) for i, p in enumerate(runs.pairs)]
    )


# -- strategies -------------------------------------------------------------------------------------


def _components(runs: CircuitRuns, kinds: Sequence[str]) -> st.SearchStrategy[Component]:
    layer = st.integers(0, runs.forward.n_layers - 1)
    head = st.builds(Component, layer, st.just("head"), st.integers(0, runs.forward.n_heads - 1))
    block = st.builds(Component, layer, st.sampled_from([k for k in kinds if k != "head"]))
    return st.one_of(head, block) if len(kinds) > 1 else head


def _sets(
    runs: CircuitRuns, kinds: Sequence[str], *, max_size: int = 5
) -> st.SearchStrategy[list[frozenset[Component]]]:
    return st.lists(st.frozensets(_components(runs, kinds), min_size=1, max_size=max_size), min_size=1, max_size=3)


# -- equality with TransformerLens hooks --------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("method", ABLATION_METHODS)
@SLOW
@given(data=st.data())
def test_ablations_equal_transformer_lens_hooks(circuit_runs, method: str, direction: str, data) -> None:  # type: ignore[no-untyped-def]
    """Noising or denoising sets of heads, attn, mlp and resid components, everywhere or at one position."""
    runs = circuit_runs("study", method)
    kinds = [k for k in COMPONENT_KINDS if not (method == "zero" and direction == "noising" and k == "resid")]
    configs = data.draw(_sets(runs, kinds))
    at = data.draw(st.none() | st.integers(0, runs.n_prompt - 1))
    ours = runs.ablated(configs, direction=direction, at=at)
    assert ours.shape == (len(configs), len(runs.pairs))
    for config, row in zip(configs, ours, strict=True):
        if direction == "noising":
            expected = _hooked_metric(runs, dict.fromkeys(config, OFF), at=at)
        else:
            replaced = {**dict.fromkeys(runs.components, OFF), **dict.fromkeys(config, CLEAN)}
            expected = _hooked_metric(runs, replaced, at=at, off_at=False)
        torch.testing.assert_close(row, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("scope", list(SCOPES))
@pytest.mark.parametrize("method", ABLATION_METHODS)
@SLOW
@given(data=st.data())
def test_circuits_equal_transformer_lens_hooks(circuit_runs, method: str, scope: str, data) -> None:  # type: ignore[no-untyped-def]
    """m(C): every scope component outside C switched off, C computing normally on what reaches it."""
    runs = circuit_runs("study", method, scope)
    circuits = data.draw(_sets(runs, sorted(SCOPES[scope]), max_size=8))
    ours = runs.evaluate(circuits)
    for circuit, row in zip(circuits, ours, strict=True):
        expected = _hooked_metric(runs, {c: OFF for c in runs.components if c not in circuit})
        torch.testing.assert_close(row, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        runs.empty_pairs, _hooked_metric(runs, dict.fromkeys(runs.components, OFF)), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
@pytest.mark.parametrize("method", ABLATION_METHODS)
@SLOW
@given(data=st.data(), direction=st.sampled_from(DIRECTIONS))
def test_multi_token_ablations_equal_transformer_lens_hooks(circuit_runs, method: str, direction: str, data) -> None:  # type: ignore[no-untyped-def]
    """Continuation rows: resample and zero switch components off at every position, mean at the prompt's only."""
    runs = circuit_runs("multi", method)
    assert runs.tokens.shape[1] > runs.n_prompt
    kinds = ["head", "attn", "mlp"]
    configs = data.draw(_sets(runs, kinds))
    ours = runs.ablated(configs, direction=direction)
    for config, row in zip(configs, ours, strict=True):
        if direction == "noising":
            expected = _hooked_metric(runs, dict.fromkeys(config, OFF))
        else:
            expected = _hooked_metric(runs, {**dict.fromkeys(runs.components, OFF), **dict.fromkeys(config, CLEAN)})
        torch.testing.assert_close(row, expected, atol=1e-4, rtol=0)


def test_switching_the_scope_off_moves_the_metric(circuit_runs) -> None:  # type: ignore[no-untyped-def]
    """The oracle tests above would pass on an engine that ignored every intervention, were m(∅) ≈ m(full)."""
    for method in ABLATION_METHODS:
        runs = circuit_runs("study", method)
        assert abs(runs.full_metric - runs.empty_metric) > 0.1
        torch.testing.assert_close(runs.full_pairs, _hooked_metric(runs, {}), atol=1e-4, rtol=0)


# -- invariants -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ABLATION_METHODS)
@SLOW
@given(at=st.none() | st.integers(0, 8))
def test_the_anchors_are_exact(circuit_runs, method: str, at: int | None) -> None:  # type: ignore[no-untyped-def]
    """Ablating nothing is the clean run, the full scope's faithfulness is 1, denoising nothing is the ∅ run (0)."""
    runs = circuit_runs("study", method)
    at = None if at is None else at % runs.n_prompt
    assert torch.equal(runs.ablated([[]], direction="noising", at=at)[0], runs.full_pairs)
    assert torch.equal(runs.ablated([[]], direction="denoising", at=at)[0], runs.empty_pairs)
    assert torch.equal(runs.evaluate([runs.components])[0], runs.full_pairs)
    assert runs.fraction(torch.tensor(runs.full_metric)) == 1.0
    assert runs.fraction(torch.tensor(runs.empty_metric)) == 0.0
    # Giving every scope component its clean value back is the clean run, up to float rounding.
    everything = runs.ablated([runs.components], direction="denoising")[0]
    torch.testing.assert_close(everything, runs.full_pairs, atol=1e-5, rtol=0)


@SLOW
@given(data=st.data())
def test_resampling_from_the_clean_prompt_changes_nothing(sharp_bridge, data) -> None:  # type: ignore[no-untyped-def]
    """When corrupted == clean, resample ablation writes the clean run's own activations: every run is the clean one."""
    same = [(c, c, a, d) for c, _, a, d in STUDY]
    runs = CircuitRuns(sharp_bridge, _pairs(sharp_bridge, same), method="resample", scope="heads_and_mlps")
    configs = data.draw(_sets(runs, ["head", "attn", "mlp", "resid"]))
    expected = runs.full_pairs.expand(len(configs), -1)
    torch.testing.assert_close(runs.ablated(configs, direction="noising"), expected, atol=1e-5, rtol=0)
    circuits = data.draw(_sets(runs, ["head", "mlp"]))
    torch.testing.assert_close(runs.evaluate(circuits), runs.full_pairs.expand(len(circuits), -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(runs.empty_pairs, runs.full_pairs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sharp_model_dir", ["gemma3"], indirect=True)
@SLOW
@given(data=st.data(), method=st.sampled_from(ABLATION_METHODS))
def test_batched_chunked_and_one_at_a_time_agree(circuit_runs, data, method: str) -> None:  # type: ignore[no-untyped-def]
    """A configuration's metric does not depend on what runs with it, nor on the chunks (one lane each here)."""
    runs = circuit_runs("study", method, "heads_and_mlps")
    tiny = circuit_runs("study", method, "heads_and_mlps", max_memory=1)
    circuits = data.draw(_sets(runs, ["head", "mlp"], max_size=10))
    batched = runs.evaluate(circuits)
    alone = torch.cat([runs.evaluate([circuit]) for circuit in circuits])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny.evaluate(circuits), batched, atol=1e-5, rtol=0)
    noised = runs.ablated(circuits, direction="noising", at=4)
    torch.testing.assert_close(tiny.ablated(circuits, direction="noising", at=4), noised, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_a_curve_is_the_nested_circuits(circuit_runs) -> None:  # type: ignore[no-untyped-def]
    runs = circuit_runs("study", "mean")
    ranking = list(reversed(runs.components))
    curve = runs.curve(ranking, max_k=5)
    assert curve.shape == (5, len(runs.pairs))
    torch.testing.assert_close(curve, runs.evaluate([ranking[:k] for k in range(1, 6)]), atol=1e-5, rtol=0)
    assert runs.curve(ranking[:2], max_k=5).shape == (2, len(runs.pairs))


# -- errors -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_runs(tiny_llama_bridge) -> CircuitRuns:  # type: ignore[no-untyped-def]
    return CircuitRuns(tiny_llama_bridge, _pairs(tiny_llama_bridge, STUDY), method="zero", scope="heads")


def test_bad_circuits_and_ablations_are_named(llama_runs) -> None:  # type: ignore[no-untyped-def]
    head = Component(0, "head", 1)
    with pytest.raises(CircuitError) as error:
        llama_runs.evaluate([[head], []])
    assert str(error.value) == (
        "circuit 1 is empty; a circuit names at least one component of the scope 'heads' (the run with the whole "
        "scope switched off is `empty_pairs`)"
    )
    with pytest.raises(CircuitError) as error:
        llama_runs.evaluate([[head, Component(5, "head", 0), Component(0, "head", 4), Component(2, "mlp")]])
    assert str(error.value) == ("the model has no L0H4, L2_mlp, L5H0: it has layers 0..1 and 4 heads (0..3) per layer")
    with pytest.raises(CircuitError) as error:
        llama_runs.evaluate([[head, Component(1, "mlp"), Component(0, "attn")]])
    assert str(error.value) == (
        "circuit 0 has L0_attn, L1_mlp outside the scope 'heads', which holds head components; a circuit is drawn "
        "from its scope (choose scope= one of ['heads', 'heads_and_mlps'] that holds them, or leave them out)"
    )
    with pytest.raises(CircuitError) as error:
        llama_runs.ablated([[head, Component(1, "resid")]], direction="noising")
    assert str(error.value) == (
        "zero ablation cannot switch off L1_resid: resid components take mean or resample ablation (zeroing the "
        "residual stream leaves the next norm nothing to scale); choose another method or leave them out"
    )
    # Denoising gives resid its clean value: nothing is zeroed.
    assert llama_runs.ablated([[Component(1, "resid")]], direction="denoising").shape == (1, 2)
    with pytest.raises(CircuitError, match=r"^at=9 is not a position of the prompts, which have 9 tokens \(0..8\)$"):
        llama_runs.ablated([[head]], direction="noising", at=9)
    with pytest.raises(CircuitError, match=r"^unknown direction 'forwards'; choose one of \['noising', 'denoising'\]$"):
        llama_runs.ablated([[head]], direction="forwards")
    with pytest.raises(
        CircuitError,
        match=r"^a curve needs max_k >= 1 and a ranking of at least one component, got max_k=0, 1 component\(s\)$",
    ):
        llama_runs.curve([head], max_k=0)


def test_bad_runs_are_named(tiny_llama_bridge) -> None:  # type: ignore[no-untyped-def]
    pairs = _pairs(tiny_llama_bridge, STUDY)
    reference = _reference(tiny_llama_bridge)
    with pytest.raises(
        CircuitError, match=r"^unknown method 'knockout'; choose one of \['resample', 'mean', 'zero'\]$"
    ):
        CircuitRuns(tiny_llama_bridge, pairs, method="knockout")
    with pytest.raises(CircuitError, match=r"^unknown scope 'mlps'; choose one of \['heads', 'heads_and_mlps'\]$"):
        CircuitRuns(tiny_llama_bridge, pairs, scope="mlps")
    with pytest.raises(CircuitError) as error:
        CircuitRuns(
            tiny_llama_bridge, pairs, method="mean", reference=[reference[0], reference[1][:-1], reference[2][:3]]
        )
    assert str(error.value) == (
        "mean ablation averages the reference prompts position by position, so each must be one row of the pairs' "
        "prompt length, 9 tokens: reference 1 has 8, reference 2 has 3; choose reference prompts that tokenize to 9 tokens"
    )
    with pytest.raises(CircuitError) as error:
        CircuitRuns(tiny_llama_bridge, pairs, method="mean")
    assert str(error.value) == (
        "mean ablation averages reference prompts position by position; pass reference= a list of token rows of the "
        "pairs' prompt length (9 tokens)"
    )
    with pytest.raises(
        CircuitError, match=r"^reference prompts are averaged by mean ablation only; method='zero' does not read them$"
    ):
        CircuitRuns(tiny_llama_bridge, pairs, method="zero", reference=reference)
    short = make_pair(
        tiny_llama_bridge, clean=" it is Sunday", corrupted=" it is Monday", answer=" Monday", distractor=" Tuesday"
    )
    with pytest.raises(
        CircuitError, match=r"same prompt length since they run as one batch: lengths per pair \[4, 9\]"
    ):
        CircuitRuns(tiny_llama_bridge, [short, pairs[0]])


def test_an_undefined_fraction_says_what_to_change(tiny_llama_bridge) -> None:  # type: ignore[no-untyped-def]
    same = [(c, c, a, d) for c, _, a, d in STUDY]
    runs = CircuitRuns(tiny_llama_bridge, _pairs(tiny_llama_bridge, same), method="resample")
    with pytest.raises(CircuitError) as error:
        runs.fraction(runs.full_pairs)
    metric = runs.full_metric
    assert str(error.value).startswith(
        f"the fraction is undefined: the clean run's metric {metric:.4f} and the ∅ run's (scope 'heads' switched off "
        f"by resample ablation) {runs.empty_metric:.4f} differ by 0.0000, less than min_gap=0.01"
    )


# -- the real model -------------------------------------------------------------------------------

IOI = "When {} and {} went to the store, {} gave a drink to"


@pytest.mark.real_model
def test_smollm2_circuit_equals_transformer_lens_hooks(real_model) -> None:  # type: ignore[no-untyped-def]
    """An IOI circuit of 10 heads in 10 layers on smollm2-135m, mean-ablating the other 260, against one hooked run."""
    bridge = real_model.bridge
    names = [("Mary", "John"), ("Alice", "Bob")]
    pairs = [
        make_pair(
            bridge, clean=IOI.format(a, b, b), corrupted=IOI.format(a, b, "Tom"), answer=f" {a}", distractor=f" {b}"
        )
        for a, b in names
    ]
    reference = [make_pair(bridge, clean=IOI.format(*abc), corrupted=IOI.format(*abc), answer=" x", distractor=" y").clean
                 for abc in [("Mary", "John", "Tom"), ("Sarah", "David", "Mike"), ("Emma", "James", "Lucy")]]  # fmt: skip
    runs = CircuitRuns(bridge, pairs, method="mean", reference=reference)
    circuit = [Component(layer, "head", layer % 9) for layer in range(0, 30, 3)]
    expected = _hooked_metric(runs, {c: OFF for c in runs.components if c not in circuit}, reference=reference)
    torch.testing.assert_close(runs.evaluate([circuit])[0], expected, atol=1e-4, rtol=0)
    assert runs.full_metric - runs.empty_metric > 1.0
