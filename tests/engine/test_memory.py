"""Bounded memory: sweeps in chunks under a lane budget equal the whole stacked batch; budgets parse."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprobe.engine import resume
from seqprobe.engine.memory import lane_bytes, max_lanes
from seqprobe.engine.stack import Entry, chunks
from seqprobe.vocabulary.options import parse_memory
from seqprobe.vocabulary.sites import SITES
from tests.engine._day_runs import day_runs

PAIRS = [
    ("Sunday", "Tuesday", " Monday", " Wednesday"),
    ("Friday", "Thursday", " Saturday Sunday", " Friday"),
]


@pytest.fixture(scope="module")
def runs(sharp_bridge):  # type: ignore[no-untyped-def]
    return day_runs(sharp_bridge, PAIRS)


@pytest.mark.parametrize("site", SITES)
def test_a_sweep_in_chunks_equals_the_whole_batch(runs, site: str) -> None:  # type: ignore[no-untyped-def]
    """A budget of 3 lanes (one configuration at a time, nearly) against no budget at all."""
    whole = runs.sweep(site)
    per_lane = lane_bytes(runs.forward, n_keys=runs.corrupted.tokens.shape[1])
    runs.max_memory = 3 * per_lane
    try:
        chunked = runs.sweep(site)
    finally:
        runs.max_memory = None
    assert whole.pair_metric is not None and chunked.pair_metric is not None
    # Equal up to float32 rounding, not bit for bit: the configurations attend over the shared prefix
    # in one product whose rows they fill (seqprobe.engine.shared_prefix), and the BLAS picks its
    # kernel by the number of rows, so a chunk of one configuration may round differently from the
    # whole batch (seen: up to 8e-6 on metrics of a few units, amplified by these sharp models).
    torch.testing.assert_close(chunked.pair_metric, whole.pair_metric, atol=1e-5, rtol=0)


def _entry(configs: int, pairs: int, positions: int) -> Entry:
    return Entry(stage=0, start=0, resid=torch.zeros(configs, pairs, positions, 1), cells=torch.arange(configs))


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 3), st.integers(1, 4)), min_size=1, max_size=6),
    budget=st.integers(1, 40),
)
def test_chunks_keep_every_configuration_once_in_order_within_the_budget(shapes, budget: int) -> None:  # type: ignore[no-untyped-def]
    entries = [_entry(*shape) for shape in shapes]
    stacks = list(chunks(iter(entries), budget))  # from an iterator, as a sweep builds its entries
    cells = torch.cat([part.cells for stack in stacks for part in stack])
    assert torch.equal(cells, torch.cat([entry.cells for entry in entries]))
    for stack in stacks:
        lanes = sum(part.resid.shape[0] * part.resid.shape[1] * part.resid.shape[2] for part in stack)
        one_config = len(stack) == 1 and stack[0].resid.shape[0] == 1
        assert lanes <= budget or one_config, "only a configuration over the budget by itself may exceed it"


@pytest.mark.parametrize(
    ("text", "size"),
    [("6GB", 6 * 10**9), ("512MB", 512 * 10**6), ("1.5GiB", int(1.5 * 2**30)), ("2000000", 2_000_000), ("auto", None)],
)
def test_memory_budgets_parse(text: str, size: int | None) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["lots", "-1GB", "0", "6 GBs", ""])
def test_a_bad_budget_says_the_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected auto or a size such as 6GB, 512MB or 1.5GiB"):
        parse_memory(text)


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_the_default_budget_is_half_the_free_memory(runs) -> None:  # type: ignore[no-untyped-def]
    lanes = max_lanes(runs.forward, n_keys=10, budget=None)
    assert lanes * lane_bytes(runs.forward, n_keys=10) > 10**6, "a machine with a little free memory fits many lanes"
    assert max_lanes(runs.forward, n_keys=10, budget=1) == 1


def test_peak_memory_sees_a_block_of_work_allocate() -> None:
    from seqprobe.engine.memory import PeakMemory

    with PeakMemory("cpu") as peak:
        block = torch.ones(50_000_000)  # 200 MB, touched
        del block
    assert peak.peak_bytes >= 150_000_000


def test_a_chunked_sweep_builds_its_entries_as_the_chunks_ask(runs, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Bounded memory includes the patched inputs: a layer's entry is built when its chunk runs, not all up front."""
    built: list[int] = []
    run_when: list[int] = []
    build, run_stack = resume.head_entries, resume._resume_stacked

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        for entry in build(*args, **kwargs):
            built.append(len(entry.cells))
            yield entry

    def running(*args, **kwargs):  # type: ignore[no-untyped-def]
        run_when.append(len(built))
        return run_stack(*args, **kwargs)

    monkeypatch.setattr(resume, "head_entries", counting)
    monkeypatch.setattr(resume, "_resume_stacked", running)
    monkeypatch.setattr(runs, "max_memory", 1)  # one lane: every configuration alone
    runs.sweep("z")
    n_layers = runs.forward.n_layers
    assert len(built) == n_layers and len(run_when) == n_layers * runs.forward.n_heads
    assert run_when[0] == 1, "the first chunk runs when only the first layer's entry exists"
    assert run_when == sorted(run_when)
