"""Assertions for tests written in Python: the claims of a case file, stated in a test function.

    def test_tomorrow(seqprobe_model):
        seqprobe.expect_completion(seqprobe_model, "Today it is Sunday, tomorrow it is", " Monday",
                                   distractors=[" Sunday"], max_rank=1)

Each helper states one case with the case file's own keys, parses it with the case-file parser
(so a wrong key, type or placeholder is the same error, pointing at the calling line), runs it on
the runner its kind has in a case file, and fails with the same text. Inside a pytest run with
seqprobe's plugin, its result joins the run's `--report` and baselines under the test's id, its
intervals at the run's `--interval-level` (0.95 outside pytest).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from seqprobe.casefiles.base import Location
from seqprobe.casefiles.reader import display_path
from seqprobe.errors import CaseFileError

if TYPE_CHECKING:
    import pytest
    from transformer_lens.model_bridge import TransformerBridge

    from seqprobe.casefiles.base import Case
    from seqprobe.checks.outcome import CheckOutcome
    from seqprobe.loading.models import LoadedModel

__all__ = [
    "ExpectationFailed",
    "cases",
    "expect_case",
    "expect_completion",
    "expect_direction",
    "expect_family",
    "expect_invariance",
    "expect_patching",
]

# The suite every case stated in Python belongs to.
PYTHON_SUITE = "python"


class ExpectationFailed(AssertionError):
    """A case stated in Python missed its bars; the message is a case file's failure text."""

    def __init__(self, lines: Sequence[str], explanation: str) -> None:
        self.lines = tuple(lines)
        self.explanation = explanation
        failed = "\n".join(f"  failed: {line}" for line in lines)
        super().__init__(f"{failed}\n\n{explanation}")


def expect_completion(
    model: LoadedModel | TransformerBridge,
    prompt: str,
    answer: str,
    *,
    distractors: Sequence[str] = (),
    min_prob: float | None = None,
    max_rank: int | None = None,
    min_logit_diff: float | None = None,
    min_logprob: float | None = None,
    min_logprob_diff: float | None = None,
    greedy: bool | None = None,
    id: str | None = None,  # noqa: A002 - the case file's key
) -> CheckOutcome:
    """`prompt` continues with `answer` (of any length), within the bars given (as a case file's `expect`).

    `max_rank` and `min_logit_diff` read the next token, so they need one-token answers; for longer
    ones use `greedy=True` and `min_logprob_diff`.
    """
    __tracebackhide__ = True
    bars = {
        "min_prob": min_prob,
        "max_rank": max_rank,
        "min_logit_diff": min_logit_diff,
        "min_logprob": min_logprob,
        "min_logprob_diff": min_logprob_diff,
        "greedy": greedy,
    }
    entry = {"prompt": prompt, "answer": answer, "distractors": list(distractors)}
    return _expect(model, "completion", entry, bars, id=id)


def expect_patching(
    model: LoadedModel | TransformerBridge,
    *,
    claims: Sequence[Mapping[str, Any]],
    id: str | None = None,  # noqa: A002 - the case file's key
    **entry: Any,
) -> CheckOutcome:
    """Activation-patching claims on clean/corrupted pairs, with a case file's keys (`pairs`, or
    `prompt`, `answer`, `corrupt`, `over`; `claims` as a list of `{patch: {...}}` mappings)."""
    __tracebackhide__ = True
    return _expect(model, "patching", {**entry, "claims": list(claims)}, {}, id=id)


def expect_family(
    model: LoadedModel | TransformerBridge,
    *,
    min_pass_rate: float = 1.0,
    confidence: float | None = None,
    id: str | None = None,  # noqa: A002
    **entry: Any,
) -> CheckOutcome:
    """A phrasing family holds for at least `min_pass_rate` of its variants (a case file's keys;
    the variants' own bars go under `expect`, as in a file). With `confidence`, the lower bound
    of the pass rate's Wilson interval at that level must reach `min_pass_rate`."""
    __tracebackhide__ = True
    bars = {"min_pass_rate": min_pass_rate, "confidence": confidence}
    return _expect(model, "family", entry, bars, id=id)


def expect_invariance(
    model: LoadedModel | TransformerBridge,
    *,
    min_pass_rate: float = 1.0,
    confidence: float | None = None,
    id: str | None = None,  # noqa: A002
    **entry: Any,
) -> CheckOutcome:
    """A perturbation leaves the top prediction unchanged (a case file's `invariance` keys)."""
    __tracebackhide__ = True
    bars = {"min_pass_rate": min_pass_rate, "confidence": confidence}
    return _expect(model, "invariance", entry, bars, id=id)


def expect_direction(
    model: LoadedModel | TransformerBridge,
    *,
    min_margin: float,
    min_pass_rate: float = 1.0,
    confidence: float | None = None,
    id: str | None = None,  # noqa: A002
    **entry: Any,
) -> CheckOutcome:
    """A perturbation moves logit(to) − logit(from) up by at least `min_margin` (a case file's keys)."""
    __tracebackhide__ = True
    bars = {"min_pass_rate": min_pass_rate, "min_margin": min_margin, "confidence": confidence}
    return _expect(model, "direction", entry, bars, id=id)


def expect_case(model: LoadedModel | TransformerBridge, case: Case) -> CheckOutcome:
    """Run one parsed case (from `cases(...)`) and fail with its case-file text when it misses."""
    __tracebackhide__ = True
    return _run(_loaded(model), case)


def cases(*paths: str | Path, model: str | None = None) -> list[pytest.ParameterSet]:
    """The cases of case files, as `pytest.param`s with their ids, for `@pytest.mark.parametrize`.

    With `model`, a case that is a known failure of that model is marked xfail with its reason,
    as the plugin marks it.
    """
    import pytest

    from seqprobe.casefiles.reader import load_case_file

    params = []
    for path in paths:
        for case in load_case_file(path).cases():
            reason = case.known_failure_for(model) if model else None
            marks = [pytest.mark.xfail(reason=f"known failure of {model}: {reason}", raises=ExpectationFailed)]
            params.append(pytest.param(case, id=f"{case.suite}::{case.name}", marks=marks if reason else ()))
    return params


def _expect(
    model: LoadedModel | TransformerBridge,
    kind: str,
    entry: Mapping[str, Any],
    bars: Mapping[str, float | None],
    *,
    id: str | None,  # noqa: A002
) -> CheckOutcome:
    __tracebackhide__ = True
    caller = _caller()
    # The bars given as arguments, then the entry's own `expect` (a family's per-variant bars).
    expect = {name: value for name, value in bars.items() if value is not None} | dict(entry.get("expect", {}))
    case = _parse(kind, {**entry, "id": id or kind, **({"expect": expect} if expect else {})}, caller)
    return _run(_loaded(model), case)


def _run(model: LoadedModel, case: Case) -> CheckOutcome:
    __tracebackhide__ = True
    from seqprobe.checks.runners import RUNNERS
    from seqprobe.records.intervals import DEFAULT_LEVEL
    from seqprobe.session import expectations_of, interval_level_of, record_python_case

    runner = RUNNERS[case.kind]
    level = interval_level_of(DEFAULT_LEVEL)
    outcome = runner(model, expectations_of(model.info.name), [case], interval_level=level)[case.case_id]
    record_python_case(case, outcome)
    if outcome.error is not None:
        raise outcome.error
    if outcome.failures:
        raise ExpectationFailed(outcome.failures, outcome.explanation)
    return outcome


def _parse(kind: str, entry: Mapping[str, Any], caller: Location) -> Case:
    """One case from its case-file keys; errors point at the calling line, not at generated YAML."""
    __tracebackhide__ = True
    from seqprobe.casefiles.reader import parse_case_file

    document = {"suites": {PYTHON_SUITE: {"cases": [{"kind": kind, **entry}]}}}
    try:
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError as error:
        raise CaseFileError(
            f"a {kind} case holds a value YAML cannot write: {error}", path=caller.path, line=caller.line
        ) from None
    try:
        (case,) = parse_case_file(text, path=caller.path).cases()
    except CaseFileError as error:
        message = str(error).removeprefix(f"{error.path}:{error.line}: ").removeprefix(f"{error.path}: ")
        raise CaseFileError(message, path=caller.path, line=caller.line) from None
    return replace(case, location=caller)


def _caller() -> Location:
    """The first frame outside this module: the test line that stated the case."""
    here = Path(__file__)
    for frame in inspect.stack()[1:]:
        if Path(frame.filename) != here:
            return Location(display_path(frame.filename, Path.cwd()), frame.lineno)
    return Location("<python>", 1)


def _loaded(model: LoadedModel | TransformerBridge) -> LoadedModel:
    from seqprobe.loading.models import resolve_model

    return resolve_model(model)
