"""Mechanistic cases: parsing claims from case files, and checking them on tiny models."""

from __future__ import annotations

import textwrap

import pytest

from seqprobe.cases.casefile import parse_case_file
from seqprobe.cases.patching import PatchClaim, PatchingCase
from seqprobe.checks.patching import patch_heads_together
from seqprobe.engine.patching import make_pair, prepare_patching
from seqprobe.errors import CaseFileError
from seqprobe.vocabulary.heads import resolve_layer
from tests._sharp_models import BUILDERS, sharp_bridge
from tests._tiny_models import build_tiny_tokenizer

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


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def sharp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    return sharp_bridge(request.param, tmp_path_factory.mktemp(f"sharp-{request.param}"))


@pytest.mark.parametrize("site", ["z", "v", "pattern"])
def test_one_head_patched_together_equals_its_sweep_cell(sharp, site: str) -> None:
    pairs = [
        make_pair(sharp, clean=PROMPT.format(c), corrupted=PROMPT.format(x), answer=a, distractor=d)
        for c, x, a, d in [("Sunday", "Tuesday", " Monday", " Wednesday"), ("Friday", "Sunday", " Saturday", " Monday")]
    ]
    runs = prepare_patching(sharp, pairs, sites=(site,))
    sweep = runs.sweep(site)
    layer, head = sweep.recovery.shape[0] - 1, sweep.recovery.shape[1] - 1
    for layer in range(sweep.recovery.shape[0]):
        head = layer % sweep.recovery.shape[1]
        assert patch_heads_together(sharp, runs, site, [(layer, head)]) == pytest.approx(
            sweep.at(layer, head), abs=1e-4
        )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_patching_case_through_the_plugin(pytester: pytest.Pytester, tmp_path, dtype: str) -> None:
    """Claims, messages and every figure's sweep; in bfloat16 too, where the metric stays float32."""
    model_dir = tmp_path / "sharp-llama"
    BUILDERS["llama"]().save_pretrained(model_dir)
    build_tiny_tokenizer().save_pretrained(model_dir)
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
        "--model", str(model_dir), "--dtype", dtype, "--report", "r.md", "-p", "no:cacheprovider"
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "  failed: resid_pre at final, every layer in layers -1..-1, recovers ≥ 2: lowest recovery * at layer 2 of layers 2..2, position is_12",
            "clean metric *, corrupted * (metric = logit(answer) − logit(distractor) at the final position, averaged over 7 pair(s)*",
            "  holds: resid_pre at substituted, every layer in layers 0..0, recovers ≥ 0.999 — lowest recovery 1.000 at layer 0*",
        ]
    )
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert "| resid_pre at substituted, every layer in layers 0..0, recovers ≥ 0.999 |" in markdown
    assert (pytester.path / "r_files").is_dir() and len(list((pytester.path / "r_files").glob("*.png"))) == 12
