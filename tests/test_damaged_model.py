"""The baseline demonstration on the real model: the committed baseline holds for smollm2-135m, and a
copy without its day-moving head (L23H3, ranked first by z patching in days-mechanism) regresses on
the successor cases while the capital-city controls hold.

Measured when these were written (float32, CPU): without L23H3, 16 of the 21 days cases and all 24
months cases regress; of the 10 capitals, only Canada moves (p(' Ottawa') 0.514 → 0.423). The bounds
below leave room for that, not for a damage that hits everything or nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from seqprobe.ablation import save_ablated_copy
from seqprobe.loading.weights_cache import CACHE_DIR_ENV, cache_root
from tests.conftest import REAL_MODEL

pytestmark = pytest.mark.real_model

REPO = Path(__file__).resolve().parent.parent
BASELINE = f"baselines/{REAL_MODEL}.json"
CASE_FILES = ("cases/days.seqprobe.yaml", "cases/capitals.seqprobe.yaml")


@pytest.fixture(scope="module")
def model_cache() -> Path:
    """The real cache, read before pytester points HOME at a temporary folder."""
    return cache_root()


@pytest.fixture(scope="module")
def without_mover_head(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_ablated_copy(REAL_MODEL, ["L23H3"], tmp_path_factory.mktemp("damaged") / "no-L23H3")


def run_against_baseline(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, model_cache: Path, *args: str
) -> pytest.RunResult:
    monkeypatch.setenv(CACHE_DIR_ENV, str(model_cache))
    # The same paths and bytes as in the repository, so the baseline's case ids and file hashes match;
    # the ini file keeps the rootdir (which case ids are relative to) here, whatever --model points at.
    pytester.makeini("[pytest]")
    for name in (*CASE_FILES, BASELINE):
        (pytester.path / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(REPO / name, pytester.path / name)
    return pytester.runpytest(*CASE_FILES, "--baseline", BASELINE, "-p", "no:cacheprovider", "-rf", *args)


def failed_ids(result: pytest.RunResult) -> list[str]:
    return [line.split(" ")[1] for line in result.outlines if line.startswith("FAILED ")]


def test_the_committed_baseline_holds(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, model_cache: Path
) -> None:
    result = run_against_baseline(pytester, monkeypatch, model_cache)
    # days: 7 pass, 14 known failures; capitals: 7 + 3 pass, 3 + 3 known failures (one-token, several tokens).
    result.assert_outcomes(passed=17, xfailed=20)
    result.stdout.fnmatch_lines(["37 unchanged (37 cases)"])


def test_without_its_mover_head_the_successor_cases_regress_and_the_controls_hold(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, model_cache: Path, without_mover_head: Path
) -> None:
    result = run_against_baseline(
        pytester, monkeypatch, model_cache,
        "--model", str(without_mover_head), "--as-model", REAL_MODEL, "--compare-across-models",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    failed = failed_ids(result)
    days = [case for case in failed if case.startswith("cases/days")]
    capitals = [case for case in failed if case.startswith("cases/capitals")]
    assert len(days) >= 12, days
    assert len(capitals) <= 1, capitals
    result.stdout.fnmatch_lines(["*regressed: p(' Tuesday') 0.51 → 0.163 (tolerance 0.05)*"])
