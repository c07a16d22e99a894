"""The `seqprobe` command: quick looks at a prompt, benchmarks, reports and run comparisons.

    seqprobe prompt "Today it is Sunday, tomorrow it is" " Monday" [--distractor " Sunday"] [--model NAME]
    seqprobe prompt "The capital of Argentina is" " Buenos Aires" [--distractor " Lima"]
    seqprobe report [CASES ...] [--out reports/NAME.md] [--model NAME] [-- PYTEST ARGS]
    seqprobe compare OLD.json NEW.json [--out diff.md]
    seqprobe bench [--model NAME] [--device DEV] [--json] [--pairs P,... --length N,... --sites z,...]
    seqprobe ablate MODEL L23H3 [L6H1 ...] --out FOLDER

Each subcommand imports what it needs when it runs, so `seqprobe --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from seqprobe.errors import SeqprobeError
from seqprobe.vocabulary.options import add_model_options

if TYPE_CHECKING:
    from seqprobe.engine.continuations import ScoredCompletion

__all__ = ["main"]


def _prompt(args: argparse.Namespace) -> int:
    from seqprobe.checks.completion import format_scored
    from seqprobe.engine.continuations import prepare_completion, score_continuations
    from seqprobe.loading.models import load_model

    model = load_model(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map)
    prepared = prepare_completion(model.bridge, args.prompt, args.answer, args.distractor, where="prompt")
    (scored,) = score_continuations(model.bridge, [prepared], top_k=args.top_k)
    print(format_scored(scored))
    if args.distractor:
        print("\nAs a case:")
        print(_case_snippet(args.prompt, args.answer, args.distractor, scored))
    # Greedy decoding gives the answer: for a one-token answer, rank 1.
    return 0 if scored.greedy else 1


def _case_snippet(prompt: str, answer: str, distractors: Sequence[str], scored: ScoredCompletion) -> str:
    quoted = ", ".join(f'"{d}"' for d in distractors)
    if len(scored.answer.steps) == 1:
        measured = f"rank on this model: {scored.next_token.rank}"
    else:
        greedy = "gives" if scored.greedy else "misses"
        measured = f"on this model: logprob {scored.answer.logprob:.2f}; greedy decoding {greedy} the answer"
    return (
        f'  - id: my-case\n    prompt: "{prompt}"\n    answer: "{answer}"\n    distractors: [{quoted}]'
        f"\n    # measured {measured}"
    )


def _report(args: argparse.Namespace, pytest_args: list[str]) -> int:
    import pytest

    return int(
        pytest.main(
            [
                *args.cases,
                "--model",
                args.model,
                "--device",
                args.device,
                "--dtype",
                args.dtype,
                "--report",
                args.out,
                *pytest_args,
            ]
        )
    )


def _ablate(args: argparse.Namespace) -> int:
    from seqprobe.ablation import save_ablated_copy

    out = save_ablated_copy(args.model, args.heads, args.out)
    print(f"wrote {out}: {args.model} with {', '.join(args.heads)} zero-ablated; test it with --model {out}")
    return 0


def _compare(argv: list[str]) -> int:
    from seqprobe.records.compare import compare_main

    return compare_main(argv)


def _bench(argv: list[str]) -> int:
    from seqprobe.bench_command import main as bench_main

    return bench_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="seqprobe", description="Test what a language model can do, and how it does it."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    prompt = commands.add_parser(
        "prompt", help="show how the model scores an answer after a prompt (the quickest way to write a case)"
    )
    prompt.add_argument("prompt", help='e.g. "Today it is Sunday, tomorrow it is"')
    prompt.add_argument("answer", help='the expected continuation, with its leading space: " Monday", " Buenos Aires"')
    prompt.add_argument(
        "--distractor", action="append", default=[], help="a wrong continuation to compare against (repeatable)"
    )
    prompt.add_argument("--top-k", type=int, default=10, help="how many top predictions to show (default: 10)")
    add_model_options(prompt.add_argument)

    report = commands.add_parser(
        "report", help="run case files and write a markdown capability report (extra pytest args after --)"
    )
    report.add_argument("cases", nargs="*", default=["cases/"], help="case files or folders (default: cases/)")
    report.add_argument("--out", default=None, help="report path (default: reports/MODEL.md)")
    add_model_options(report.add_argument)

    ablate = commands.add_parser(
        "ablate", help="save a copy of a model with attention heads zeroed (a damaged model for baselines)"
    )
    ablate.add_argument("model", help="model name, hub name or folder, as for --model")
    ablate.add_argument("heads", nargs="+", help="heads to zero, e.g. L23H3")
    ablate.add_argument("--out", required=True, help="new folder for the copy (must not exist, or be empty)")

    commands.add_parser("compare", help="diff two results files; exits 1 when anything regressed", add_help=False)
    commands.add_parser(
        "bench",
        help="time seqprobe's patching engine against transformer_lens.patching, or its cost as pairs and "
        "prompt length grow (--pairs/--length)",
        add_help=False,
    )

    if argv and argv[0] in ("compare", "bench"):
        return {"compare": _compare, "bench": _bench}[argv[0]](argv[1:])
    pytest_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    try:
        if args.command == "prompt":
            return _prompt(args)
        if args.command == "ablate":
            return _ablate(args)
        args.out = args.out or f"reports/{args.model.replace('/', '_')}.md"
        return _report(args, pytest_args)
    except SeqprobeError as error:
        print(f"seqprobe: {type(error).__name__}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
