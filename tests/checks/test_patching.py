"""Mechanistic cases: parsing claims from case files, and checking them on tiny models."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from seqprobe.casefiles.claims import PatchClaim
from seqprobe.casefiles.patching import PatchingCase
from seqprobe.casefiles.reader import parse_case_file
from seqprobe.checks.patching import check_claim, gather_evidence
from seqprobe.engine.patching import make_pair
from seqprobe.errors import CaseFileError
from seqprobe.vocabulary.heads import resolve_layer

pytestmark = pytest.mark.filterwarnings("ignore")

PROMPT = "Today it is {}, tomorrow it is"


def parse(body: str) -> list[PatchingCase]:
    text = "suites:\n  s:\n    cases:\n" + textwrap.indent(textwrap.dedent(body), "      ")
    return list(parse_case_file(text, path="m.seqprobe.yaml").cases())  # type: ignore[arg-type]


def test_template_pairs_shift_the_sequence_and_default_the_distractor() -> None:
    (case,) = parse(
        """
        - kind: patching
          id: days
          over: {day: days}
          prompt: "Today it is {day}, tomorrow it is"
          answer: " {day+1}"
          corrupt: {day: 2}
          claims:
            - patch: {site: resid_pre, at: substituted, layers: [0, 0.5], min_recovery: 0.8}
        """
    )
    assert len(case.pairs) == 7
    sunday = case.pairs[-1]
    assert (sunday.clean, sunday.corrupted, sunday.answer, sunday.distractor) == (
        "Today it is Sunday, tomorrow it is",
        "Today it is Tuesday, tomorrow it is",
        " Monday",
        " Wednesday",
    )
    (claim,) = case.claims
    assert claim == PatchClaim(
        text="resid_pre at substituted, every layer in layers 0..0.5, recovers ≥ 0.8",
        site="resid_pre",
        at="substituted",
        layers=(0, 0.5),
        min_recovery=0.8,
    )


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        (
            "patch: {site: resid, at: final, layers: [0, 1], min_recovery: 0.5}",
            "site 'resid' in a patch claim is not a patching site",
        ),
        (
            "patch: {site: resid_pre, at: middle, layers: [0, 1], min_recovery: 0.5}",
            "at in a patch claim names the position",
        ),
        (
            "patch: {site: resid_pre, at: final, layers: [0, 1.5], min_recovery: 0.5}",
            "a fractional layer is between 0.0 and 1.0",
        ),
        (
            "patch: {site: z, heads: [head5], min_recovery: 0.5}",
            "heads are written L<layer>H<head> (e.g. L5H3), found 'head5'",
        ),
        ("patch: {site: z, head: L1H1, min_recovery: 0.5}", "`head:` in a patch claim takes top_k"),
        ("logit_lens: {min_logit_diff: 1.0}", "a logit_lens claim needs by_layer"),
        ("explain: {site: z}", "each claim is one of patch, logit_lens, direct_attribution"),
    ],
)
def test_bad_claims_name_the_line_and_the_fix(claim: str, message: str) -> None:
    with pytest.raises(CaseFileError) as excinfo:
        parse(
            f"""
            - kind: patching
              id: x
              pairs: [{{clean: "a b", corrupted: "a c", answer: " d", distractor: " e"}}]
              claims:
                - {claim}
            """
        )
    assert str(excinfo.value).startswith("m.seqprobe.yaml:")
    assert message in str(excinfo.value)


def test_corrupting_an_unbound_variable_is_an_error() -> None:
    with pytest.raises(CaseFileError, match="corrupt shifts 'month', which is not bound; bound: day"):
        parse(
            """
            - kind: patching
              id: x
              over: {day: days}
              prompt: "{day}"
              answer: " {day+1}"
              corrupt: {month: 1}
              claims: [{logit_lens: {min_logit_diff: 1.0, by_layer: 0.5}}]
            """
        )


@pytest.mark.parametrize(("spec", "expected"), [(0, 0), (-1, 29), (0.5, 15), (1.0, 29), (0.0, 0), (45, 29)])
def test_layers_resolve_from_indices_and_fractions_of_depth(spec: int | float, expected: int) -> None:
    assert resolve_layer(spec, 30) == expected


def test_fraction_one_reaches_the_final_stream_for_the_logit_lens() -> None:
    assert resolve_layer(1.0, 30, inclusive_end=True) == 30


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_claims_read_heads_together_the_lens_and_attribution_from_one_evidence(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    """Each claim kind's verdict: its baseline metric name, its number and the detail a failure prints."""
    (case,) = parse(
        """
        - kind: patching
          id: claims
          over: {day: days}
          prompt: "Today it is {day}, tomorrow it is"
          answer: " {day+1}"
          corrupt: {day: 2}
          claims:
            - patch: {site: z, heads: [L1H0, L2H1], min_recovery: -100}
            - patch: {site: v, heads: [L2KV1], min_recovery: -100}
            - patch: {site: z, heads: [L1H0, L5H0], min_recovery: 0.5}
            - logit_lens: {min_logit_diff: -100, by_layer: 1.0}
            - direct_attribution: {head: L2H1, min_logit_diff: -100}
        """
    )
    pairs = [
        make_pair(sharp_bridge, clean=p.clean, corrupted=p.corrupted, answer=p.answer, distractor=p.distractor)
        for p in case.pairs
    ]
    evidence = gather_evidence(sharp_bridge, pairs, case.claims)
    # Heads patched together need their sites' runs, not their sweeps; the linear views read the same clean run.
    assert not evidence.sweeps and set(evidence.runs.sites) == {"z", "v"}
    together, values, missing, lens, attribution = (check_claim(claim, evidence) for claim in case.claims)
    assert together.metric == "recovery:z@L1H0+L2H1" and together.passed
    assert together.value == evidence.runs.patch_heads_together("z", [(1, 0), (2, 1)])
    assert together.interval is not None and together.value in together.interval
    low, high = together.interval.low, together.interval.high
    assert together.detail == (
        f"patching L1H0+L2H1 together recovers {together.value:.3f}; 95% interval [{low:.3f}, {high:.3f}] over 7 pair(s)"
    )
    # Key/value heads keep the metric names claims have always had.
    assert values.metric == "recovery:v@L2H1" and values.value == evidence.runs.patch_heads_together("v", [(2, 1)])
    assert missing.metric == "recovery:z@L1H0+L5H0" and not missing.passed and math.isnan(missing.value)
    assert missing.detail == "this model has no L5H0: the z grid has layers 0..2 and columns H0, H1, H2, H3"
    assert lens.metric == "logit_diff:lens@1.0" and lens.value == float(evidence.lens.logit_diff.max())
    assert attribution.metric == "logit_diff:dla@L2H1"
    assert attribution.value == float(evidence.attribution.by_head[2, 1])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_patching_case_through_the_plugin(pytester: pytest.Pytester, sharp_model_dir: Path, dtype: str) -> None:
    """Claims, messages and every figure's sweep; in bfloat16 too, where the metric stays float32."""
    pytester.makefile(
        ".seqprobe.yaml",
        mech=textwrap.dedent(
            """
            suites:
              m:
                cases:
                  - kind: patching
                    id: exact-at-the-first-layer
                    over: {day: days}
                    prompt: "Today it is {day}, tomorrow it is"
                    answer: " {day+1}"
                    corrupt: {day: 2}
                    claims:
                      # At the first layer the substituted token is the only difference: patching it restores all.
                      - patch: {site: resid_pre, at: substituted, layers: [0, 0], min_recovery: 0.999}
                      - patch: {site: resid_pre, at: final, layers: [-1, -1], min_recovery: 2.0}
            """
        ),
    )
    result = pytester.runpytest(
        "--model", str(sharp_model_dir), "--dtype", dtype, "--report", "r.md", "-p", "no:cacheprovider"
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "  failed: resid_pre at final, every layer in layers -1..-1, recovers ≥ 2: lowest recovery * at layer 2 of layers 2..2, position is_12; 95% interval * over 7 pair(s)",
            "clean metric *, corrupted * (metric = logit(answer) − logit(distractor) at the final position, averaged over 7 pair(s)*",
            "  holds: resid_pre at substituted, every layer in layers 0..0, recovers ≥ 0.999 — lowest recovery 1.000 at layer 0*",
        ]
    )
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert "| resid_pre at substituted, every layer in layers 0..0, recovers ≥ 0.999 |" in markdown
    assert (pytester.path / "r_files").is_dir() and len(list((pytester.path / "r_files").glob("*.png"))) == 13
