"""The pictures of a case's circuit claims, each saying which ablation or path it was measured under.

- one heatmap per path sweep a claim reads: the recovery when the senders' write reaches each later
  head's query, key or value input alone (receiver layer × head; rows not after the senders are
  blank, as no such path exists);
- the direct path of every head to the logits (through the final norm frozen at the corrupted
  run's scale), the ranking a curve may use;
- one faithfulness curve per curve claim: the top-k components of its ranking kept as the circuit,
  k = 1..K, with each point's interval over the pairs, and the area (mean faithfulness) in the title.

Like the other figures (seqprobe.checks.figures), these are specifications drawn when a report is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seqprobe.checks.figures import layer_labels, rows
from seqprobe.checks.judging import only_column, recovery_interval
from seqprobe.records.figure_specs import HeatmapSpec, LineSpec
from seqprobe.records.intervals import DEFAULT_LEVEL
from seqprobe.vocabulary.heads import format_head

if TYPE_CHECKING:
    from seqprobe.casefiles.circuits import AblationSpec
    from seqprobe.checks.circuits import CircuitEvidence, Curve

__all__ = ["ablation_words", "circuit_figures"]

_INPUT_WORDS = {"q": "query", "k": "key", "v": "value"}


def circuit_figures(evidence: CircuitEvidence, *, level: float = DEFAULT_LEVEL) -> list[dict[str, Any]]:
    """The circuit claims' pictures as JSON specs."""
    n_pairs = len(evidence.runs.pairs)
    specs: list[Any] = []
    for (senders, input_), sweep in evidence.path_sweeps.items():
        names = "+".join(format_head(*head) for head in senders)
        specs.append(
            HeatmapSpec(
                name=f"path_{names}_{input_}",
                title=(
                    f"Path patching from {names} into each later head's {_INPUT_WORDS[input_]} input: recovery "
                    f"({n_pairs} pairs; every other reader sees the corrupted run)"
                ),
                values=rows(sweep.recovery),
                row_labels=layer_labels(sweep.recovery.shape[0]),
                col_labels=sweep.labels,
                x_label="Receiver head",
                y_label="Receiver layer",
                colorbar_label="recovery",
            )
        )
    if evidence.path_logits is not None:
        grid = evidence.path_logits.recovery
        specs.append(
            HeatmapSpec(
                name="path_logits",
                title=(
                    f"Direct path of each head to the logits: recovery ({n_pairs} pairs; through the final norm "
                    "frozen at the corrupted run's scale, not through later layers)"
                ),
                values=rows(grid),
                row_labels=layer_labels(grid.shape[0]),
                col_labels=evidence.path_logits.labels,
                x_label="Sender head",
                y_label="Sender layer",
                colorbar_label="recovery",
            )
        )
    # One curve per ranking and ablation: a shorter curve's points are the longest one's first.
    longest: dict[tuple[str, AblationSpec], tuple[str, Curve]] = {}
    for claim, curve in evidence.curves.items():
        key = (claim.ranking, curve.ablation)
        if key not in longest or len(curve.ranking) > len(longest[key][1].ranking):
            longest[key] = (claim.ranking, curve)
    specs += [_curve(ranking, curve, level=level) for ranking, curve in longest.values()]
    return [spec.to_json() for spec in specs]


def _curve(ranking: str, curve: Curve, *, level: float) -> LineSpec:
    circuit_runs = curve.runs
    patched = curve.metric.T  # [k pair] -> [pair k]
    fractions = circuit_runs.fraction(curve.metric.mean(-1))  # [k]
    intervals = [
        recovery_interval(
            patched[:, k : k + 1], circuit_runs.full_pairs, circuit_runs.empty_pairs, reduce=only_column, level=level
        )
        for k in range(patched.shape[1])
    ]
    by = {"z": "z patching", "path_logits": "direct path to the logits"}[ranking]
    return LineSpec(
        # A group's cases share one ablation, which a claim changes only by its method: unique names.
        name=f"faithfulness_{ranking}_{curve.ablation.method}",
        title=(
            f"Faithfulness of the top-k heads by {by}: area {float(fractions.mean()):.3f}, {level:.0%} interval over "
            f"{patched.shape[0]} pair(s) — {ablation_words(curve.ablation)}"
        ),
        x_labels=tuple(f"{k + 1} +{component.name}" for k, component in enumerate(curve.ranking)),
        values=tuple(float(v) for v in fractions),
        low=tuple(i.low for i in intervals),
        high=tuple(i.high for i in intervals),
        x_label="k: the circuit is the top k (the head each step adds)",
        y_label="faithfulness",
    )


def ablation_words(ablation: AblationSpec) -> str:
    """How the components outside a circuit were switched off, as a figure's caption says it."""
    if ablation.method == "resample":
        how = "resample ablation (each pair's corrupted-run activation)"
    elif ablation.method == "zero":
        how = "zero ablation"
    else:
        reference = ablation.reference
        source = (
            "the case's corrupted prompts"
            if reference is None or reference.from_corrupted
            else f"{len(reference.prompts)} reference prompts"
        )
        how = f"mean ablation over {source}, position by position"
    return f"{how}; scope: {ablation.scope}"
