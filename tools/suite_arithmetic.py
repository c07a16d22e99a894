"""The case library's arithmetic: what each runner's matrix products cost, and the time they set.

On a CPU `make suite` is bound by arithmetic, so no engine change can take it under the time its
matrix products need at the machine's rate. This runs the suite in-process, counts the FLOPs of
every matrix product each runner issues (a dispatch mode, not module hooks, which would send the
prompt tree down the bridge's slower path), measures this machine's float32 matmul rate at the
model's MLP shape, and prints the seconds that arithmetic takes at that rate beside the start-up
(imports and model load). The counting makes the run itself about twice as slow; its figures are
FLOPs, not timings.

    .venv/bin/python tools/suite_arithmetic.py [--model smollm2-135m] [--time] [pytest arguments ...]

`--time` times each runner call instead (no counting). Both measure the checkout they run in: run
from a worktree of another commit, they measure that commit's seqprobe and case files.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

__all__ = ["MatmulFlops", "RunnerCost", "counting_runners", "main", "matmul_rate", "startup_seconds"]

# Rows of the timed product: the size of a prompt tree's batch, where matmuls run fastest.
RATE_ROWS = 4096


class MatmulFlops(TorchDispatchMode):
    """Counts the FLOPs of every matrix product run inside it (`.flops`), as torch's FlopCounterMode
    does, but without its module hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        count = flop_registry.get(func._overloadpacket)
        if count is None:
            # Under inference_mode composite ops (linear, matmul) arrive whole: count their parts.
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if count is not None:
            self.flops += count(*args, **kwargs, out_val=out)
        return out


@dataclass(frozen=True)
class RunnerCost:
    """One runner call: the kinds it ran, how many cases, its matrix products' FLOPs (0 when only
    timed) and its seconds."""

    kinds: tuple[str, ...]
    cases: int
    flops: int
    seconds: float


def counting_runners(runners: Any, costs: list[RunnerCost], *, count: bool = True) -> MappingProxyType:
    """`runners` with each distinct runner wrapped to append its calls' costs; kinds sharing one still
    share it. `count=False` only times them (counting about doubles their time)."""
    wrapped: dict[int, Callable[..., Any]] = {}

    def wrap(runner: Callable[..., Any]) -> Callable[..., Any]:
        def counted(model: Any, model_name: str, cases: Sequence[Any], **options: Any) -> Any:
            mode = MatmulFlops() if count else None
            with mode if mode is not None else contextlib.nullcontext():
                start = time.perf_counter()
                outcomes = runner(model, model_name, cases, **options)
                seconds = time.perf_counter() - start
            kinds = tuple(dict.fromkeys(case.kind for case in cases))
            flops = mode.flops if mode is not None else 0
            costs.append(RunnerCost(kinds=kinds, cases=len(cases), flops=flops, seconds=seconds))
            return outcomes

        return wrapped.setdefault(id(runner), counted)

    return MappingProxyType({kind: wrap(runner) for kind, runner in runners.items()})


def matmul_rate(d_model: int, d_mlp: int, *, repeats: int = 20) -> float:
    """This machine's float32 FLOP/s for [RATE_ROWS d_model] @ [d_model d_mlp], the best of `repeats`."""
    x, weight = torch.randn(RATE_ROWS, d_model), torch.randn(d_mlp, d_model)
    torch.nn.functional.linear(x, weight)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.nn.functional.linear(x, weight)
        best = min(best, time.perf_counter() - start)
    return 2 * RATE_ROWS * d_model * d_mlp / best


def startup_seconds(model: str) -> float:
    """A fresh interpreter's time to import torch, the bridge and the runners, and to load `model`."""
    code = f"import seqprobe.checks.runners; from seqprobe.loading.models import load_model; load_model({model!r})"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--time", action="store_true", help="time each runner instead of counting its FLOPs")
    args, pytest_args = parser.parse_known_args(argv)
    sys.path.insert(0, os.getcwd())  # this checkout's seqprobe, not the installed one

    startup = startup_seconds(args.model)
    from seqprobe.loading.models import load_model

    config = load_model(args.model).bridge.original_model.config
    rate = matmul_rate(int(config.hidden_size), int(config.intermediate_size))

    import pytest

    import seqprobe.checks.runners as runners

    costs: list[RunnerCost] = []
    runners.RUNNERS = counting_runners(runners.RUNNERS, costs, count=not args.time)
    status = pytest.main(["cases/", "--model", args.model, "-q", "-p", "no:randomly", *pytest_args])

    print(f"\nstart-up (a fresh interpreter importing the runners and loading {args.model}): {startup:.1f} s")
    rows = [(" + ".join(cost.kinds), cost) for cost in costs]
    rows.append(("all runners", RunnerCost((), sum(c.cases for c in costs), sum(c.flops for c in costs),
                                           sum(c.seconds for c in costs))))  # fmt: skip
    if args.time:
        for name, cost in rows:
            print(f"{name:<34} {cost.cases:>4} cases {cost.seconds:>6.1f} s")
        return int(status)
    print(
        f"float32 matmul rate at [{RATE_ROWS} {config.hidden_size}] @ [{config.hidden_size} "
        f"{config.intermediate_size}]: {rate / 1e9:.0f} GFLOP/s"
    )
    for name, cost in rows:
        print(
            f"{name:<34} {cost.cases:>4} cases {cost.flops / 1e9:>8.0f} GFLOP {cost.flops / rate:>6.1f} s at that rate"
        )
    total = rows[-1][1].flops
    print(f"start-up with the arithmetic: {startup + total / rate:.1f} s before anything but matrix products")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
