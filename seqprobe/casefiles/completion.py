"""The completion kind: a prompt the model should continue with the answer, ahead of each distractor.

Answers and distractors are continuations of any length (" Monday", " Buenos Aires"), scored by
their teacher-forced log-probability (`seqprobe.engine.continuations`). Whether an answer is one
token is the model's tokenizer's to say, so bars that need one token (`max_rank`,
`min_logit_diff`) are checked when the model is loaded, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from seqprobe.casefiles.base import Case, EntryContext, TemplateScope, common_fields
from seqprobe.casefiles.validation import get_str, get_str_list
from seqprobe.casefiles.yamlsource import SourceMap

__all__ = ["CompletionCase", "parse_completion"]


@dataclass(frozen=True)
class CompletionCase(Case):
    """A prompt the model should continue with `answer`, ahead of each distractor."""

    prompt: str = ""
    answer: str = ""
    distractors: tuple[str, ...] = ()
    # The bars the case's own `expect` and `model_expect` set; the others it inherits from its
    # suite or the file's defaults, which a message about a bar that does not fit must tell apart.
    own_bars: frozenset[str] = frozenset()

    kind = "completion"


KEYS = ("prompt", "answer", "distractors")
# Bars that compare the answer with distractors, so a case holding one needs a distractor.
DISTRACTOR_BARS = ("min_logit_diff", "min_logprob_diff")


def parse_completion(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> Case:
    common = common_fields(ctx, scope, entry)
    prompt = scope.fill(ctx, entry, "prompt", get_str(ctx.path, entry, "prompt", where="a completion case") or "")
    if not prompt.strip():
        raise ctx.error("prompt is empty; a case needs text for the model to continue", entry, "prompt")
    answer = scope.fill(ctx, entry, "answer", get_str(ctx.path, entry, "answer", where="a completion case") or "")
    if not answer:
        raise ctx.error(
            "answer is empty; give the expected continuation with its leading space, e.g. ' Monday' or ' Buenos Aires'",
            entry,
            "answer",
        )
    distractors = tuple(
        scope.fill(ctx, entry, "distractors", text)
        for text in get_str_list(ctx.path, entry, "distractors", where="a completion case")
    )
    if "" in distractors:
        raise ctx.error(
            f"distractor {distractors.index('') + 1} is empty; give a wrong continuation, e.g. ' Sunday'",
            entry,
            "distractors",
        )
    if answer in distractors:
        raise ctx.error(f"answer {answer!r} is also listed as a distractor", entry, "distractors")
    own = entry.get("expect") or {}
    for bar in DISTRACTOR_BARS:
        if not distractors and bar in own:
            raise ctx.error(f"{bar} needs at least one distractor to compare against", entry, "expect")
    return CompletionCase(**common, prompt=prompt, answer=answer, distractors=distractors, own_bars=_own_bars(entry))


def _own_bars(entry: SourceMap) -> frozenset[str]:
    """The bars `entry` sets itself, in `expect` or any model's `model_expect` (both validated by now)."""
    per_model = entry.get("model_expect") or {}
    return frozenset(entry.get("expect") or {}).union(*(values for values in per_model.values()))
