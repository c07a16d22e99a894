"""Direct path patching: equal to transformer_lens's `get_act_patch_direct_path` and to hooked reruns.

On the three-layer sharp models (Llama with grouped-query attention, GPT-2, Gemma 3). transformer_lens
computes the q, k and v receivers on GPT-2 and the q receivers on Llama; it refuses k and v on
grouped-query models and every receiver on Gemma 3 (its post-attention norm acts on the heads' sum,
so a head's write is not z @ W_O). There the oracle is a plain rerun of TransformerBridge with
hooks: the senders' write D measured from the bridge's own `hook_attn_out`, added to the receiver's
`hook_{q,k,v}_input` fork (one per key/value head for k and v on grouped-query models). Where
transformer_lens runs, the hooked rerun is checked against it too.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqprobe.engine.forward import Run
from seqprobe.engine.metric import run_metric
from seqprobe.engine.patching import PatchingPair, logit_diff_metric, make_pair, prepare_patching
from seqprobe.engine.path_logits import path_logits_grid, path_logits_metric
from seqprobe.engine.path_patching import path_heads_metric, path_metric_grid, path_writes
from seqprobe.errors import PatchingError
from seqprobe.vocabulary.circuits import PATH_INPUTS

TEMPLATE = " Today it is {}, tomorrow it is"
STUDY = [("Sunday", "Tuesday", "Monday", "Wednesday"), ("Friday", "Thursday", "Saturday", "Friday")]
SENDER = (0, 1)
settings.register_profile("paths", max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def runs(sharp_bridge):  # type: ignore[no-untyped-def]
    pairs = [
        make_pair(
            sharp_bridge, clean=TEMPLATE.format(c), corrupted=TEMPLATE.format(r), answer=f" {a}", distractor=f" {d}"
        )
        for c, r, a, d in STUDY
    ]
    return prepare_patching(sharp_bridge, pairs, sites=(), paths=True)


def _tokens(pairs: Sequence[PatchingPair]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([pair.clean for pair in pairs]), torch.stack([pair.corrupted for pair in pairs])


# -- the oracles ----------------------------------------------------------------------------------


def _bridge_writes(bridge, pairs, senders) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """D from the bridge alone: per sender layer, hook_attn_out with the senders' clean hook_z minus the corrupted one."""
    clean, corrupted = _tokens(pairs)
    layers = sorted({layer for layer, _ in senders})
    z_names = [f"blocks.{layer}.attn.hook_z" for layer in layers]
    out_names = [f"blocks.{layer}.hook_attn_out" for layer in layers]
    _, clean_cache = bridge.run_with_cache(clean, names_filter=z_names)
    _, corrupted_cache = bridge.run_with_cache(corrupted, names_filter=out_names)
    total = torch.zeros_like(corrupted_cache[out_names[0]])
    for layer, z_name, out_name in zip(layers, z_names, out_names, strict=True):
        heads = [head for sender_layer, head in senders if sender_layer == layer]

        def patch(z: torch.Tensor, hook, *, heads=heads, z_name=z_name) -> torch.Tensor:  # type: ignore[no-untyped-def]
            z[:, :, heads] = clean_cache[z_name][:, :, heads]
            return z

        with bridge.hooks(fwd_hooks=[(z_name, patch)]):
            _, patched = bridge.run_with_cache(corrupted, names_filter=[out_name])
        total += patched[out_name] - corrupted_cache[out_name]
    return total


def _hooked_paths(bridge, pairs, writes, input: str, receivers) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The corrupted run with `writes` added to each receiver's own `input` fork (key/value heads for k, v)."""
    _, corrupted = _tokens(pairs)

    def add(fork: torch.Tensor, hook, *, columns: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
        fork = fork.clone()  # [pair pos head d_model], one copy of the stream per (key/value) head
        fork[:, :, columns] += writes[:, :, None]
        return fork

    by_layer: dict[int, list[int]] = {}
    for layer, column in receivers:
        by_layer.setdefault(layer, []).append(column)
    hooks = [
        (f"blocks.{layer}.attn.hook_{input}_input", functools.partial(add, columns=columns))
        for layer, columns in by_layer.items()
    ]
    bridge.set_use_split_qkv_input(True)
    try:
        return logit_diff_metric(bridge.run_with_hooks(corrupted, fwd_hooks=hooks), pairs)
    finally:
        bridge.set_use_split_qkv_input(False)


def _hooked_logits(bridge, pairs, writes) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The corrupted run with `writes` added after the last block and ln_final's scale held at the corrupted run's."""
    _, corrupted = _tokens(pairs)
    last = f"blocks.{bridge.cfg.n_layers - 1}.hook_resid_post"
    _, cache = bridge.run_with_cache(corrupted, names_filter=["ln_final.hook_scale"])
    hooks = [
        (last, lambda resid, hook: resid + writes),
        ("ln_final.hook_scale", lambda scale, hook: cache["ln_final.hook_scale"]),
    ]
    return logit_diff_metric(bridge.run_with_hooks(corrupted, fwd_hooks=hooks), pairs)


def _columns(runs, input: str) -> int:  # type: ignore[no-untyped-def]
    return runs.forward.n_heads if input == "q" else runs.forward.n_kv_heads


def _hooked_grid(runs, senders, input: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    writes = _bridge_writes(runs.bridge, runs.pairs, senders)
    last = max(layer for layer, _ in senders)
    grid = torch.full((runs.forward.n_layers, _columns(runs, input)), torch.nan)
    for layer in range(last + 1, runs.forward.n_layers):
        for column in range(grid.shape[1]):
            grid[layer, column] = _hooked_paths(runs.bridge, runs.pairs, writes, input, [(layer, column)])
    return grid


def _transformer_lens_grid(runs, sender: tuple[int, int], input: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    import transformer_lens.patching as tl_patching

    clean, corrupted = _tokens(runs.pairs)
    z_name = f"blocks.{sender[0]}.attn.hook_z"
    _, clean_cache = runs.bridge.run_with_cache(clean, names_filter=[z_name])
    _, corrupted_cache = runs.bridge.run_with_cache(corrupted, names_filter=[z_name])
    return tl_patching.get_act_patch_direct_path(
        runs.bridge, corrupted, clean_cache, corrupted_cache, lambda logits: logit_diff_metric(logits, runs.pairs),
        *sender, component=input, verbose=False,
    )  # fmt: skip


def _transformer_lens_computes(runs, input: str) -> bool:  # type: ignore[no-untyped-def]
    """transformer_lens refuses Gemma 3 (post-attention norm) and k/v receivers on grouped-query models."""
    forward = runs.forward
    return forward.config.model_type != "gemma3_text" and (input == "q" or forward.n_kv_heads == forward.n_heads)


# -- equality with transformer_lens and the hooked reruns ------------------------------------------


@pytest.mark.parametrize("input", PATH_INPUTS)
@torch.inference_mode()
def test_path_sweep_equals_transformer_lens_or_a_hooked_rerun(runs, input: str) -> None:  # type: ignore[no-untyped-def]
    result = runs.path_sweep([SENDER], input)
    after = slice(SENDER[0] + 1, None)
    assert result.site == f"path:{input}"
    assert result.metric.shape == (runs.forward.n_layers, _columns(runs, input))
    assert result.metric[: SENDER[0] + 1].isnan().all()
    hooked = _hooked_grid(runs, [SENDER], input)
    if _transformer_lens_computes(runs, input):
        expected = _transformer_lens_grid(runs, SENDER, input)
        torch.testing.assert_close(hooked[after], expected[after], atol=1e-4, rtol=0)  # the oracles agree
    else:
        expected = hooked
    torch.testing.assert_close(result.metric[after], expected[after], atol=1e-4, rtol=0)
    assert float(expected[after].max() - expected[after].min()) > 1e-3  # the receivers differ: a real check
    recovery = (expected[after] - runs.corrupted_metric) / (runs.clean_metric - runs.corrupted_metric)
    torch.testing.assert_close(result.recovery[after], recovery, atol=1e-4, rtol=0)


@torch.inference_mode()
def test_path_writes_are_the_bridges_attention_outputs_and_zero_before_the_difference(runs) -> None:  # type: ignore[no-untyped-def]
    senders = [(0, 1), (0, 2), (1, 0)]
    writes = path_writes(runs.forward, source=runs.clean, target=runs.corrupted, senders=senders)
    assert writes.shape == (len(runs.pairs), runs.clean.tokens.shape[1], runs.forward.d_model)
    substituted = runs.positions["substituted"]
    assert torch.equal(writes[:, :substituted], torch.zeros_like(writes[:, :substituted]))
    expected = _bridge_writes(runs.bridge, runs.pairs, senders)
    # Float32 rounding of the two writes subtracted: 1e-5 of the activations' own scale (they reach ~10 here).
    torch.testing.assert_close(writes, expected, atol=1e-5 * float(expected.abs().max()), rtol=0)


@torch.inference_mode()
def test_the_logits_receiver_equals_a_hooked_rerun(runs) -> None:  # type: ignore[no-untyped-def]
    senders = [(0, 1), (1, 3)]
    expected = _hooked_logits(runs.bridge, runs.pairs, _bridge_writes(runs.bridge, runs.pairs, senders))
    torch.testing.assert_close(runs.path_pairs(senders, input="logits").mean(), expected, atol=1e-4, rtol=0)
    sweep = runs.path_logits_sweep()
    assert sweep.site == "path:logits" and sweep.labels == tuple(f"H{h}" for h in range(runs.forward.n_heads))
    for layer in range(runs.forward.n_layers):
        for head in range(runs.forward.n_heads):
            alone = _hooked_logits(runs.bridge, runs.pairs, _bridge_writes(runs.bridge, runs.pairs, [(layer, head)]))
            assert float(sweep.metric[layer, head]) == pytest.approx(float(alone), abs=1e-4)
    assert float(sweep.metric.max() - sweep.metric.min()) > 1e-3


def _receivers(runs, input: str):  # type: ignore[no-untyped-def]
    """Up to five receivers after layer 0 (key/value heads for k and v), repeats allowed."""
    head = st.tuples(st.integers(1, runs.forward.n_layers - 1), st.integers(0, _columns(runs, input) - 1))
    return st.lists(head, min_size=1, max_size=5)


@pytest.mark.parametrize("input", PATH_INPUTS)
@settings(settings.get_profile("paths"))
@given(data=st.data())
def test_receivers_together_equal_one_hooked_rerun(runs, input: str, data) -> None:  # type: ignore[no-untyped-def]
    """A later receiver reads the stream the earlier ones changed, plus D: one rerun with every receiver hooked."""
    receivers = data.draw(_receivers(runs, input))
    senders = [(0, data.draw(st.integers(0, runs.forward.n_heads - 1)))]
    with torch.inference_mode():
        writes = _bridge_writes(runs.bridge, runs.pairs, senders)
        expected = _hooked_paths(runs.bridge, runs.pairs, writes, input, receivers)
    ours = runs.path_pairs(senders, input=input, receivers=receivers)
    assert ours.shape == (len(runs.pairs),)
    torch.testing.assert_close(ours.mean(), expected, atol=1e-4, rtol=0)


# -- invariants -----------------------------------------------------------------------------------


@settings(settings.get_profile("paths"))
@given(data=st.data())
def test_a_receiver_at_or_before_a_senders_layer_is_refused(runs, data) -> None:  # type: ignore[no-untyped-def]
    n_layers, n_heads = runs.forward.n_layers, runs.forward.n_heads
    sender = data.draw(st.tuples(st.integers(0, n_layers - 1), st.integers(0, n_heads - 1)))
    receiver = data.draw(st.tuples(st.integers(0, sender[0]), st.integers(0, n_heads - 1)))
    with pytest.raises(PatchingError) as error:
        runs.path_pairs([sender], input="q", receivers=[receiver])
    assert str(error.value) == (
        f"path from L{sender[0]}H{sender[1]} to L{receiver[0]}H{receiver[1]}: a receiver reads only what earlier "
        f"layers wrote; L{receiver[0]} is not after L{sender[0]}"
    )


def _every_path_metric(runs, source: Run, target: Run, senders) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Every kind of path's metric from `source` into `target`, flattened: grids (after the senders), together, logits."""
    forward, readout = runs.forward, runs.readout
    after = slice(max(layer for layer, _ in senders) + 1, None)
    every_later = [(layer, 0) for layer in range(after.start, forward.n_layers)]
    metrics = [
        path_logits_metric(forward, source=source, target=target, senders=senders, readout=readout),
        path_logits_grid(forward, source=source, target=target, readout=readout).flatten(),
    ]
    for input in PATH_INPUTS:
        grid = path_metric_grid(forward, source=source, target=target, senders=senders, input=input, readout=readout)
        together = path_heads_metric(
            forward, source=source, target=target, senders=senders, receivers=every_later, input=input, readout=readout
        )
        metrics += [grid[after].flatten(), together]
    return torch.cat(metrics)


@settings(settings.get_profile("paths"))
@given(data=st.data())
@torch.inference_mode()
def test_a_run_patched_into_itself_and_senders_that_do_not_differ_change_nothing(runs, data) -> None:  # type: ignore[no-untyped-def]
    """Clean into clean gives the clean metric everywhere; senders whose clean z is the corrupted z give the corrupted."""
    n_layers, n_heads = runs.forward.n_layers, runs.forward.n_heads
    head = st.tuples(st.integers(0, n_layers - 2), st.integers(0, n_heads - 1))
    senders = data.draw(st.lists(head, min_size=1, max_size=3))
    unchanged = dataclasses.replace(runs.clean, acts={**runs.clean.acts, "z": runs.corrupted.acts["z"]})
    for source, target in ((runs.clean, runs.clean), (unchanged, runs.corrupted)):
        metrics = _every_path_metric(runs, source, target, senders).view(-1, len(runs.pairs))  # [config pair]
        own = run_metric(runs.forward, target, runs.readout)
        # A receiver's output is recomputed (its prefix attended apart, seqprobe.engine.shared_prefix), not
        # read from the cache: equal up to float32 rounding on metrics of a few units.
        torch.testing.assert_close(metrics, own.expand_as(metrics), atol=1e-5, rtol=0)


@pytest.mark.parametrize("input", PATH_INPUTS)
@torch.inference_mode()
def test_a_chunked_sweep_equals_the_whole_batch(runs, input: str) -> None:  # type: ignore[no-untyped-def]
    forward, senders = runs.forward, [(0, 0), (0, 3)]
    grids = [
        path_metric_grid(
            forward,
            source=runs.clean,
            target=runs.corrupted,
            senders=senders,
            input=input,
            readout=runs.readout,
            max_lanes=lanes,
        )  # fmt: skip
        for lanes in (None, 1, 7)
    ]
    for grid in grids[1:]:
        # The same numbers up to float rounding: a BLAS may round a product of few rows apart from one of many.
        torch.testing.assert_close(grid, grids[0], atol=1e-5, rtol=0, equal_nan=True)


# -- the API on PatchingRuns, and its errors ------------------------------------------------------


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_key_and_value_receivers_are_key_value_heads_and_cells_select(runs) -> None:  # type: ignore[no-untyped-def]
    kv = tuple(f"KV{g}" for g in range(runs.forward.n_kv_heads))
    assert runs.path_sweep([SENDER], "k").labels == runs.path_sweep([SENDER], "v").labels == kv
    cells = torch.zeros(runs.forward.n_layers, runs.forward.n_heads, dtype=torch.bool)
    cells[:, 2] = True
    only = runs.path_sweep([SENDER], "q", cells=cells)
    whole = runs.path_sweep([SENDER], "q")
    assert only.labels == ("H0", "H1", "H2", "H3")
    assert only.metric[:, [0, 1, 3]].isnan().all() and only.metric[:1].isnan().all()
    torch.testing.assert_close(only.metric[1:, 2], whole.metric[1:, 2], atol=1e-6, rtol=0)
    assert only.pair_metric is not None and only.pair_metric.shape == (*cells.shape, len(runs.pairs))


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_path_errors_name_what_to_change(runs, sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PatchingError, match=r"^path from L1H0 to L1KV1: .*; L1 is not after L1$"):
        runs.path_pairs([(0, 2), (1, 0)], input="k", receivers=[(2, 0), (1, 1)])
    with pytest.raises(PatchingError, match=r"^a path's receiver reads a later head's q, k, v input, or the logits"):
        runs.path_sweep([SENDER], "z")
    with pytest.raises(PatchingError, match=r"^a path needs at least one sender head"):
        runs.path_sweep([], "q")
    with pytest.raises(PatchingError, match=r"^z: the model has no L0H7"):
        runs.path_sweep([(0, 7)], "q")
    with pytest.raises(PatchingError, match=r"^path:q: cells are \(2, 4\), the grid is \(3, 4\)$"):
        runs.path_sweep([SENDER], "q", cells=torch.ones(2, 4, dtype=torch.bool))
    unprepared = prepare_patching(sharp_bridge, runs.pairs, sites=("z",))
    with pytest.raises(
        PatchingError, match=r"^path patching was not prepared; call prepare_patching\(\.\.\., paths=True\)$"
    ):
        unprepared.path_logits_sweep()
