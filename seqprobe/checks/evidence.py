"""What a patching case's claims are checked against and its figures drawn from: one case's measurements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seqprobe.engine.attribution import DirectAttribution, LogitLens
    from seqprobe.engine.patching import PatchingRuns, SweepResult

__all__ = ["Evidence"]


@dataclass(frozen=True)
class Evidence:
    """Everything a case's claims are checked against."""

    runs: PatchingRuns
    sweeps: Mapping[str, SweepResult]
    # Attribution-patching estimates, computed only when a claim asks for them.
    estimates: Mapping[str, SweepResult]
    # Computed when a claim or the report needs them.
    lens: LogitLens | None
    attribution: DirectAttribution | None
