"""Loading a model across devices: a `device_map`, its checks, its offload folder, and its record.

A model bigger than one device loads with a `device_map` passed through
`TransformerBridge.boot_transformers` to Hugging Face's `from_pretrained`, which hands it to
accelerate: "auto" fills the GPUs, then the CPU, then disk (within `max_memory` per device when
given); a dict places modules by name. Modules mapped to "disk" (and to "cpu" when a GPU is also
used) are *offloaded*: they hold meta placeholders and accelerate's hooks load their weights for
each call, from the safetensors files or, when they must be converted (another dtype), from an
offload folder. That folder lives in seqprobe's cache, not /tmp (often memory, which offloading
is meant to spare), and is removed when the bridge is. `seqprobe.engine.placement` is the other
half: how the engine reads such weights.

transformer_lens accepts a map whose devices are all GPUs, or all cpu/disk, not a mix (verified
only on CPU-only hardware, it says); transformers refuses maps that miss a module or split tied
weights. Those refusals become one `ModelLoadError` that names the option and the ways out.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from seqprobe.errors import ModelLoadError
from seqprobe.loading.weights_cache import cache_root
from seqprobe.vocabulary.options import DEVICE_MAP_STRATEGIES

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["DeviceMap", "MaxMemory", "boot_split", "check_placement", "device_map_of", "placement_of"]

# A strategy, or module name ("model.layers.3") -> "cpu", "disk", "cuda:1" or a GPU index.
DeviceMap = str | Mapping[str, str | int]
# accelerate's budget per device: {0: "20GiB", "cpu": "60GiB"} (sizes as strings, or bytes).
MaxMemory = Mapping[str | int, str | int]
# The option's name as users meet it, in both spellings.
_OPTION = "--device-map / device_map="


def check_placement(device: str | None, device_map: DeviceMap | None, max_memory: MaxMemory | None) -> None:
    """Refuse placements that contradict each other or that accelerate would misread, before loading anything."""
    if device_map is None:
        if max_memory is not None:
            raise ModelLoadError(
                f"max_memory={dict(max_memory)!r} without a device_map: it is the per-device budget "
                "accelerate splits a model by; pass device_map='auto' with it, or leave it out"
            )
        return
    if device not in (None, "auto"):
        raise ModelLoadError(
            f"device={device!r} and device_map={device_map!r} both place the model; pass one "
            "(keep --device auto when you pass --device-map)"
        )
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAP_STRATEGIES:
            raise ModelLoadError(
                f"{_OPTION}{device_map!r} is not one of accelerate's strategies "
                f"({', '.join(DEVICE_MAP_STRATEGIES)}); for one device use --device {device_map}, "
                'or map modules by name: {"model.layers.0": "cpu", "model.layers.1": "disk", ...}'
            )
    elif not device_map or not all(
        isinstance(key, str) and isinstance(value, str | int) for key, value in device_map.items()
    ):
        raise ModelLoadError(
            f"{_OPTION}{device_map!r}: expected module name -> device, such as "
            '{"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", ...}'
        )


def boot_split(
    name: str,
    boot: Callable[..., TransformerBridge],
    *,
    device_map: DeviceMap,
    max_memory: MaxMemory | None,
) -> TransformerBridge:
    """`boot(device_map=..., max_memory=..., offload_folder=...)`, with a folder the bridge owns."""
    root = cache_root() / "offload"
    root.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="seqprobe-", dir=root)
    try:
        memory = dict(max_memory) if max_memory is not None else None
        bridge = boot(device_map=device_map, max_memory=memory, offload_folder=folder)
    except (ValueError, KeyError, NotImplementedError) as error:
        shutil.rmtree(folder, ignore_errors=True)
        reason = " ".join(str(error).split()).rstrip(".")  # one line, whatever transformers or accelerate wrote
        raise ModelLoadError(
            f"cannot load {name!r} with {_OPTION}{device_map!r}: {reason}. Fix: use --device-map auto, "
            "or a map that names every module, keeps tied modules (embed_tokens and lm_head) on one device, "
            "and uses only GPUs or only cpu/disk (transformer_lens refuses a mix); or load on one --device"
        ) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(bridge, shutil.rmtree, folder, ignore_errors=True)
    if str(bridge.cfg.device) == "meta":
        # transformer_lens puts input tokens where the embedding's weights are, and offloaded ones are nowhere.
        raise ModelLoadError(
            f"cannot load {name!r} with {_OPTION}{device_map!r}: it offloads the token embedding, so "
            "transformer_lens has no device to put input tokens on. Fix: map the embedding (and lm_head, "
            "when tied to it) to cpu or a GPU; with --device-map auto, leave the first device room for it "
            "(a larger max_memory)"
        )
    return bridge


def device_map_of(bridge: TransformerBridge) -> dict[str, str | int]:
    """Where accelerate placed each module (its `hf_device_map`); empty for a model loaded on one device."""
    return dict(getattr(bridge.original_model, "hf_device_map", None) or {})


def placement_of(bridge: TransformerBridge) -> str:
    """ModelInfo.device: the one device, or "split: " and every place a device_map put modules."""
    device_map = device_map_of(bridge)
    places = sorted({f"cuda:{place}" if isinstance(place, int) else str(place) for place in device_map.values()})
    if len(places) > 1:
        return "split: " + ", ".join(places)
    if places:
        return places[0]
    return str(next(bridge.original_model.parameters()).device)
