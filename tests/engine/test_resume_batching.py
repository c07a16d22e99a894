"""The resumed batch's levers: attention over a shared prefix, buffers by start, work independent of the configurations.

The numbers themselves are checked against transformer_lens in test_patching.py; here, that the
pieces equal the plain computation they replace, and that a sweep's operations (what would be
kernel launches on a GPU) do not grow with the number of patch configurations.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from seqprobe.engine.architectures import resumable_forward
from seqprobe.engine.forward import ResumableForward
from seqprobe.engine.resume import patched_metric_grid
from seqprobe.engine.shared_prefix import attend_after_prefix
from seqprobe.engine.stack import Entry, group_by_start
from seqprobe.vocabulary.sites import HEAD_SITES, SITES
from tests.engine._day_runs import day_runs

PAIRS = [("Sunday", "Tuesday", " Monday", " Wednesday"), ("Friday", "Thursday", " Saturday", " Friday")]


@pytest.fixture(scope="module")
def runs(sharp_bridge):  # type: ignore[no-untyped-def]
    return day_runs(sharp_bridge, PAIRS)


# -- attention over the shared prefix ------------------------------------------------------------


def _plain_attention(
    forward: ResumableForward, layer: int, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, q_start: int
) -> tuple[torch.Tensor, torch.Tensor]:
    pattern = forward.pattern(layer, q, keys, q_start=q_start)
    return pattern, forward.mix(pattern, values)


def _soft_capped(forward: ResumableForward, softcap: float) -> ResumableForward:
    """The same forward, its attention logits soft-capped at `softcap` (as Gemma 2 does; the test models do not)."""

    class SoftCapped(type(forward)):  # type: ignore[misc]
        def _attention(self, layer: int) -> Any:
            attention = super()._attention(layer)
            return SimpleNamespace(
                scaling=attention.scaling,
                sliding_window=getattr(attention, "sliding_window", None),
                attn_logit_softcapping=softcap,
            )

    return SoftCapped(forward.model)


@pytest.mark.parametrize(("n_prefix", "skip"), [(0, 0), (1, 0), (3, 0), (3, 2), (4, 3)])
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_attention_after_a_shared_prefix_equals_attention_over_the_concatenated_keys(
    sharp_bridge, n_prefix: int, skip: int, softcap: float | None
) -> None:  # type: ignore[no-untyped-def]
    """Grouped-query heads (Llama, Gemma 3), the sliding window (Gemma 3) and soft-capping, every layer.

    `skip` leaves out the first own positions' queries, as the last block does.
    """
    forward = resumable_forward(sharp_bridge.original_model)
    if softcap is not None:
        forward = _soft_capped(forward, softcap)
    n_config, n_pair, n_own = 5, 2, 4
    generator = torch.Generator().manual_seed(n_prefix * 10 + skip)

    def randn(*shape: int) -> torch.Tensor:
        return 2 * torch.randn(*shape, generator=generator)

    for layer in range(forward.n_layers):
        rows = n_config * n_pair
        q = randn(rows, forward.n_heads, n_own - skip, forward.d_head)
        k, v = (randn(rows, forward.n_kv_heads, n_own, forward.d_head) for _ in range(2))
        prefix_k, prefix_v = (randn(n_pair, forward.n_kv_heads, n_prefix, forward.d_head) for _ in range(2))
        pattern, z = attend_after_prefix(
            forward, layer, q, k, v, prefix_k=prefix_k, prefix_v=prefix_v, q_start=n_prefix + skip
        )
        # The copy this module avoids: the prefix once per configuration, [config*pair kv_head pos d_head].
        keys = torch.cat([prefix_k.repeat(n_config, 1, 1, 1), k], dim=2)
        values = torch.cat([prefix_v.repeat(n_config, 1, 1, 1), v], dim=2)
        expected_pattern, expected_z = _plain_attention(forward, layer, q, keys, values, n_prefix + skip)
        assert pattern.shape == expected_pattern.shape and z.shape == expected_z.shape
        torch.testing.assert_close(pattern, expected_pattern, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(z, expected_z, atol=1e-5, rtol=1e-5)


# -- buffers by start ----------------------------------------------------------------------------

entry_shapes = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.integers(1, 3)), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None)
@given(shapes=entry_shapes)
def test_groups_hold_every_configuration_once_in_the_order_they_join(shapes) -> None:  # type: ignore[no-untyped-def]
    """(stage, start, configurations) per entry; rows are numbered by the entries' concatenated order."""
    entries, first = [], 0
    for stage, start, n_config in shapes:
        rows = torch.arange(first, first + n_config, dtype=torch.float32)
        # Each configuration's resid holds its own row number, so the buffers show where it went.
        resid = rows[:, None, None, None].expand(n_config, 2, 5 - start, 3)  # [config pair pos d_model], a view
        entries.append(Entry(stage=stage, start=start, resid=resid, cells=torch.arange(n_config)))
        first += n_config
    groups = group_by_start(entries)
    assert sorted(group.start for group in groups) == sorted({start for _, start, _ in shapes})
    assert sorted(torch.cat([group.rows for group in groups]).tolist()) == list(range(first))
    for group in groups:
        assert list(group.stages) == sorted(group.stages)
        assert torch.equal(group.resid[:, 0, 0, 0], group.rows.float())
        for stage in range(8):
            assert group.joined(stage) == sum(s <= stage for s in group.stages)
    assert all(not entry.resid.is_contiguous() for entry in entries), "the entries were views: each group copied them"


# -- work that does not grow with the configurations ----------------------------------------------


class _CountOps(TorchDispatchMode):
    """Counts the operations that compute floating-point tensors (a GPU's launches), not views or index bookkeeping."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, (tuple, list)) else [out]
        if not func.is_view and any(isinstance(t, torch.Tensor) and t.is_floating_point() for t in outputs):
            self.counts[str(func.overloadpacket)] += 1
        return out


def _count(runs, site: str, cells: torch.Tensor) -> tuple[Counter[str], int]:  # type: ignore[no-untyped-def]
    """The operations of one sweep restricted to `cells`, and how many times the forward's pieces ran."""
    forward = runs.forward
    calls = Counter[str]()
    originals: dict[str, Any] = {}
    for name in ("qkv", "mlp_output", "attention_output"):
        originals[name] = getattr(forward, name)

        def counted(*args: Any, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return originals[_name](*args, **kwargs)

        setattr(forward, name, counted)
    try:
        with torch.inference_mode(), _CountOps() as ops:
            patched_metric_grid(
                forward, source=runs.clean, target=runs.corrupted, site=site, readout=runs.readout, cells=cells
            )
    finally:
        for name in originals:
            delattr(forward, name)
    return ops.counts + Counter({f"forward.{name}": n for name, n in calls.items()}), int(cells.sum())


@pytest.mark.parametrize("site", SITES)
def test_a_sweeps_operations_do_not_grow_with_its_configurations(runs, site: str) -> None:  # type: ignore[no-untyped-def]
    """A few configurations and every one, joining at the same stages and starts: the same operations.

    Head sites: one head of every layer against all heads. Position sites: every position of the
    first layer against every layer (each (layer, position) is its own configuration, and a
    position's configurations share one buffer however many layers join it).
    """
    n_layers, n_columns = runs.grid_shape(site)
    if n_columns == 1:
        pytest.skip(f"{site}: one column per layer, so no sweep has fewer configurations than another")
    few = torch.zeros(n_layers, n_columns, dtype=torch.bool)
    if site in HEAD_SITES:
        few[:, 0] = True
    else:
        few[0] = True
    many = torch.ones(n_layers, n_columns, dtype=torch.bool)
    _count(runs, site, many)  # a warm-up, so that tables the forward fills once (rotary) count in neither
    few_ops, n_few = _count(runs, site, few)
    many_ops, n_many = _count(runs, site, many)
    assert n_many >= 2 * n_few
    assert few_ops["forward.qkv"] > 0
    assert many_ops == few_ops


def test_runs_updated_in_place_leave_the_cached_runs_untouched(runs) -> None:  # type: ignore[no-untyped-def]
    """The batch adds each sublayer's update in place; it must never be adding into the cache it started from."""
    before = {
        role: ({name: [t.clone() for t in acts] for name, acts in run.acts.items()}, run.resid_final.clone())
        for role, run in (("clean", runs.clean), ("corrupted", runs.corrupted))
    }
    for site in SITES:
        runs.sweep(site)
    for site in HEAD_SITES:
        runs.patch_heads_together(site, [(0, 0), (runs.forward.n_layers - 1, 0)])
    for role, run in (("clean", runs.clean), ("corrupted", runs.corrupted)):
        acts, resid_final = before[role]
        assert torch.equal(run.resid_final, resid_final), role
        for name, values in acts.items():
            assert all(torch.equal(a, b) for a, b in zip(run.acts[name], values, strict=True)), (role, name)
