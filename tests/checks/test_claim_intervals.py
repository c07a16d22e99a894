"""Intervals on patching claims: resampled over pairs, and what `confidence` makes of them."""

from __future__ import annotations

import textwrap

import pytest
import torch

from seqprobe.casefiles.patching import PatchingCase
from seqprobe.casefiles.reader import parse_case_file
from seqprobe.checks.patching import check_claim, gather_evidence
from seqprobe.engine.patching import make_pair, prepare_patching
from seqprobe.errors import CaseFileError

pytestmark = pytest.mark.filterwarnings("ignore")

CASE = """
- kind: patching
  id: claims
  over: {{day: days}}
  prompt: "Today it is {{day}}, tomorrow it is"
  answer: " {{day+1}}"
  corrupt: {{day: 2}}
  {expect}
  claims:
{claims}
"""


def parse(claims: str, *, expect: str = "") -> PatchingCase:
    body = CASE.format(expect=expect, claims=textwrap.indent(textwrap.dedent(claims).strip(), "    "))
    text = "suites:\n  s:\n    cases:\n" + textwrap.indent(body, "      ")
    (case,) = parse_case_file(text, path="m.seqprobe.yaml").cases()
    assert isinstance(case, PatchingCase)
    return case


def _evidence(bridge, case: PatchingCase):  # type: ignore[no-untyped-def]
    pairs = [
        make_pair(bridge, clean=p.clean, corrupted=p.corrupted, answer=p.answer, distractor=p.distractor)
        for p in case.pairs
    ]
    return pairs, gather_evidence(bridge, pairs, case.claims)


@pytest.mark.parametrize("sharp_model_dir", ["llama", "gpt2"], indirect=True)
def test_each_pairs_patched_metric_does_not_depend_on_the_other_pairs(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    """Why resampling pairs needs no rerun: a pair's patched metric in the batch is its metric alone."""
    case = parse("- patch: {site: z, head: L1H0, top_k: 3}")
    pairs, _ = _evidence(sharp_bridge, case)
    together = prepare_patching(sharp_bridge, pairs[:3], sites=("z", "resid_pre"))
    for site in ("z", "resid_pre"):
        batch = together.sweep(site).pair_metric
        assert batch is not None
        for i, pair in enumerate(pairs[:3]):
            alone = prepare_patching(sharp_bridge, [pair], sites=(site,), min_gap=0.0).sweep(site).pair_metric
            assert alone is not None
            # Float32 rounding, relative to metrics of ~5: the shared prefix's products hold the
            # batch's pairs as rows, and a BLAS may round a product of one pair differently.
            torch.testing.assert_close(batch[..., i], alone[..., 0], atol=1e-5, rtol=1e-5)


def test_every_claim_on_pairs_has_an_interval_that_contains_its_value(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    case = parse(
        """
        - patch: {site: resid_pre, at: substituted, layers: [0, -1], min_recovery: -100}
        - patch: {site: resid_pre, at: final, layers: [0, -1], require: some, min_recovery: -100}
        - patch: {site: z, head: L2H1, top_k: 12}
        - patch: {site: z, heads: [L1H0, L2H1], min_recovery: -100}
        - logit_lens: {min_logit_diff: -100, by_layer: 0.5}
        - direct_attribution: {head: L2H1, min_logit_diff: -100}
        - direct_attribution: {component: L1_mlp, min_logit_diff: -100}
        """
    )
    _, evidence = _evidence(sharp_bridge, case)
    for claim in case.claims:
        verdict = check_claim(claim, evidence, interval_level=0.9)
        assert verdict.interval is not None and verdict.interval.level == 0.9 and verdict.interval.n == 7
        assert verdict.value in verdict.interval
        assert "90% interval [" in verdict.detail
    wider = check_claim(case.claims[0], evidence, interval_level=0.99).interval
    narrower = check_claim(case.claims[0], evidence, interval_level=0.5).interval
    assert wider is not None and narrower is not None
    assert wider.low <= narrower.low and narrower.high <= wider.high


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_confidence_judges_by_the_bound_on_the_bad_side(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    probe = parse("- patch: {site: resid_pre, at: final, layers: [-1, -1], min_recovery: -100}")
    _, evidence = _evidence(sharp_bridge, probe)
    point = check_claim(probe.claims[0], evidence)
    assert point.interval is not None and point.interval.low < point.value - 0.05
    bar = round(point.value - 0.01, 3)  # the point clears it; the 95% lower bound does not
    claim = f"- patch: {{site: resid_pre, at: final, layers: [-1, -1], min_recovery: {bar}, confidence: 0.95}}"
    judged = parse(claim)
    (verdict,) = (check_claim(c, evidence) for c in judged.claims)
    assert point.value >= bar and not verdict.passed
    assert f"judged at 95% confidence: lower bound {verdict.interval.low:.3f}" in verdict.detail  # type: ignore[union-attr]
    assert verdict.detail.endswith(f"< {bar:g}")
    # The case's (or file's) `expect: {confidence}` applies to claims that set none.
    cascaded = parse(claim.replace(", confidence: 0.95", ""), expect="expect: {confidence: 0.95}")
    assert cascaded.expect["confidence"] == 0.95
    verdict = check_claim(cascaded.claims[0], evidence, confidence=cascaded.expect["confidence"])
    assert not verdict.passed and "judged at 95% confidence" in verdict.detail
    # Ranks are judged by their upper bound.
    ranked = parse("- patch: {site: z, head: L2H1, top_k: 12, confidence: 0.8}")
    rank = check_claim(ranked.claims[0], _evidence(sharp_bridge, ranked)[1])
    assert "judged at 80% confidence: upper bound" in rank.detail


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        (
            "- patch: {site: z, head: L1H0, top_k: 3, confidence: 95}",
            r"m.seqprobe.yaml:\d+: confidence in a patch claim is the interval's level, between 0 and 1 \(e.g. 0.95\), found 95",
        ),
        (
            "- patch: {site: z, head: L1H0, top_k: 3, method: attribution, confidence: 0.9}",
            r"confidence needs per-pair patched runs; attribution patching estimates the grid's mean only",
        ),
    ],
)
def test_bad_confidence_is_a_collection_error(claim: str, message: str) -> None:
    with pytest.raises(CaseFileError, match=message):
        parse(claim)
