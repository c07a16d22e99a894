"""Save a copy of a model with one attention head ablated: the "damaged model" of docs/README.md.

    python docs/ablate_head.py smollm2-135m L23H3 /tmp/smollm2-135m-no-L23H3

The head's output is zeroed by zeroing its columns of the attention output projection, so every
other weight is untouched. The copy is a hub-format folder that `--model` accepts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from seqprobe.mechanism_cases import parse_head
from seqprobe.models import load_model
from seqprobe.weights_cache import cache_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model name or folder, as for --model")
    parser.add_argument("head", help="the head to ablate, e.g. L23H3")
    parser.add_argument("out", type=Path, help="folder to write the damaged copy to")
    args = parser.parse_args()
    layer, head = parse_head(args.head) or parser.error(f"head {args.head!r} is not L<layer>H<head>")
    from transformers import AutoModelForCausalLM

    loaded = load_model(args.model, device="cpu")  # fetches and caches the weights if needed
    # The bridge wraps the model's modules; reload the plain model from the folder it booted.
    folder = cache_root() / "dequantized" / loaded.info.sha256
    model = AutoModelForCausalLM.from_pretrained(folder if folder.is_dir() else args.model)
    attention = model.model.layers[layer].self_attn
    d_head = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        attention.o_proj.weight[:, head * d_head : (head + 1) * d_head] = 0.0  # [d_model, head*d_head]
    model.save_pretrained(args.out)
    loaded.bridge.tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out}: {loaded.info.name} with L{layer}H{head} ablated")


if __name__ == "__main__":
    main()
