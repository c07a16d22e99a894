"""Damaged copies of a model, to see a suite catch a change: chosen heads zeroed, saved as a folder.

A baseline is only worth keeping if it fails when the model loses something. The smallest honest
test of that is a copy with one component knocked out: the head that patching ranks first (it
should break the cases that head serves) and nothing else (the unrelated cases should hold).
`seqprobe ablate smollm2-135m L23H3 --out FOLDER` writes such a copy; `--model FOLDER` loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from seqprobe.errors import AblationError

__all__ = ["parse_heads", "save_ablated_copy"]


def parse_heads(texts: Sequence[str], *, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """["L23H3", ...] -> [(23, 3), ...], each checked against the model's shape."""
    from seqprobe.vocabulary.heads import parse_head

    heads = []
    for text in texts:
        parsed = parse_head(text)
        if parsed is None or "KV" in text:
            raise AblationError(f"head {text!r} is not of the form L<layer>H<head>, e.g. L23H3")
        layer, head = parsed
        if not (0 <= layer < n_layers and head < n_heads):
            raise AblationError(
                f"head {text!r} is outside the model: it has layers 0..{n_layers - 1} and heads 0..{n_heads - 1}"
            )
        heads.append((layer, head))
    return heads


def save_ablated_copy(name: str, heads: Sequence[str], out: str | Path) -> Path:
    """Write `name` with each of `heads` zero-ablated (its output projection columns zeroed) to `out`.

    Every other weight is the original's, in float32. `out` must not exist or be empty, so that
    no earlier copy or unrelated folder is overwritten.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from seqprobe.engine.architectures import resumable_forward
    from seqprobe.loading.models import weights_location

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AblationError(f"{out} already exists and is not an empty folder; choose a new folder for the copy")
    location = weights_location(name)
    model = AutoModelForCausalLM.from_pretrained(location, dtype="float32")
    forward = resumable_forward(model)
    for layer, head in parse_heads(heads, n_layers=forward.n_layers, n_heads=forward.n_heads):
        forward.zero_head(layer, head)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(location).save_pretrained(out)
    return out
