"""Shrinking a check's failure with hypothesis: the same draws everywhere, and the smallest failure found.

No model runs here: `fails` is a plain predicate over a variant space.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seqprobe.casefiles.sampling import Variant, uniform_sample
from seqprobe.checks.shrinking import hypothesis_draws, shrink_failure
from tests.casefiles._families import big_space


def test_a_seed_draws_the_same_variants_in_another_process() -> None:
    # big_space's own source, so the other process imports only seqprobe, no test module.
    script = (
        "from seqprobe.casefiles.sampling import Slot, VariantSpace, uniform_sample\n"
        "from seqprobe.casefiles.sequences import BUILTIN_SEQUENCES\n"
        "from seqprobe.checks.shrinking import hypothesis_draws\n"
        f"{inspect.getsource(big_space)}\n"
        "print([(v.choices, v.elements) for v in uniform_sample(big_space(), size=64, seed=7)])\n"
        "print([(v.choices, v.elements) for v in hypothesis_draws(big_space(), max_examples=64, seed=7)])\n"
    )
    env = os.environ | {"PYTHONHASHSEED": "123"}
    root = Path(__file__).resolve().parents[2]
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env, cwd=root
    )
    here = [
        [(v.choices, v.elements) for v in uniform_sample(big_space(), size=64, seed=7)],
        [(v.choices, v.elements) for v in hypothesis_draws(big_space(), max_examples=64, seed=7)],
    ]
    assert output.stdout.splitlines() == [str(variants) for variants in here]


def test_hypothesis_tries_its_draws_in_order_until_one_fails() -> None:
    space = big_space()
    draws = hypothesis_draws(space, max_examples=128, seed=0)
    planted = draws[40]
    tried: list[Variant] = []

    def fails(variant: Variant) -> bool:
        tried.append(variant)
        return variant == planted

    assert shrink_failure(space, fails, max_examples=128, seed=0) == planted, "nothing smaller fails"
    assert list(dict.fromkeys(tried[: tried.index(planted) + 1])) == draws[:41]


@pytest.mark.parametrize("sampled", [False, True])
def test_shrinking_finds_the_planted_minimum(sampled: bool) -> None:
    # Fails when slot b uses alternative 2 or 3 and the day is Wednesday or later; the minimum
    # has every other slot at its first alternative, b at 2, and Wednesday.
    space = big_space()
    max_examples = 128 if sampled else len(space)

    def fails(variant: Variant) -> bool:
        return variant.choices[1] >= 2 and variant.elements[0] >= 2

    if sampled:
        assert any(fails(variant) for variant in hypothesis_draws(space, max_examples=max_examples, seed=0))
    found = shrink_failure(space, fails, max_examples=max_examples, seed=0)
    assert found == Variant(choices=(0, 2, 0, 0), elements=(2,))


def test_shrinking_says_none_when_nothing_fails() -> None:
    assert shrink_failure(big_space(), lambda variant: False, max_examples=50, seed=0) is None
