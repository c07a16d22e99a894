"""Circuit claims in patching cases: each parses to its frozen dataclass with its line and its
sentence; the case keeps its ablation and the circuits it may name (mistakes: test_circuit_errors)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprobe.casefiles.circuit_claims import (
    AblateClaim,
    AblationSpec,
    CurveClaim,
    FaithfulnessClaim,
    NecessityClaim,
    PathClaim,
)
from seqprobe.errors import CaseFileError
from seqprobe.vocabulary.circuits import Component
from tests.casefiles._circuits import case_with, claims, parse


def head(layer: int, index: int) -> Component:
    return Component(layer=layer, kind="head", head=index)


ALL_CLAIMS = """\
          - path: {from: L7H3, to: logits, min_recovery: 0.3}
          - path: {from: [L7H3, L8H6], to: {heads: [L9H6, L9H9], input: q}, min_recovery: 0.2}
          - path: {from: L7H3, to: {head: L9KV1, input: k}, top_k: 3, confidence: 0.9}
          - ablate: {components: [L9H6], direction: noising, max_fraction: 0.3}
          - ablate: {components: [L9H6, L9H9], direction: denoising, min_fraction: 0.5, at: final, method: zero}
          - faithfulness: {circuit: movers, min_faithfulness: 0.6}
          - necessity: {components: [L9H6, L3_mlp], max_fraction: 0.3, confidence: 0.95}
"""


def test_every_circuit_claim_parses_to_its_dataclass_with_its_line_and_text() -> None:
    (case,) = parse(case_with(ALL_CLAIMS, [("scope: heads}", "scope: heads_and_mlps}")]))
    movers = (head(9, 6), head(9, 9))
    assert case.claims == (
        PathClaim(
            text="path L7H3 → logits recovers ≥ 0.3", line=21, senders=((7, 3),), input="logits", min_recovery=0.3
        ),
        PathClaim(
            text="path L7H3+L8H6 → q of L9H6+L9H9 together recovers ≥ 0.2",
            line=22,
            senders=((7, 3), (8, 6)),
            input="q",
            receivers=((9, 6), (9, 9)),
            min_recovery=0.2,
        ),
        PathClaim(
            text="path L7H3 → k of L9KV1 is among the top 3 k receivers at 90% confidence",
            line=23,
            senders=((7, 3),),
            input="k",
            receivers=((9, 1),),
            top_k=3,
            confidence=0.9,
            key_value=True,
        ),
        AblateClaim(
            text="ablating L9H6 (resample) leaves ≤ 0.3 of the clean behaviour",
            line=24,
            components=(head(9, 6),),
            direction="noising",
            max_fraction=0.3,
        ),
        AblateClaim(
            text="with the other heads and MLPs ablated (zero), giving L9H6+L9H9 back at final restores ≥ 0.5 "
            "of the clean behaviour",
            line=25,
            components=movers,
            direction="denoising",
            at="final",
            method="zero",
            min_fraction=0.5,
        ),
        FaithfulnessClaim(
            text="circuit movers (L9H6+L9H9) alone, the other heads and MLPs ablated (resample), is ≥ 0.6 faithful",
            line=26,
            circuit="movers",
            components=movers,
            min_faithfulness=0.6,
        ),
        NecessityClaim(
            text="ablating L9H6+L3_mlp (resample) leaves ≤ 0.3 of the clean behaviour at 95% confidence",
            line=27,
            circuit="",
            components=(head(9, 6), Component(layer=3, kind="mlp")),
            max_fraction=0.3,
            confidence=0.95,
        ),
    )
    assert all(dataclasses.is_dataclass(claim) and claim.__dataclass_params__.frozen for claim in case.claims)


def test_a_faithfulness_curve_may_be_drawn_without_a_bar() -> None:
    curves = claims(
        "faithfulness_curve: {ranking: z, max_k: 30, min_area: 0.5}",
        "faithfulness_curve: {ranking: path_logits, max_k: 10}",
    )
    assert parse(case_with(curves))[0].claims == (
        CurveClaim(
            text="faithfulness curve of the top 1..30 components by z has area ≥ 0.5",
            line=21,
            ranking="z",
            max_k=30,
            min_area=0.5,
        ),
        CurveClaim(
            text="faithfulness curve of the top 1..10 components by path_logits is drawn (no bar)",
            line=22,
            ranking="path_logits",
            max_k=10,
        ),
    )


def test_a_case_sees_the_files_circuits_and_its_own_replace_a_namesake() -> None:
    (case,) = parse(
        case_with(
            "          - faithfulness: {circuit: shared, min_faithfulness: 0.6}\n",
            [("movers: [L9H6, L9H9]", "shared: [L10H1]")],
        )
    )
    assert isinstance(case.circuits, MappingProxyType)
    assert dict(case.circuits) == {"shared": (head(10, 1),), "wide": (head(9, 6), Component(8, "mlp"))}
    assert case.claims[0].components == (head(10, 1),)


def test_without_settings_a_case_ablates_heads_by_resampling() -> None:
    (case,) = parse(case_with(changes=[("        ablation: {method: resample, scope: heads}\n", "")]))
    assert case.ablation == AblationSpec(method="resample", scope="heads", reference=None)


def test_a_claim_may_ask_for_mean_when_the_case_gives_a_reference() -> None:
    (case,) = parse(
        case_with(
            "          - ablate: {components: [L9H6], direction: noising, max_fraction: 0.3, method: mean}\n",
            [("{method: resample, scope: heads}", "{reference: corrupted}")],
        )
    )
    assert case.ablation.method == "resample" and case.ablation.reference is not None
    assert case.claims[0].method == "mean"


@settings(deadline=None)
@given(sender=st.integers(min_value=0, max_value=12), receiver=st.integers(min_value=0, max_value=12))
def test_a_path_parses_exactly_when_its_receiver_is_in_a_later_layer(sender: int, receiver: int) -> None:
    text = case_with(claims(f"path: {{from: L{sender}H0, to: {{heads: [L{receiver}H1]}}, min_recovery: 0.3}}"))
    if receiver > sender:
        (claim,) = parse(text)[0].claims
        assert isinstance(claim, PathClaim) and claim.receivers == ((receiver, 1),)
        return
    with pytest.raises(CaseFileError, match="a receiver reads only what earlier layers wrote"):
        parse(text)
