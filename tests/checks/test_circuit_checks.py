"""Circuit claims checked on a tiny model: each verdict reads the engine's number, batched once per ablation."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
import torch

from seqprobe.casefiles.patching import PatchingCase
from seqprobe.casefiles.reader import parse_case_file
from seqprobe.checks.patching import check_claim, gather_evidence
from seqprobe.engine.circuits import CircuitRuns
from seqprobe.engine.patching import make_pair
from seqprobe.errors import TokenizationError
from seqprobe.vocabulary.circuits import Component

pytestmark = pytest.mark.filterwarnings("ignore")

PATH = "c.seqprobe.yaml"
CASE = """
sequences:
  later: {{pool: [Monday, Tuesday, Wednesday, Thursday, Friday]}}
suites:
  s:
    cases:
      - kind: patching
        id: days
        over: {{day: days}}
        prompt: "Today it is {{day}}, tomorrow it is"
        answer: " {{day+1}}"
        corrupt: {{day: 2}}
        ablation: {ablation}
        circuits:
          late: [L2H1, L2H3]
        claims:
{claims}
"""
CLAIMS = [
    "path: {from: L1H0, to: logits, min_recovery: -100}",
    "path: {from: [L0H1, L1H0], to: {heads: [L2H1, L2H3], input: q}, min_recovery: -100}",
    "path: {from: L1H0, to: {head: L2KV1, input: v}, top_k: 4}",
    "ablate: {components: [L2H1], direction: noising, max_fraction: 100}",
    "ablate: {components: [L2H1, L1H2], direction: denoising, at: final, min_fraction: -100}",
    "faithfulness: {circuit: late, min_faithfulness: -100}",
    "necessity: {circuit: late, max_fraction: 100}",
    "faithfulness_curve: {ranking: z, max_k: 5, min_area: -100}",
]


def parse(claims: list[str], *, ablation: str = "{method: resample, scope: heads}") -> PatchingCase:
    body = "".join(f"          - {claim}\n" for claim in claims)
    (case,) = parse_case_file(textwrap.dedent(CASE).format(ablation=ablation, claims=body), path=PATH).cases()
    assert isinstance(case, PatchingCase)
    return case


def pairs_of(bridge, case: PatchingCase):  # type: ignore[no-untyped-def]
    return [
        make_pair(bridge, clean=p.clean, corrupted=p.corrupted, answer=p.answer, distractor=p.distractor)
        for p in case.pairs
    ]


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_each_circuit_claim_reads_the_engine_number_under_its_name(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    case = parse(CLAIMS)
    pairs = pairs_of(sharp_bridge, case)
    evidence = gather_evidence(sharp_bridge, pairs, case.claims, ablation=case.ablation)
    verdicts = [check_claim(claim, evidence) for claim in case.claims]
    assert [v.metric for v in verdicts] == [
        "recovery:path:L1H0->logits",
        "recovery:path:L0H1+L1H0->L2H1+L2H3.q",
        "rank:path:L1H0->L2KV1.v",
        "fraction:noising:L2H1@all/resample",
        "fraction:denoising:L2H1+L1H2@final/resample",
        "faithfulness:late/resample",
        "fraction:noising:late/resample",
        "curve_area:z[1..5]/resample",
    ]
    assert all(v.passed for v in verdicts)
    runs = evidence.runs

    def recovered(patched: torch.Tensor) -> float:
        return float((patched.mean() - runs.corrupted_metric) / (runs.clean_metric - runs.corrupted_metric))

    assert verdicts[0].value == pytest.approx(recovered(runs.path_pairs(((1, 0),), input="logits")), abs=1e-6)
    together = runs.path_pairs(((0, 1), (1, 0)), input="q", receivers=((2, 1), (2, 3)))
    assert verdicts[1].value == pytest.approx(recovered(together), abs=1e-6)
    sweep = runs.path_sweep(((1, 0),), "v")
    assert torch.isnan(sweep.recovery[:2]).all() and not torch.isnan(sweep.recovery[2]).any()

    circuit_runs = CircuitRuns(sharp_bridge, pairs, method="resample", scope="heads")
    late = [Component(2, "head", 1), Component(2, "head", 3)]
    noised = circuit_runs.ablated([[Component(2, "head", 1)], late], direction="noising")
    assert verdicts[3].value == pytest.approx(float(circuit_runs.fraction(noised[0].mean())), abs=1e-5)
    assert verdicts[6].value == pytest.approx(float(circuit_runs.fraction(noised[1].mean())), abs=1e-5)
    (kept,) = circuit_runs.evaluate([late])
    assert verdicts[5].value == pytest.approx(float(circuit_runs.fraction(kept.mean())), abs=1e-5)
    # Noising lowers the clean behaviour: its bars are upper bounds.
    assert [v.lower_is_better for v in verdicts] == [False, False, True, True, False, False, True, False]
    assert all(v.interval is not None for v in verdicts)


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_every_circuit_of_a_case_runs_in_one_batch(sharp_bridge, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The faithfulness claims' circuits and the curve's 5 prefixes: one `evaluate`, as many circuits."""
    calls: list[int] = []
    evaluate = CircuitRuns.evaluate

    def counted(self, circuits):  # type: ignore[no-untyped-def]
        calls.append(len(circuits))
        return evaluate(self, circuits)

    monkeypatch.setattr(CircuitRuns, "evaluate", counted)
    case = parse(CLAIMS[5:])
    gather_evidence(sharp_bridge, pairs_of(sharp_bridge, case), case.claims, ablation=case.ablation)
    assert calls == [6]


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_a_claim_naming_another_method_gets_its_own_scale(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    case = parse(
        [
            "ablate: {components: [L2H1], direction: noising, max_fraction: 100}",
            "ablate: {components: [L2H1], direction: noising, max_fraction: 100, method: zero}",
        ]
    )
    pairs = pairs_of(sharp_bridge, case)
    evidence = gather_evidence(sharp_bridge, pairs, case.claims, ablation=case.ablation)
    resample, zero = (check_claim(claim, evidence) for claim in case.claims)
    assert (resample.metric, zero.metric) == ("fraction:noising:L2H1@all/resample", "fraction:noising:L2H1@all/zero")
    zeroed = CircuitRuns(sharp_bridge, pairs, method="zero", scope="heads")
    (metric,) = zeroed.ablated([[Component(2, "head", 1)]], direction="noising")
    assert zero.value == pytest.approx(float(zeroed.fraction(metric.mean())), abs=1e-5)
    assert "zero ablation" in zero.detail and "resample ablation" in resample.detail


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_mean_reference_of_another_length_names_its_file_and_line(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    ablation = '{method: mean, reference: {prompt: "Today it is {d}, and tomorrow it is", over: {d: later}}}'
    case = parse([CLAIMS[3]], ablation=ablation)
    with pytest.raises(TokenizationError) as excinfo:
        gather_evidence(sharp_bridge, pairs_of(sharp_bridge, case), case.claims, ablation=case.ablation)
    message = str(excinfo.value)
    assert message.startswith(f"{PATH}:13: ")
    assert "must be as long as the pairs' prompts (" in message and "5 of 5 are not" in message


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_circuit_claims_through_the_plugin_draw_their_figures(pytester: pytest.Pytester, sharp_model_dir: Path) -> None:
    case = textwrap.dedent(CASE).format(
        ablation='{method: mean, reference: {prompt: "Today it is {d}, tomorrow it is", over: {d: later}}}',
        claims="".join(
            f"          - {claim}\n"
            for claim in [CLAIMS[0], CLAIMS[2], "faithfulness: {circuit: late, min_faithfulness: 2.0}", CLAIMS[7]]
        ),
    )
    pytester.makefile(".seqprobe.yaml", c=case)
    result = pytester.runpytest("--model", str(sharp_model_dir), "--report", "r.md", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "  failed: circuit late (L2H1+L2H3) alone, the other heads ablated (mean), is ≥ 2 faithful: circuit late "
            "alone keeps * of the clean behaviour (0 = scope heads switched off, metric *; 1 = the clean model, *; "
            "mean ablation)*",
        ]
    )
    figures = sorted(path.name for path in (pytester.path / "r_files").glob("*.png"))
    assert any("path_L1H0_v" in name for name in figures)
    assert any("path_logits" in name for name in figures)
    assert any("faithfulness_z_mean" in name for name in figures)


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_a_claim_on_a_head_the_model_lacks_fails_alone(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    """Head names are model-specific: a claim naming L7H0 on a 3-layer model fails, the others are measured."""
    case = parse(
        [
            "path: {from: L7H0, to: logits, min_recovery: 0.3}",
            "necessity: {components: [L1H9], max_fraction: 0.5}",
            CLAIMS[0],
        ]
    )
    evidence = gather_evidence(sharp_bridge, pairs_of(sharp_bridge, case), case.claims, ablation=case.ablation)
    missing_path, missing_head, measured = (check_claim(claim, evidence) for claim in case.claims)
    assert (missing_path.metric, missing_path.passed, math.isnan(missing_path.value)) == (
        "recovery:path:L7H0->logits",
        False,
        True,
    )
    assert missing_path.detail.startswith("this model has no L7H0: it has layers 0..2 and 4 heads (0..3)")
    assert missing_head.metric == "fraction:noising:L1H9/resample" and missing_head.lower_is_better
    assert "this model has no L1H9" in missing_head.detail
    assert measured.passed and not math.isnan(measured.value)


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_a_value_receiver_written_as_a_query_head_fails_on_a_grouped_query_model(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    """On grouped-query models a key/value receiver is a key/value head; L2H1 would silently mean L2KV1."""
    case = parse(["path: {from: L1H0, to: {head: L2H1, input: v}, top_k: 4}", CLAIMS[0]])
    evidence = gather_evidence(sharp_bridge, pairs_of(sharp_bridge, case), case.claims, ablation=case.ablation)
    written_as_query, measured = (check_claim(claim, evidence) for claim in case.claims)
    assert not written_as_query.passed and math.isnan(written_as_query.value)
    assert "a v receiver is a key/value head: write it L<layer>KV<head> (e.g. L1KV0)" in written_as_query.detail
    assert measured.passed


def test_every_circuit_metric_has_a_family_with_a_tolerance() -> None:
    """Baselines compare each metric within its family's tolerance: a circuit metric must have one."""
    from seqprobe.checks.circuit_verdicts import metric_name
    from seqprobe.vocabulary.metrics import DEFAULT_TOLERANCES, metric_family

    case = parse(CLAIMS)
    families = {metric_family(metric_name(claim, method="mean")) for claim in case.claims}
    assert families == {"recovery", "rank", "fraction", "faithfulness", "curve_area"}
    assert families <= set(DEFAULT_TOLERANCES)


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_circuit_claims_from_python(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    """`expect_patching` takes a case file's keys, the ablation and named circuits included."""
    from seqprobe import ExpectationFailed, expect_patching

    entry = {
        "over": {"day": "days"},
        "prompt": "Today it is {day}, tomorrow it is",
        "answer": " {day+1}",
        "corrupt": {"day": 2},
        "ablation": {"method": "zero"},
        "circuits": {"late": ["L2H1", "L2H3"]},
    }
    outcome = expect_patching(
        sharp_bridge,
        claims=[
            {"faithfulness": {"circuit": "late", "min_faithfulness": -100}},
            {"path": {"from": "L1H0", "to": "logits", "min_recovery": -100}},
        ],
        **entry,
    )
    assert set(outcome.metrics) == {"faithfulness:late/zero", "recovery:path:L1H0->logits"}
    with pytest.raises(ExpectationFailed, match="circuit late"):
        expect_patching(sharp_bridge, claims=[{"faithfulness": {"circuit": "late", "min_faithfulness": 100}}], **entry)
