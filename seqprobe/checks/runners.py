"""Each kind of case's runner, in one table beside `seqprobe.casefiles.kinds`'s table of parsers."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from seqprobe.checks.completion import run_completion_checks
from seqprobe.checks.families import run_variant_checks
from seqprobe.checks.outcome import Runner
from seqprobe.checks.patching import run_patching_checks

__all__ = ["RUNNERS"]

RUNNERS: Mapping[str, Runner] = MappingProxyType(
    {
        "completion": run_completion_checks,
        "patching": run_patching_checks,
        "family": run_variant_checks,
        "invariance": run_variant_checks,
        "direction": run_variant_checks,
    }
)
