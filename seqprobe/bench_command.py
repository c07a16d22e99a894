"""The `seqprobe bench` command: its arguments, and which benchmark they ask for.

Without --pairs/--length: the study's grid, its path sweep and its faithfulness curve against
transformer_lens (`seqprobe.bench`, `seqprobe.bench_paths`, `seqprobe.bench_curves`). With them, or
on a random-weight model: the patching sweeps' cost on token-level pairs (`seqprobe.bench_scaling`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from seqprobe.bench_curves import CURVE_SWEEP
from seqprobe.bench_paths import BENCH_SWEEPS, PATH_SWEEP
from seqprobe.bench_scaling import DEFAULT_LENGTH, DEFAULT_PAIRS, REFERENCE_LIMIT_SECONDS
from seqprobe.vocabulary.options import DTYPE, add_max_memory_option, add_model_options
from seqprobe.vocabulary.sites import SITES

__all__ = ["add_scaling_options", "bench_parser", "is_scaling_run", "main"]


def bench_parser() -> argparse.ArgumentParser:
    """`seqprobe bench`'s arguments; --dtype defaults to None (float32, or a random model's own dtype)."""
    from seqprobe.loading.random_models import RANDOM_MODELS

    randoms = "; ".join(
        f"{name}: {shape.description}, {shape.dtype} unless --dtype" for name, shape in RANDOM_MODELS.items()
    )
    parser = argparse.ArgumentParser(
        prog="seqprobe bench",
        description="Run the study's patching grid with seqprobe and with transformer_lens.patching; "
        "print both wall times, the speedup and the largest difference between their results. With "
        "--pairs/--length, time the sweeps on token-level pairs of that size instead.",
        epilog=f"Random-weight models for --model (token-level pairs only): {randoms}.",
    )
    add_model_options(parser.add_argument)
    parser.set_defaults(dtype=None)
    add_max_memory_option(parser.add_argument)
    parser.add_argument(
        "--sites", type=_sites, default=BENCH_SWEEPS, metavar="SITE[,SITE...]",
        help=f"the sweeps to time, from {','.join(BENCH_SWEEPS)} (default: all; {PATH_SWEEP!r}, the direct path "
        f"sweep, and {CURVE_SWEEP!r}, the faithfulness curve, run on the study's grid only, so --pairs/--length runs "
        "leave them out)",
    )  # fmt: skip
    add_scaling_options(parser.add_argument)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--out", metavar="PATH", help="also write the JSON object to PATH (folders are created)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`seqprobe bench [--model NAME] [--device DEV] [--dtype DTYPE] [--max-memory SIZE] [--sites S,...]
    [--pairs P,... --length N,... [--[no-]reference]] [--json] [--out PATH]`.

    Without --pairs/--length: the study's grid against transformer_lens (`run_benchmark`). With
    them, or on a random model: the cost of the sweeps on token-level pairs (`seqprobe.bench_scaling`).
    """
    from seqprobe.bench import run_benchmark, study_pairs
    from seqprobe.bench_scaling import run_scaling
    from seqprobe.errors import SeqprobeError
    from seqprobe.loading.models import load_model
    from seqprobe.loading.random_models import is_random_model, load_random_model
    from seqprobe.records.atomic import write_text_atomic

    parser = bench_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    scaling = is_scaling_run(args)
    if args.reference is not None and not scaling:
        parser.error(
            "--reference/--no-reference apply to --pairs/--length runs; the study's grid always runs both tools"
        )
    sites = tuple(site for site in args.sites if site in SITES) if scaling else args.sites
    result: Any
    try:
        if is_random_model(args.model):
            loaded = load_random_model(args.model, device=args.device, dtype=args.dtype)
        else:
            loaded = load_model(
                args.model, device=args.device, dtype=args.dtype or DTYPE.default, device_map=args.device_map
            )
        if scaling:
            result = run_scaling(
                loaded, pairs=args.pairs or (DEFAULT_PAIRS,), lengths=args.length or (DEFAULT_LENGTH,),
                sites=sites, reference=args.reference, max_memory=args.max_memory,
            )  # fmt: skip
        else:
            pairs = study_pairs(loaded.bridge)
            result = run_benchmark(loaded.bridge, pairs, model=args.model, sites=sites, max_memory=args.max_memory)
    except SeqprobeError as error:
        print(f"seqprobe bench: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    data = json.dumps(result.to_json(), indent=2)
    if args.out:
        write_text_atomic(args.out, data + "\n")
    print(data if args.json else result.format())
    return 0


def _sites(text: str) -> tuple[str, ...]:
    """--sites z,resid_pre -> ("z", "resid_pre"), each checked against the benchmark's sweeps."""
    from seqprobe.casefiles.validation import suggest

    sites = tuple(part.strip() for part in text.split(","))
    for site in sites:
        if site not in BENCH_SWEEPS:
            raise argparse.ArgumentTypeError(
                f"unknown site {site!r}{suggest(site, BENCH_SWEEPS)}; choose from {','.join(BENCH_SWEEPS)}"
            )
    return sites


def is_scaling_run(args: argparse.Namespace) -> bool:
    """A run on token-level pairs: asked for with --pairs/--length, or forced by a random model (no words)."""
    from seqprobe.loading.random_models import is_random_model

    return args.pairs is not None or args.length is not None or is_random_model(args.model)


def add_scaling_options(add_argument: Any) -> None:
    """--pairs, --length and --reference/--no-reference, through `ArgumentParser.add_argument`."""
    add_argument(
        "--pairs",
        type=_counts,
        metavar="P[,P...]",
        help="time sweeps on P token-level clean/corrupted pairs instead of the study's grid; "
        f"several values run each (default with --length: {DEFAULT_PAIRS})",
    )
    add_argument(
        "--length",
        type=_counts,
        metavar="N[,N...]",
        help=f"the pairs' prompt length in tokens; several values run each (default with --pairs: {DEFAULT_LENGTH})",
    )
    add_argument(
        "--reference",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --pairs/--length, run transformer_lens beside seqprobe (--no-reference: never); by default "
        f"it runs where its estimated time is at most {REFERENCE_LIMIT_SECONDS:.0f} s, and the output says so",
    )


def _counts(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    counts = tuple(int(part) for part in parts if part.strip().isdigit())
    if len(counts) != len(parts) or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive whole numbers separated by commas, e.g. 4,8,16; got {text!r}"
        )
    return counts
