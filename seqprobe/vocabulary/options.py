"""The model options, shared by the pytest plugin and every `seqprobe` command that loads a model.

One definition keeps `--model`, `--device` and `--dtype` spelled, defaulted and documented alike
in `pytest --help` and `seqprobe COMMAND --help`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seqprobe.loading.known import DEFAULT_MODEL

__all__ = ["DEVICE", "DTYPE", "DTYPES", "MODEL", "MODEL_OPTIONS", "ModelOption", "add_model_options"]

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
