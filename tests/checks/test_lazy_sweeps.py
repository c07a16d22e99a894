"""Plain runs compute only the cells claims read, and cases with the same pairs share one computation."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqprobe.casefiles.patching import PatchingCase
from seqprobe.casefiles.reader import parse_case_file
from seqprobe.checks.patching import check_claim, gather_evidence, run_patching_checks
from seqprobe.engine.forward import ResumableForward
from seqprobe.engine.patching import make_pair, prepare_patching
from seqprobe.loading.models import loaded_from_bridge
from seqprobe.vocabulary.sites import SITES

pytestmark = pytest.mark.filterwarnings("ignore")

TEMPLATE = """
- kind: patching
  id: {id}
  over: {{day: days}}
  prompt: "Today it is {{day}}, tomorrow it is"
  answer: " {{day+1}}"
  corrupt: {{day: {shift}}}
  claims:
{claims}
"""
WHERE = """
    - patch: {site: resid_pre, at: substituted, layers: [0, 0.66], min_recovery: -100}
    - patch: {site: resid_pre, at: final, layers: [0.85, 1.0], min_recovery: -100}
    - patch: {site: attn_out, at: final, layers: [0.5, 1.0], require: some, min_recovery: -100}
"""
HEAD = """
    - patch: {site: z, head: L2H1, top_k: 4}
    - patch: {site: z, heads: [L2H1], min_recovery: -100}
"""


def parse(*entries: str) -> list[PatchingCase]:
    text = "suites:\n  s:\n    cases:\n" + "".join(textwrap.indent(entry, "      ") for entry in entries)
    return list(parse_case_file(text, path="m.seqprobe.yaml").cases())  # type: ignore[arg-type]


def case(id: str, claims: str, *, shift: int = 2) -> str:  # noqa: A002
    return TEMPLATE.format(id=id, shift=shift, claims=textwrap.indent(textwrap.dedent(claims).strip(), "    "))


def _pairs(bridge, parsed: PatchingCase):  # type: ignore[no-untyped-def]
    return [
        make_pair(bridge, clean=p.clean, corrupted=p.corrupted, answer=p.answer, distractor=p.distractor)
        for p in parsed.pairs
    ]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(site=st.sampled_from(SITES), data=st.data())
def test_lazy_cells_equal_the_full_sweeps_cells(sharp_bridge, site: str, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    (parsed,) = parse(case("c", WHERE))
    runs = prepare_patching(sharp_bridge, _pairs(sharp_bridge, parsed), sites=(site,))
    full = runs.sweep(site)
    n_layers, n_columns = runs.grid_shape(site)
    flags = data.draw(st.lists(st.booleans(), min_size=n_layers * n_columns, max_size=n_layers * n_columns))
    cells = torch.tensor(flags).view(n_layers, n_columns)
    lazy = runs.sweep(site, cells=cells)
    assert lazy.pair_metric is not None and full.pair_metric is not None
    # A configuration's numbers do not depend on the others stacked with it, up to float32 rounding.
    torch.testing.assert_close(lazy.pair_metric[cells], full.pair_metric[cells], atol=1e-5, rtol=0)
    assert torch.isnan(lazy.metric[~cells]).all()


def test_claims_on_lazy_evidence_equal_claims_on_every_sweep(sharp_bridge) -> None:  # type: ignore[no-untyped-def]
    (parsed,) = parse(case("c", WHERE + HEAD))
    pairs = _pairs(sharp_bridge, parsed)
    lazy = gather_evidence(sharp_bridge, pairs, parsed.claims)
    everything = gather_evidence(sharp_bridge, pairs, parsed.claims, everything=True)
    read = int(sum(int((~torch.isnan(s.metric)).sum()) for s in lazy.sweeps.values()))
    assert set(lazy.sweeps) == {"resid_pre", "attn_out", "z"} and read < sum(
        s.metric.numel() for s in everything.sweeps.values()
    )
    for claim in parsed.claims:
        ours, reference = check_claim(claim, lazy), check_claim(claim, everything)
        assert ours.value == pytest.approx(reference.value, abs=1e-5), claim.text
        assert ours.passed == reference.passed


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_cases_with_the_same_pairs_share_one_pair_of_runs(sharp_bridge, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Two cases on the same pairs run the clean and corrupted prompts once; a third on other pairs, once more."""
    calls: list[int] = []
    original = ResumableForward.run

    def counted(self, tokens, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(tokens.shape[0])
        return original(self, tokens, **kwargs)

    monkeypatch.setattr(ResumableForward, "run", counted)
    cases = parse(case("where", WHERE), case("head", HEAD), case("other", WHERE, shift=3))
    outcomes = run_patching_checks(loaded_from_bridge(sharp_bridge), "sharp", cases)
    assert all(outcome.error is None for outcome in outcomes.values())
    assert calls == [7, 7, 7, 7], "clean and corrupted once for the shared pairs, once for the other pairs"
    alone = run_patching_checks(loaded_from_bridge(sharp_bridge), "sharp", [cases[1]])
    assert alone[cases[1].case_id].metrics == pytest.approx(outcomes[cases[1].case_id].metrics, abs=1e-5)


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_max_memory_reaches_the_sweeps_and_a_bad_size_is_a_usage_error(
    pytester: pytest.Pytester, sharp_model_dir
) -> None:  # type: ignore[no-untyped-def]
    pytester.makefile(
        ".seqprobe.yaml", mech="suites:\n  s:\n    cases:\n" + textwrap.indent(case("c", WHERE), "      ")
    )
    budgets = [pytester.runpytest("--model", str(sharp_model_dir), "-p", "no:cacheprovider", "--report", f"{size}.md",
                                  "--max-memory", size) for size in ("1", "auto")]  # fmt: skip
    for result in budgets:
        result.assert_outcomes(passed=1)
    tiny, auto = (json.loads((pytester.path / f"{size}.json").read_text())["cases"][0] for size in ("1", "auto"))
    assert tiny["metrics"] == pytest.approx(auto["metrics"], abs=1e-5)
    bad = pytester.runpytest("--model", str(sharp_model_dir), "-p", "no:cacheprovider", "--max-memory", "lots")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(
        ["*--max-memory: memory budget 'lots': expected auto or a size such as 6GB, 512MB or 1.5GiB*"]
    )
