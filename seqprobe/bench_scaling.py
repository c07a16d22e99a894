"""`seqprobe bench --pairs P --length N`: what the patching engine's sweeps cost as pairs and prompts grow.

The study's grid is one size (4 pairs of 9 tokens). A sweep stacks one *lane* per configuration ×
pair × computed position (`seqprobe.engine.memory`), each run from its patched sublayer to the
end, so time and memory should grow linearly in the pairs P, and in the length N through the ~N/2
positions after the substitution (for position sites also through their one configuration per
position). The runs here measure it; the README gives the table.

The prompts (`token_pairs`) are token-level, so they exist for any tokenizer and length, also for
a random model whose tokens spell no words:

- Pair i's clean prompt is the model's BOS (when its tokenizer has one, as the study's prompts
  start with it), then token ids drawn uniformly from the vocabulary's non-special ids by a
  generator seeded with `seed`, pair after pair: the first P pairs of a larger set are the P-pair
  set, and the same seed gives the same prompts.
- The corrupted prompt is the clean one with position N // 2 replaced by a different drawn id
  (the study's substitution sits there too: "Sunday" is token 4 of 9).
- The answer and distractor are the model's, per pair, from one run of both prompts: the answer
  is argmax over the vocabulary of (clean − corrupted final logits), the distractor its argmin.
  Each pair's metric gap is then the max minus the min of that difference: positive whenever
  the substitution changes the final logits at all, so recovery is defined.

transformer_lens runs beside seqprobe, as for the study's grid, unless it would take too long:
its sweep of a site is one full forward pass of the batch per cell, so its time is estimated as
(cells + 2) × one timed forward pass, and a run estimated over `REFERENCE_LIMIT_SECONDS` skips it
and says so (`--reference` runs it anyway, `--no-reference` never).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import torch

from seqprobe.bench import SweepTiming, load_average, load_span, max_resident_bytes, run_benchmark, say, timed_step
from seqprobe.engine.pairs import PatchingPair
from seqprobe.errors import PatchingError
from seqprobe.vocabulary.sites import HEAD_SITES, SITES

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from seqprobe.loading.models import LoadedModel

__all__ = [
    "DEFAULT_LENGTH",
    "DEFAULT_PAIRS",
    "REFERENCE_LIMIT_SECONDS",
    "ReferencePlan",
    "ScalingResult",
    "ScalingRun",
    "reference_cells",
    "run_scaling",
    "substituted_position",
    "token_pairs",
]

# A scaling run given only one of --pairs/--length takes the study's size for the other.
DEFAULT_PAIRS = 4
DEFAULT_LENGTH = 9
# transformer_lens runs by default only where its estimated time is at most this (seconds, per run).
REFERENCE_LIMIT_SECONDS = 600.0


def substituted_position(length: int) -> int:
    """Where a `length`-token pair's prompts differ: the middle, as in the study (4 of 9)."""
    return length // 2


def token_pairs(bridge: TransformerBridge, *, pairs: int, length: int, seed: int = 0) -> list[PatchingPair]:
    """`pairs` clean/corrupted pairs of exactly `length` tokens, built by the rule in the module docstring."""
    n_ctx = int(bridge.cfg.n_ctx)
    if pairs < 1 or not 2 <= length <= n_ctx:
        raise PatchingError(
            f"token pairs need pairs >= 1 and 2 <= length <= the model's context ({n_ctx}), got "
            f"pairs={pairs}, length={length}"
        )
    tokenizer = bridge.tokenizer
    special = set(tokenizer.all_special_ids) if tokenizer is not None else set()
    candidates = torch.tensor([i for i in range(int(bridge.cfg.d_vocab)) if i not in special])
    bos = tokenizer.bos_token_id if tokenizer is not None else None
    where = substituted_position(length)
    generator = torch.Generator().manual_seed(seed)
    n = len(candidates)
    clean, corrupted = [], []
    for _ in range(pairs):
        drawn = torch.randint(n, (length,), generator=generator)  # indices into candidates
        other = (drawn[where] + 1 + torch.randint(n - 1, (), generator=generator)) % n  # never drawn[where]
        prompt = candidates[drawn]
        if bos is not None:
            prompt[0] = bos
        clean.append(prompt)
        corrupted.append(prompt.clone())
        corrupted[-1][where] = candidates[other]
    with torch.inference_mode():
        tokens = torch.stack(clean + corrupted).to(bridge.cfg.device)  # [2·pair pos]
        final = bridge(tokens)[:, -1].float().cpu()  # [2·pair vocab]
    difference = final[:pairs] - final[pairs:]  # [pair vocab]: what the substitution takes away
    answers, distractors = difference.argmax(-1).tolist(), difference.argmin(-1).tolist()
    return [
        PatchingPair(clean=c, corrupted=k, answer_ids=(a,), distractor_ids=(d,))
        for c, k, a, d in zip(clean, corrupted, answers, distractors, strict=True)
    ]


def reference_cells(bridge: TransformerBridge, site: str, *, length: int) -> int:
    """How many patched forward passes transformer_lens's sweep of `site` makes on `length`-token prompts."""
    cfg = bridge.cfg
    if site not in HEAD_SITES:
        return int(cfg.n_layers) * length
    heads = getattr(cfg, "n_key_value_heads", None) if site == "v" else None
    return int(cfg.n_layers) * int(heads or cfg.n_heads)


@dataclass(frozen=True)
class ReferencePlan:
    """Whether transformer_lens runs beside seqprobe for one (pairs, length), and why."""

    ran: bool
    # (cells + 2) × one timed forward pass of the corrupted batch: its sweeps are that many passes.
    estimated_seconds: float
    reason: str


@dataclass(frozen=True)
class ScalingRun:
    pairs: int
    length: int
    substituted: int
    # "setup" (the cached runs) first, then one row per sweep; transformer_lens's fields are 0
    # where it did not run (`reference.ran`), and null in the JSON.
    rows: tuple[SweepTiming, ...]
    reference: ReferencePlan
    # The process's peak resident set so far (model, runs, everything), from getrusage; None off POSIX.
    max_resident_bytes: int | None

    @property
    def seqprobe_seconds(self) -> float:
        return sum(row.seqprobe_seconds for row in self.rows)

    @property
    def peak_memory_bytes(self) -> int:
        return max(row.seqprobe_peak_memory_bytes for row in self.rows)

    @property
    def transformer_lens_seconds(self) -> float | None:
        return sum(row.transformer_lens_seconds for row in self.rows) if self.reference.ran else None

    @property
    def max_abs_diff(self) -> float | None:
        return max(row.max_abs_diff for row in self.rows) if self.reference.ran else None

    def to_json(self) -> dict[str, Any]:
        ran, theirs = self.reference.ran, self.transformer_lens_seconds
        return {
            "pairs": self.pairs,
            "length": self.length,
            "substituted_position": self.substituted,
            "seqprobe_seconds": self.seqprobe_seconds,
            "peak_memory_bytes": self.peak_memory_bytes,
            "max_resident_bytes": self.max_resident_bytes,
            "transformer_lens_seconds": theirs,
            "speedup": theirs / self.seqprobe_seconds if theirs is not None else None,
            "max_abs_diff": self.max_abs_diff,
            "transformer_lens": {
                "ran": ran,
                "estimated_seconds": self.reference.estimated_seconds,
                "reason": self.reference.reason,
            },
            "sweeps": {
                row.site: {
                    "seqprobe_seconds": row.seqprobe_seconds,
                    "peak_memory_bytes": row.seqprobe_peak_memory_bytes,
                    "transformer_lens_seconds": row.transformer_lens_seconds if ran else None,
                    "speedup": row.transformer_lens_seconds / row.seqprobe_seconds if ran else None,
                    "max_abs_diff": row.max_abs_diff if ran else None,
                    "transformer_lens_peak_memory_bytes": row.transformer_lens_peak_memory_bytes if ran else None,
                }
                for row in self.rows
            },
        }


@dataclass(frozen=True)
class ScalingResult:
    model: str
    # ModelInfo's source and dtype: which weights, in what precision.
    source: str
    dtype: str
    device: str
    parameters: int
    parameter_bytes: int
    sites: tuple[str, ...]
    seed: int
    # The --max-memory budget of each sweep's stacked batch in bytes; None: half the free memory.
    max_memory: int | None
    runs: tuple[ScalingRun, ...]
    # The 1-minute load average at the start and the end (see bench.BenchResult).
    load_average: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "dtype": self.dtype,
            "device": self.device,
            "parameters": self.parameters,
            "parameter_bytes": self.parameter_bytes,
            "sites": list(self.sites),
            "prompts": f"token-level pairs, seed {self.seed} (seqprobe.bench_scaling.token_pairs)",
            "max_memory": self.max_memory,
            "load_average": list(self.load_average) if self.load_average else None,
            "runs": [run.to_json() for run in self.runs],
        }

    def format(self) -> str:
        from tabulate import tabulate

        table = []
        for run in self.runs:
            total = SweepTiming(
                "total", run.seqprobe_seconds, run.transformer_lens_seconds or 0.0, run.max_abs_diff or 0.0,
                run.peak_memory_bytes,
            )  # fmt: skip
            for row in (*run.rows, total):
                ours, theirs, peak = row.seqprobe_seconds, row.transformer_lens_seconds, row.seqprobe_peak_memory_bytes
                reference = [f"{theirs:.2f}", f"{theirs / ours:.1f}x", f"{row.max_abs_diff:.1e}"]
                reference = reference if run.reference.ran else ["-"] * 3
                table.append([run.pairs, run.length, row.site, f"{ours:.2f}", f"{peak / 1e6:.0f}", *reference])
        headers = ["pairs", "length", "sweep", "seqprobe s", "peak MB", "transformer_lens s", "speedup", "max |diff|"]
        lines = [
            f"{self.model} on {self.device}, {self.dtype}, {self.parameters / 1e6:.1f}M parameters "
            f"({self.parameter_bytes / 1e6:.0f} MB); token-level pairs, seed {self.seed}",
            tabulate(table, headers=headers, disable_numparse=True),
        ]
        lines += [
            f"pairs={run.pairs} length={run.length}: transformer_lens {run.reference.reason}"
            for run in self.runs
            if not run.reference.ran
        ]
        resident = [run.max_resident_bytes for run in self.runs if run.max_resident_bytes is not None]
        if resident:
            lines.append(f"process peak resident set: {max(resident) / 1e6:.0f} MB (model and all)")
        if self.load_average:
            start, end = self.load_average
            lines.append(f"load average (1 min) at start {start:.2f}, at end {end:.2f}")
        return "\n".join(lines)


def run_scaling(
    loaded: LoadedModel,
    *,
    pairs: Sequence[int],
    lengths: Sequence[int],
    sites: Sequence[str] = SITES,
    reference: bool | None = None,
    max_memory: int | None = None,
    seed: int = 0,
    progress: TextIO | None = sys.stderr,
) -> ScalingResult:
    """Time seqprobe's sweeps of `sites` for every (pairs, length), and transformer_lens's where `reference` allows.

    `reference` None runs transformer_lens where its estimated time is at most
    `REFERENCE_LIMIT_SECONDS`; True always, False never.
    """
    bridge = loaded.bridge
    load_at_start = load_average()
    runs = []
    for n_pairs, length in itertools.product(pairs, lengths):
        say(progress, f"pairs={n_pairs} length={length}:")
        built = token_pairs(bridge, pairs=n_pairs, length=length, seed=seed)
        plan = _reference_plan(bridge, built, sites=sites, reference=reference, progress=progress)
        if not plan.ran:
            say(progress, f"transformer_lens {plan.reason}")
        rows = run_benchmark(
            bridge, built, model=loaded.info.name, sites=sites, progress=progress, max_memory=max_memory,
            reference=plan.ran,
        ).rows  # fmt: skip
        runs.append(ScalingRun(n_pairs, length, substituted_position(length), rows, plan, max_resident_bytes()))
    parameters = list(bridge.original_model.parameters())
    return ScalingResult(
        model=loaded.info.name,
        source=loaded.info.source,
        dtype=loaded.info.dtype,
        device=str(bridge.cfg.device),
        parameters=sum(p.numel() for p in parameters),
        parameter_bytes=sum(p.numel() * p.element_size() for p in parameters),
        sites=tuple(sites),
        seed=seed,
        max_memory=max_memory,
        runs=tuple(runs),
        load_average=load_span(load_at_start),
    )


def _reference_plan(
    bridge: TransformerBridge,
    pairs: Sequence[PatchingPair],
    *,
    sites: Sequence[str],
    reference: bool | None,
    progress: TextIO | None,
) -> ReferencePlan:
    device = str(bridge.cfg.device)
    corrupted = torch.stack([pair.corrupted for pair in pairs]).to(device)  # [pair pos]
    with torch.inference_mode():
        bridge(corrupted)  # warm-up: the first call pays one-off allocation costs
        # The faster of two passes: other work on the machine inflates one pass more often than two.
        forward = min(
            timed_step("one forward pass", lambda: bridge(corrupted), device=device, progress=progress)[0]
            for _ in range(2)
        )
    cells = sum(reference_cells(bridge, site, length=corrupted.shape[1]) for site in sites)
    estimate = (cells + 2) * forward
    passes = f"{cells} patched forward passes of {_seconds(forward)} and the 2 cached runs"
    if reference is False:
        return ReferencePlan(False, estimate, f"skipped (--no-reference); estimated {_seconds(estimate)}: {passes}")
    if reference is None and estimate > REFERENCE_LIMIT_SECONDS:
        return ReferencePlan(
            False,
            estimate,
            f"skipped: estimated {_seconds(estimate)} ({passes}), over the {REFERENCE_LIMIT_SECONDS:.0f} s limit; "
            "--reference runs it anyway",
        )
    return ReferencePlan(True, estimate, f"ran (estimated {_seconds(estimate)}: {passes})")


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2f} s"
