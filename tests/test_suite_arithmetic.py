"""The tool that counts the case library's arithmetic (tools/suite_arithmetic.py)."""

from __future__ import annotations

from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest
import torch

from seqprobe.engine.architectures import resumable_forward
from seqprobe.engine.prompt_tree import shares_prefixes
from tools.suite_arithmetic import MatmulFlops, RunnerCost, counting_runners


@pytest.mark.parametrize("inference", [False, True])
def test_matrix_products_count_two_flops_per_multiply_add(inference: bool) -> None:
    x, weight, bias = torch.randn(8, 4), torch.randn(3, 4), torch.randn(3)
    with torch.inference_mode(inference), MatmulFlops() as counted:
        torch.nn.functional.linear(x, weight)
        torch.nn.functional.linear(x, weight, bias)
        x.expand(2, 8, 4) @ weight.T
        x + 1.0  # not a matrix product
    assert counted.flops == 2 * (8 * 4 * 3) * (1 + 1 + 2)


def test_the_prompt_tree_still_runs_under_the_counter(tiny_llama_bridge: Any) -> None:
    """torch's FlopCounterMode tracks modules with global hooks, which send prompts down the bridge's path."""
    from torch.utils.flop_counter import FlopCounterMode

    with MatmulFlops():
        assert shares_prefixes(tiny_llama_bridge)
    with FlopCounterMode(display=False):
        assert not shares_prefixes(tiny_llama_bridge)


def test_a_forward_pass_counts_what_its_shapes_say(tiny_llama_bridge: Any) -> None:
    forward = resumable_forward(tiny_llama_bridge.original_model)
    config = tiny_llama_bridge.original_model.config
    batch, n_pos = 3, 5
    with torch.inference_mode(), MatmulFlops() as counted:
        run = forward.run(torch.randint(0, config.vocab_size, (batch, n_pos)), keep=())
        forward.logits(run.resid_final[:, -1])
    d, d_mlp, heads = config.hidden_size, config.intermediate_size, config.num_attention_heads
    d_head = getattr(config, "head_dim", None) or d // heads
    q, kv = heads * d_head, config.num_key_value_heads * d_head
    per_token = 2 * (d * q + 2 * d * kv + q * d + 3 * d * d_mlp)  # q, k, v and o projections, the MLP
    attention = 2 * 2 * q * n_pos * n_pos  # every query's scores over every key, and the mix
    layers = config.num_hidden_layers * batch * (n_pos * per_token + attention)
    assert counted.flops == layers + batch * 2 * d * config.vocab_size


def test_kinds_sharing_a_runner_still_share_it_and_each_call_is_counted() -> None:
    def runner(model: Any, model_name: str, cases: Any, **options: Any) -> dict[str, int]:
        return {case.case_id: int(torch.ones(2, 3).matmul(torch.ones(3, 5)).sum()) for case in cases}

    def other(model: Any, model_name: str, cases: Any, **options: Any) -> dict[str, int]:
        return {}

    costs: list[RunnerCost] = []
    wrapped = counting_runners(MappingProxyType({"family": runner, "direction": runner, "patching": other}), costs)
    assert wrapped["family"] is wrapped["direction"] and wrapped["family"] is not wrapped["patching"]
    cases = [SimpleNamespace(kind="family", case_id="a"), SimpleNamespace(kind="direction", case_id="b")]
    assert wrapped["family"](None, "m", cases, detail=False) == {"a": 30, "b": 30}
    (cost,) = costs
    assert (cost.kinds, cost.cases, cost.flops) == (("family", "direction"), 2, 2 * (2 * 3 * 5) * 2)
    assert cost.seconds > 0

    timed: list[RunnerCost] = []
    counting_runners(MappingProxyType({"family": runner}), timed, count=False)["family"](None, "m", cases)
    assert timed[0].flops == 0 and timed[0].seconds > 0, "timing alone counts nothing"
