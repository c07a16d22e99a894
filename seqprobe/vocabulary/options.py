"""The model options, shared by the pytest plugin and every `seqprobe` command that loads a model.

One definition keeps `--model`, `--device` and `--dtype` spelled, defaulted and documented alike
in `pytest --help` and `seqprobe COMMAND --help`; `--max-memory`, the patching engine's budget,
is shared by the plugin and `seqprobe bench`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seqprobe.loading.known import DEFAULT_MODEL

__all__ = [
    "DEVICE",
    "DTYPE",
    "DTYPES",
    "MAX_MEMORY",
    "MODEL",
    "MODEL_OPTIONS",
    "ModelOption",
    "add_max_memory_option",
    "add_model_options",
    "parse_memory",
]

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelOption:
    flag: str
    default: str
    help: str
    choices: tuple[str, ...] | None = None


MODEL = ModelOption(
    "--model",
    DEFAULT_MODEL,
    f"model to test: a known name, a hub name, a model folder or a .gguf file (default: {DEFAULT_MODEL})",
)
DEVICE = ModelOption(
    "--device", "auto", "torch device: auto (cuda when available), cpu, cuda, cuda:1, ... (default: auto)"
)
# float32 by default: baselines and the oracle tests are float32; half precision is a choice.
DTYPE = ModelOption("--dtype", "float32", "weights dtype (default: float32)", choices=DTYPES)
MODEL_OPTIONS = (MODEL, DEVICE, DTYPE)


def add_model_options(add_option: Callable[..., Any]) -> None:
    """Add the model options through `argparse.ArgumentParser.add_argument` or pytest's `addoption`."""
    for option in MODEL_OPTIONS:
        extra = {"choices": option.choices} if option.choices else {}
        add_option(option.flag, default=option.default, help=option.help, **extra)


AUTO = "auto"
MAX_MEMORY = ModelOption(
    "--max-memory",
    AUTO,
    "memory a patching sweep's stacked batch may take: auto (half the device's free memory) or a size "
    "such as 6GB, 512MB, 1.5GiB; larger sweeps run in chunks, with the same numbers (default: auto)",
)

_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]i?B|B)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(text: str) -> int | None:
    """Bytes from "6GB", "512MiB" or "2000000"; None for "auto". ValueError, saying the form, otherwise."""
    if text.strip().lower() == AUTO:
        return None
    match = _SIZE.fullmatch(text.strip())
    if match is None or float(match["number"]) <= 0:
        raise ValueError(f"memory budget {text!r}: expected auto or a size such as 6GB, 512MB or 1.5GiB")
    return int(float(match["number"]) * _UNITS[(match["unit"] or "").lower()])


def _memory_option(text: str) -> int | None:
    try:
        return parse_memory(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_max_memory_option(add_option: Callable[..., Any]) -> None:
    """Add `--max-memory` (parsed to bytes, None for auto) through `add_argument` or `addoption`."""
    add_option(MAX_MEMORY.flag, default=None, type=_memory_option, metavar="SIZE", help=MAX_MEMORY.help)
