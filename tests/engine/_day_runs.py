"""Cached clean/corrupted runs of day-of-the-week pairs, shared by the engine's tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from seqprobe.engine.patching import PatchingRuns, make_pair, prepare_patching

TEMPLATE = " Today it is {}, tomorrow it is"


def day_runs(bridge: Any, days: Sequence[tuple[str, str, str, str]]) -> PatchingRuns:
    """The runs of (clean day, corrupted day, answer, distractor) pairs in TEMPLATE, every site cached."""
    pairs = [
        make_pair(bridge, clean=TEMPLATE.format(clean), corrupted=TEMPLATE.format(corrupted), answer=a, distractor=d)
        for clean, corrupted, a, d in days
    ]
    return prepare_patching(bridge, pairs)
