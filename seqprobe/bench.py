"""`seqprobe bench`: seqprobe's patching engine against transformer_lens.patching, side by side.

Both tools run the study's whole grid — the six sweeps of `seqprobe.vocabulary.sites.SITES` on its four
day-of-the-week pairs, then the path sweep from the top "z" head into every later head's query
(`seqprobe.bench_paths`) and the faithfulness curve of the top 30 "z" heads (`seqprobe.bench_curves`) — in one process, on the same model, prompts and metric. Each tool's time
includes the runs it has to cache first (seqprobe: the clean and corrupted runs; transformer_lens:
`run_with_cache` on the clean prompts and the unpatched corrupted run that recovery is measured
from). Printed: both wall times per sweep and in total, their ratio, and the largest absolute
difference between the two recovery grids. A benchmark, not a test: nothing here asserts a time.
The command itself is `seqprobe.bench_command`; `--pairs P --length N` times the sweeps on
token-level pairs of any size instead (`seqprobe.bench_scaling`, which reuses the timing here).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import torch
from torch import Tensor

from seqprobe.bench_curves import CURVE_SWEEP, curve_row
from seqprobe.bench_paths import BENCH_SWEEPS, PATH_SWEEP, corrupted_hook_names, patching_sites, path_row
from seqprobe.engine.memory import PeakMemory
from seqprobe.engine.patching import PatchingPair, logit_diff_metric, make_pair, prepare_patching
from seqprobe.vocabulary.sites import hook_name

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "STUDY_PAIRS",
    "BenchResult",
    "SweepTiming",
    "load_average",
    "load_span",
    "max_resident_bytes",
    "reference_hook_names",
    "reference_sweep",
    "run_benchmark",
    "say",
    "study_pairs",
    "timed_step",
    "transformer_lens_sweeps",
]


# (clean day, its answer, corrupted day, the distractor: the corrupted prompt's own answer).
_STUDY_DAYS = (
    ("Sunday", " Monday", "Tuesday", " Wednesday"),
    ("Friday", " Saturday", "Thursday", " Friday"),
    ("Thursday", " Friday", "Saturday", " Sunday"),
    ("Monday", " Tuesday", "Wednesday", " Thursday"),
)
_TEMPLATE = "Today it is {}, tomorrow it is"
# The study's four pairs as (clean, corrupted, answer, distractor).
STUDY_PAIRS: tuple[tuple[str, str, str, str], ...] = tuple(
    (_TEMPLATE.format(clean), _TEMPLATE.format(corrupted), answer, distractor)
    for clean, answer, corrupted, distractor in _STUDY_DAYS
)


def study_pairs(bridge: TransformerBridge) -> list[PatchingPair]:
    """The study's pairs tokenized for `bridge` (errors if an answer is not one token there)."""
    return [
        make_pair(bridge, clean=clean, corrupted=corrupted, answer=answer, distractor=distractor, where="bench")
        for clean, corrupted, answer, distractor in STUDY_PAIRS
    ]


def reference_sweep(
    bridge: TransformerBridge,
    pairs: Sequence[PatchingPair],
    site: str,
    *,
    clean_cache: Any,
    clean_metric: float,
    corrupted_metric: float,
) -> Tensor:
    """transformer_lens.patching's recovery grid for `site`, with seqprobe's metric."""
    corrupted = torch.stack([pair.corrupted for pair in pairs]).to(bridge.cfg.device)

    def metric(logits: Tensor) -> Tensor:
        return (logit_diff_metric(logits, pairs) - corrupted_metric) / (clean_metric - corrupted_metric)

    with torch.inference_mode():
        return transformer_lens_sweeps()[site](bridge, corrupted, clean_cache, metric).float().cpu()


def transformer_lens_sweeps() -> dict[str, Callable[..., Tensor]]:
    """The transformer_lens.patching function each seqprobe site equals."""
    import transformer_lens.patching as tl_patching

    return {
        "resid_pre": tl_patching.get_act_patch_resid_pre,
        "attn_out": tl_patching.get_act_patch_attn_out,
        "mlp_out": tl_patching.get_act_patch_mlp_out,
        "z": tl_patching.get_act_patch_attn_head_out_all_pos,
        "v": tl_patching.get_act_patch_attn_head_v_all_pos,
        "pattern": tl_patching.get_act_patch_attn_head_pattern_all_pos,
    }


def reference_hook_names(n_layers: int, sites: Sequence[str]) -> list[str]:
    """The bridge hooks transformer_lens's sweeps of `sites` read from the clean cache, site by site."""
    return [hook_name(site, layer) for site in sites for layer in range(n_layers)]


@dataclass(frozen=True)
class SweepTiming:
    """One row of the benchmark: a sweep (or "setup", the cached runs) timed in both tools."""

    site: str
    seqprobe_seconds: float
    transformer_lens_seconds: float
    # Largest |seqprobe − transformer_lens| over the sweep's recovery grid (the curve's faithfulness); 0 for setup.
    max_abs_diff: float
    # The most memory each tool's run took above what was in use before it (seqprobe.engine.memory.PeakMemory).
    seqprobe_peak_memory_bytes: int = 0
    transformer_lens_peak_memory_bytes: int = 0


@dataclass(frozen=True)
class BenchResult:
    model: str
    device: str
    # "setup" first, then one row per sweep.
    rows: tuple[SweepTiming, ...]
    # The machine's 1-minute load average at the start and the end (None where the OS has none;
    # the end includes this run's own torch threads). Other work on the CPU slows
    # transformer_lens's many small operations far more than seqprobe's few large ones, so
    # figures from a busy machine overstate the speedup.
    load_average: tuple[float, float] | None = None

    @property
    def seqprobe_seconds(self) -> float:
        return sum(row.seqprobe_seconds for row in self.rows)

    @property
    def transformer_lens_seconds(self) -> float:
        return sum(row.transformer_lens_seconds for row in self.rows)

    @property
    def speedup(self) -> float:
        return self.transformer_lens_seconds / self.seqprobe_seconds

    @property
    def max_abs_diff(self) -> float:
        return max(row.max_abs_diff for row in self.rows)

    @property
    def peak_memory_bytes(self) -> int:
        """seqprobe's largest peak over its runs: what the grid needs beyond the model."""
        return max(row.seqprobe_peak_memory_bytes for row in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "seqprobe_seconds": self.seqprobe_seconds,
            "transformer_lens_seconds": self.transformer_lens_seconds,
            "speedup": self.speedup,
            "max_abs_diff": self.max_abs_diff,
            "peak_memory_bytes": self.peak_memory_bytes,
            "load_average": list(self.load_average) if self.load_average else None,
            "sweeps": {
                row.site: {
                    "seqprobe_seconds": row.seqprobe_seconds,
                    "transformer_lens_seconds": row.transformer_lens_seconds,
                    "speedup": row.transformer_lens_seconds / row.seqprobe_seconds,
                    "max_abs_diff": row.max_abs_diff,
                    "peak_memory_bytes": row.seqprobe_peak_memory_bytes,
                    "transformer_lens_peak_memory_bytes": row.transformer_lens_peak_memory_bytes,
                }
                for row in self.rows
            },
        }

    def format(self) -> str:
        from tabulate import tabulate

        table = [
            [row.site, f"{row.seqprobe_seconds:.2f}", f"{row.transformer_lens_seconds:.2f}",
             f"{row.transformer_lens_seconds / row.seqprobe_seconds:.1f}x", f"{row.max_abs_diff:.1e}",
             f"{row.seqprobe_peak_memory_bytes / 1e6:.0f}"]
            for row in self.rows
        ]  # fmt: skip
        table.append(
            ["total", f"{self.seqprobe_seconds:.2f}", f"{self.transformer_lens_seconds:.2f}",
             f"{self.speedup:.1f}x", f"{self.max_abs_diff:.1e}", f"{self.peak_memory_bytes / 1e6:.0f}"]
        )  # fmt: skip
        headers = ["sweep", "seqprobe s", "transformer_lens s", "speedup", "max |diff|", "seqprobe peak MB"]
        lines = [f"{self.model} on {self.device}", tabulate(table, headers=headers, disable_numparse=True)]
        if self.load_average:
            start, end = self.load_average
            lines.append(f"load average (1 min) at start {start:.2f}, at end {end:.2f}")
        return "\n".join(lines)


def run_benchmark(
    bridge: TransformerBridge,
    pairs: Sequence[PatchingPair],
    *,
    model: str,
    sites: Sequence[str] = BENCH_SWEEPS,
    progress: TextIO | None = sys.stderr,
    max_memory: int | None = None,
    reference: bool = True,
) -> BenchResult:
    """Time each sweep of `sites` (patching sites, "path", "curve") in seqprobe and in transformer_lens; compare them.

    The two tools alternate sweep by sweep, so a change in the machine's load during the run
    falls on both rather than on whichever ran second. `reference=False` times seqprobe alone
    (transformer_lens's fields are 0), for sizes where its sweeps would take too long.
    """
    device = str(bridge.cfg.device)
    load_at_start = load_average()

    def timed(tool: str, step: str, work: Callable[[], Any]) -> tuple[float, Any, int]:
        return timed_step(f"{tool}: {step}", work, device=device, progress=progress)

    clean = torch.stack([pair.clean for pair in pairs]).to(device)
    corrupted = torch.stack([pair.corrupted for pair in pairs]).to(device)
    with torch.inference_mode():
        bridge(corrupted)  # warm-up, for both tools: first calls pay one-off allocation costs

    prepared = patching_sites(sites)

    def reference_setup() -> tuple[Any, Any, float, float]:
        n_layers = bridge.cfg.n_layers
        with torch.inference_mode():
            clean_logits, clean_cache = bridge.run_with_cache(
                clean, names_filter=reference_hook_names(n_layers, prepared)
            )
            corrupted_logits, corrupted_cache = bridge.run_with_cache(
                corrupted, names_filter=corrupted_hook_names(n_layers, sites)
            )
            return (
                clean_cache,
                corrupted_cache,
                float(logit_diff_metric(clean_logits, pairs)),
                float(logit_diff_metric(corrupted_logits, pairs)),
            )

    setup = "setup (cache the runs)"
    ours_setup, runs, ours_peak = timed(
        "seqprobe",
        setup,
        lambda: prepare_patching(bridge, pairs, sites=prepared, max_memory=max_memory, paths=PATH_SWEEP in sites),
    )
    if not reference:
        rows = [SweepTiming("setup", ours_setup, 0.0, 0.0, ours_peak, 0)]
        for site in sites:
            ours, _, ours_peak = timed("seqprobe", f"{site} sweep", lambda site=site: runs.sweep(site).recovery)
            rows.append(SweepTiming(site, ours, 0.0, 0.0, ours_peak, 0))
        return BenchResult(model=model, device=device, rows=tuple(rows), load_average=load_span(load_at_start))
    theirs_setup, (clean_cache, corrupted_cache, clean_metric, corrupted_metric), theirs_peak = timed(
        "transformer_lens", setup, reference_setup
    )
    rows = [SweepTiming("setup", ours_setup, theirs_setup, 0.0, ours_peak, theirs_peak)]
    recoveries: dict[str, Tensor] = {}
    for site in sites:
        if site in (PATH_SWEEP, CURVE_SWEEP):
            # The path's sender and the curve's ranking come from the "z" sweep: the timed one, or one run untimed.
            if "z" not in recoveries:
                recoveries["z"] = runs.sweep("z").recovery
            z_recovery = recoveries["z"]
            timing = (
                path_row(bridge, pairs, runs, z_recovery=z_recovery, caches=(clean_cache, corrupted_cache), timed=timed)
                if site == PATH_SWEEP
                else curve_row(
                    bridge, pairs, z_recovery=z_recovery, cache=corrupted_cache, clean=clean_metric, timed=timed
                )
            )
            rows.append(SweepTiming(site, *timing))
            continue
        ours, grid, ours_peak = timed("seqprobe", f"{site} sweep", lambda site=site: runs.sweep(site).recovery)
        theirs, expected, theirs_peak = timed(
            "transformer_lens",
            f"{site} sweep",
            lambda site=site: reference_sweep(
                bridge,
                pairs,
                site,
                clean_cache=clean_cache,
                clean_metric=clean_metric,
                corrupted_metric=corrupted_metric,
            ),
        )
        recoveries[site] = grid
        rows.append(SweepTiming(site, ours, theirs, float((grid - expected).abs().max()), ours_peak, theirs_peak))
    return BenchResult(model=model, device=device, rows=tuple(rows), load_average=load_span(load_at_start))


def timed_step(step: str, work: Callable[[], Any], *, device: str, progress: TextIO | None) -> tuple[float, Any, int]:
    """Run `work` once: its wall time, its result and its peak memory above the start (bytes).

    Says when `step` starts and what it took on `progress`, so a long run shows where it is.
    """
    say(progress, f"{step} ...")
    with PeakMemory(device) as peak:
        start = _clock(device)
        result = work()
        seconds = _clock(device) - start
    say(progress, f"{step} took {seconds:.2f} s, {peak.peak_bytes / 1e6:.0f} MB above the start")
    return seconds, result, peak.peak_bytes


def say(progress: TextIO | None, message: str) -> None:
    if progress is not None:
        print(message, file=progress, flush=True)


def load_average() -> float | None:
    """The machine's 1-minute load average; None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on Windows
        return None


def load_span(start: float | None) -> tuple[float, float] | None:
    """(the load average at `start`, now), or None where the OS gives none."""
    end = load_average()
    return (start, end) if start is not None and end is not None else None


def max_resident_bytes() -> int | None:
    """The process's peak resident set size so far, in bytes; None where the OS does not say."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS counts bytes, Linux KiB


def _clock(device: str) -> float:
    """Wall time, after the device has finished the work queued so far."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter()
