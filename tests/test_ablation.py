"""`seqprobe ablate`: a copy whose chosen heads write nothing, every other weight untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from seqprobe.ablation import save_ablated_copy
from seqprobe.cli import main
from seqprobe.engine.architectures import resumable_forward
from seqprobe.errors import AblationError

# The output projection of each architecture's attention (by `config.model_type`): where a head's write is zeroed.
OUTPUT_PROJECTION = {"llama": "self_attn.o_proj", "gpt2": "attn.c_proj", "gemma3_text": "self_attn.o_proj"}


def test_the_ablated_head_writes_nothing_and_nothing_else_changes(sharp_model_dir: Path, tmp_path: Path) -> None:
    copy = save_ablated_copy(str(sharp_model_dir), ["L1H2"], tmp_path / "copy")
    before = AutoModelForCausalLM.from_pretrained(sharp_model_dir)
    after = AutoModelForCausalLM.from_pretrained(copy)
    forward = resumable_forward(after)
    z = torch.randn(2, 5, forward.n_heads, forward.d_head)
    writes = forward.head_writes(1, z)  # [batch pos head d_model]
    assert torch.all(writes[:, :, 2] == 0)
    assert torch.all(writes[:, :, [0, 1, 3]] != 0)
    changed = {
        name
        for (name, old), (_, new) in zip(before.named_parameters(), after.named_parameters(), strict=True)
        if not torch.equal(old, new)
    }
    projection = OUTPUT_PROJECTION[after.config.model_type]
    assert len(changed) == 1 and next(iter(changed)).endswith(f"1.{projection}.weight")


def test_the_copy_keeps_the_tokenizer(sharp_model_dir: Path, tmp_path: Path) -> None:
    copy = save_ablated_copy(str(sharp_model_dir), ["L0H0"], tmp_path / "copy")
    tokenizer = (sharp_model_dir / "tokenizer.json").read_text(encoding="utf-8")
    assert (copy / "tokenizer.json").read_text(encoding="utf-8") == tokenizer


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ("L3H0", "head 'L3H0' is outside the model: it has layers 0..2 and heads 0..3"),
        ("L0H4", "head 'L0H4' is outside the model: it has layers 0..2 and heads 0..3"),
        ("L-1H0", "head 'L-1H0' is outside the model"),
        ("L1KV0", "head 'L1KV0' is not of the form L<layer>H<head>, e.g. L23H3"),
        ("head3", "head 'head3' is not of the form L<layer>H<head>, e.g. L23H3"),
    ],
)
@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_a_head_the_model_lacks_is_refused(sharp_model_dir: Path, tmp_path: Path, head: str, message: str) -> None:
    with pytest.raises(AblationError, match=message.replace("(", r"\(").replace(".", r"\.")):
        save_ablated_copy(str(sharp_model_dir), [head], tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_an_existing_folder_is_never_overwritten(tiny_llama_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(AblationError, match="already exists and is not an empty folder"):
        save_ablated_copy(str(tiny_llama_dir), ["L0H0"], tmp_path / "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_the_command_writes_the_copy_and_says_how_to_use_it(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ablate", str(tiny_llama_dir), "L0H1", "L1H0", "--out", str(tmp_path / "copy")]) == 0
    out = capsys.readouterr().out
    assert (
        out
        == f"wrote {tmp_path / 'copy'}: {tiny_llama_dir} with L0H1, L1H0 zero-ablated; test it with --model {tmp_path / 'copy'}\n"
    )
    assert main(["ablate", str(tiny_llama_dir), "L99H0", "--out", str(tmp_path / "other")]) == 2
    assert "AblationError: head 'L99H0' is outside the model" in capsys.readouterr().err
