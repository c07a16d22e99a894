"""The model options, shared by the pytest plugin and every `seqprobe` command that loads a model.

One definition keeps `--model`, `--device`, `--dtype` and `--device-map` spelled, defaulted and
documented alike in `pytest --help` and `seqprobe COMMAND --help`; `--max-memory`, the patching
engine's budget, is shared by the plugin and `seqprobe bench`.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqprobe.loading.known import DEFAULT_MODEL

__all__ = [
    "DEVICE",
    "DEVICE_MAP",
    "DEVICE_MAP_STRATEGIES",
    "DTYPE",
    "DTYPES",
    "MAX_MEMORY",
    "MODEL",
    "MODEL_OPTIONS",
    "ModelOption",
    "add_max_memory_option",
    "add_model_options",
    "parse_device_map",
    "parse_memory",
]

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelOption:
    flag: str
    default: str | None
    help: str
    choices: tuple[str, ...] | None = None
    # Converts the command line's text (argparse's `type`); None keeps it a string.
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None


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

# accelerate's placement strategies; any other device map is a JSON object of module name -> device.
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def parse_device_map(text: str) -> str | dict[str, str | int]:
    """A strategy name, or module name -> device from a JSON object or a .json file; ValueError saying the forms."""
    text = text.strip()
    if text in DEVICE_MAP_STRATEGIES:
        return text
    forms = (
        f"expected {', '.join(DEVICE_MAP_STRATEGIES)}, a JSON object such as "
        '\'{"model.layers.0": "cpu", "model.layers.1": "disk"}\', or a .json file holding one'
    )
    inline = text.startswith("{")
    if not inline and not text.endswith(".json"):
        raise ValueError(f"device map {text!r}: {forms}")
    try:
        loaded = json.loads(text if inline else Path(text).expanduser().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"device map {text!r}: {error}; {forms}") from None
    if not isinstance(loaded, dict) or not loaded:
        raise ValueError(f"device map {text!r}: {forms}")
    # A GPU is named by its index, but JSON's true is no index (though Python's bool is an int).
    bad = {key: value for key, value in loaded.items() if not isinstance(value, str | int) or isinstance(value, bool)}
    if bad:
        raise ValueError(f"device map {text!r}: devices must be names or GPU indices, found {bad}; {forms}")
    return loaded


def _device_map_option(text: str) -> str | dict[str, str | int]:
    try:
        return parse_device_map(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


DEVICE_MAP = ModelOption(
    "--device-map",
    None,
    "split the model across devices with accelerate, for a model bigger than one device: "
    f"{', '.join(DEVICE_MAP_STRATEGIES)} (auto: GPUs, then CPU, then disk), or module name -> device "
    '("cpu", "disk", 0, "cuda:1") as a JSON object or a .json file; keep --device auto '
    "(default: the whole model on --device)",
    parse=_device_map_option,
    metavar="MAP",
)
MODEL_OPTIONS = (MODEL, DEVICE, DTYPE, DEVICE_MAP)


def add_model_options(add_option: Callable[..., Any]) -> None:
    """Add the model options through `argparse.ArgumentParser.add_argument` or pytest's `addoption`."""
    for option in MODEL_OPTIONS:
        extra: dict[str, Any] = {"choices": option.choices} if option.choices else {}
        extra |= {"type": option.parse} if option.parse else {}
        extra |= {"metavar": option.metavar} if option.metavar else {}
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
