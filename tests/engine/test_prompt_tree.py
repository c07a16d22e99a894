"""The prefix tree: each distinct prefix once, the same logits as the bridge, and the bridge itself where hooks are.

The oracle is the bridge run on each prompt alone (`bridge(tokens)`), the call the tree replaces.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqprobe.engine import prompt_tree
from seqprobe.engine.prompt_tree import build_tree, read_logits, shares_prefixes


def _alone(bridge: Any, rows: list[list[int]], positions: list[list[int]]) -> torch.Tensor:
    """Each row through the bridge by itself, read at its positions: what read_logits must equal."""
    reads = []
    with torch.inference_mode():
        for row, row_positions in zip(rows, positions, strict=True):
            logits = bridge(torch.tensor([row]), return_type="logits")[0]  # [pos d_vocab]
            reads.extend(logits[p].float() for p in row_positions)
    return torch.stack(reads)


# Rows over a small alphabet share prefixes often; a few repeat whole.
_rows = st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=9), min_size=1, max_size=12)


@given(rows=_rows)
def test_the_tree_has_one_node_per_distinct_prefix(rows: list[list[int]]) -> None:
    positions = [list(range(len(row))) for row in rows]
    tree = build_tree(rows, positions)
    prefixes = {tuple(row[: i + 1]) for row in rows for i in range(len(row))}
    assert tree.n_nodes == len(prefixes)
    # A node's path spells its prefix, and its depth is the prefix's last position.
    spelled = {}
    for depth, paths in enumerate(tree.paths):
        assert paths.shape == (tree.levels[depth + 1] - tree.levels[depth], depth + 1)
        for path in paths.tolist():
            spelled[path[-1]] = tuple(tree.tokens[path].tolist())
    assert set(spelled.values()) == prefixes
    reads = iter(tree.reads.tolist())
    for row in rows:
        for i in range(len(row)):
            assert spelled[next(reads)] == tuple(row[: i + 1])


# A stem, and rows that each keep some of it and add a tail: (kept, tail, positions read).
_branches = st.lists(
    st.tuples(
        st.integers(1, 8),
        st.lists(st.integers(0, 999), max_size=4),
        st.lists(st.integers(0, 99), min_size=1, max_size=3),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stem=st.lists(st.integers(0, 999), min_size=1, max_size=8), branches=_branches)
def test_tree_logits_equal_the_bridge_one_prompt_at_a_time(
    sharp_bridge: Any, stem: list[int], branches: list[tuple[int, list[int], list[int]]]
) -> None:
    assert shares_prefixes(sharp_bridge)
    vocab = sharp_bridge.cfg.d_vocab
    rows = [[token % vocab for token in stem[:kept] + tail] for kept, tail, _ in branches]
    positions = [sorted({p % len(row) for p in reads}) for row, (_, _, reads) in zip(rows, branches, strict=True)]
    got = read_logits(sharp_bridge, rows, positions, batch_size=3)
    torch.testing.assert_close(got, _alone(sharp_bridge, rows, positions), atol=1e-4, rtol=0)


def test_trees_cut_under_the_node_budget_give_the_same_logits(
    tiny_llama_bridge: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [[1, 2, 3, 4, i] for i in range(5, 12)] + [[1, 2, 9], [7, 8]]
    positions = [[len(row) - 1, 0] for row in rows]
    whole = read_logits(tiny_llama_bridge, rows, positions, batch_size=64)
    monkeypatch.setattr(prompt_tree, "MAX_NODES", 6)
    assert len(prompt_tree._tree_chunks(sorted(map(tuple, rows)))) > 2
    torch.testing.assert_close(read_logits(tiny_llama_bridge, rows, positions, batch_size=64), whole, atol=1e-5, rtol=0)


def test_the_tree_computes_each_prefix_once(tiny_llama_bridge: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    computed = []
    run_tree = prompt_tree.run_tree
    monkeypatch.setattr(
        prompt_tree, "run_tree", lambda forward, tree: computed.append(tree.n_nodes) or run_tree(forward, tree)
    )
    rows = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 6], [1, 2, 3, 4]]
    read_logits(tiny_llama_bridge, rows, [[len(row) - 1] for row in rows], batch_size=64)
    assert computed == [6], "1, 1 2, 1 2 3, 1 2 3 4, 1 2 3 5, 1 2 6: the repeated row adds nothing"


class _Counting:
    """A wrapper around a bridge, as a user might write one: the tree cannot see into it."""

    def __init__(self, bridge: Any) -> None:
        self.bridge = bridge
        self.widths: list[tuple[int, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bridge, name)

    def __call__(self, tokens: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.widths.append(tuple(tokens.shape))
        return self.bridge(tokens, **kwargs)


def test_a_wrapped_bridge_gets_distinct_prompts_in_batches_sorted_by_length(tiny_llama_bridge: Any) -> None:
    wrapped = _Counting(tiny_llama_bridge)
    assert not shares_prefixes(wrapped)
    rows = [[1, 2], [3, 4, 5, 6, 7], [1, 2], [8, 9, 10], [11], [3, 4, 5, 6, 7, 8]]
    positions = [[len(row) - 1] for row in rows]
    got = read_logits(wrapped, rows, positions, batch_size=2)
    assert wrapped.widths == [(2, 2), (2, 5), (1, 6)], (
        "4 distinct rows by length: [11] [1 2] | [8 9 10] [3..7] | [3..8]"
    )
    torch.testing.assert_close(got, _alone(tiny_llama_bridge, rows, positions), atol=1e-5, rtol=0)


def test_a_bridge_with_hooks_runs_through_the_bridge_and_its_hooks(tiny_llama_bridge: Any) -> None:
    rows = [[1, 2, 3], [1, 2, 4]]
    positions = [[2], [2]]
    plain = read_logits(tiny_llama_bridge, rows, positions, batch_size=64)

    def shift(resid: torch.Tensor, hook: Any) -> torch.Tensor:
        return resid + 1.0

    tiny_llama_bridge.add_hook("blocks.0.hook_resid_pre", shift)
    try:
        assert not shares_prefixes(tiny_llama_bridge)
        hooked = read_logits(tiny_llama_bridge, rows, positions, batch_size=64)
        expected = _alone(tiny_llama_bridge, rows, positions)
    finally:
        tiny_llama_bridge.reset_hooks()
    assert shares_prefixes(tiny_llama_bridge), "the hooks the bridge installs itself record, and change nothing"
    torch.testing.assert_close(hooked, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(hooked, plain, atol=1e-3), "the hook changes the logits, so it must have run"


def test_a_plain_torch_hook_is_a_hook_too(tiny_llama_bridge: Any) -> None:
    mlp = tiny_llama_bridge.original_model.model.layers[0].mlp
    handle = mlp.register_forward_hook(lambda module, args, output: output * 2)
    try:
        assert not shares_prefixes(tiny_llama_bridge)
    finally:
        handle.remove()


def test_no_reads_give_an_empty_table(tiny_llama_bridge: Any) -> None:
    assert read_logits(tiny_llama_bridge, [], [], batch_size=8).numel() == 0
