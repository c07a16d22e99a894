"""The completion kind: a prompt whose next token should be the answer, ahead of each distractor."""

from __future__ import annotations

from dataclasses import dataclass

from seqprobe.casefiles.base import Case, EntryContext, TemplateScope, common_fields
from seqprobe.casefiles.validation import get_str, get_str_list
from seqprobe.casefiles.yamlsource import SourceMap

__all__ = ["CompletionCase", "parse_completion"]


@dataclass(frozen=True)
class CompletionCase(Case):
    """A prompt whose next token should be `answer`, ahead of each distractor."""

    prompt: str = ""
    answer: str = ""
    distractors: tuple[str, ...] = ()

    kind = "completion"


KEYS = ("prompt", "answer", "distractors")


def parse_completion(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> Case:
    common = common_fields(ctx, scope, entry)
    prompt = scope.fill(ctx, entry, "prompt", get_str(ctx.path, entry, "prompt", where="a completion case") or "")
    if not prompt.strip():
        raise ctx.error("prompt is empty; a case needs text for the model to continue", entry, "prompt")
    answer = scope.fill(ctx, entry, "answer", get_str(ctx.path, entry, "answer", where="a completion case") or "")
    if not answer:
        raise ctx.error("answer is empty; give the expected next token, e.g. ' Monday'", entry, "answer")
    distractors = tuple(
        scope.fill(ctx, entry, "distractors", text)
        for text in get_str_list(ctx.path, entry, "distractors", where="a completion case")
    )
    if answer in distractors:
        raise ctx.error(f"answer {answer!r} is also listed as a distractor", entry, "distractors")
    if not distractors and "min_logit_diff" in (entry.get("expect") or {}):
        raise ctx.error("min_logit_diff needs at least one distractor to compare against", entry, "expect")
    return CompletionCase(**common, prompt=prompt, answer=answer, distractors=distractors)
