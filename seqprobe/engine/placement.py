"""Where a module's weights live and where it runs, for models split across devices or offloaded.

A model loaded with a `device_map` (`seqprobe.loading.models.load_model(..., device_map=...)`) is
dispatched by accelerate: each module runs on an *execution device*, and the weights of modules
mapped to "disk" (or to "cpu" when the model also uses a GPU) are *offloaded*: the module holds
meta placeholders, and a hook on it loads the real weights for the length of each call. Calling a
module is therefore always safe; reading its `.weight` directly is not (a meta tensor has a shape
but no values, so arithmetic on it fails). The engine reads weights directly in a few places (one
head's share of the output projection, the unembedding rows a metric needs, a norm's scale frozen
for direct attribution); each goes through `materialized`.

accelerate's hooks are recognised by their attributes (`_hf_hook`, `offload`, `execution_device`,
`pre_forward`/`post_forward`), not imported, so a model in memory (no hooks) costs nothing and
`seqprobe.engine` does not import accelerate. Unlike `accelerate.utils.align_module_device` this
also finds an offloading hook inside a `SequentialHook` (what accelerate builds when a module gets
a second hook). Only a module's *own* hook counts (`vars(module)`): TransformerBridge's wrappers
forward attribute reads to the module they wrap, so `wrapper._hf_hook` is the wrapped module's
hook, and calling it on the wrapper, which owns no weights, would materialize nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["execution_device", "is_offloaded", "materialized", "read_weights"]


def _own_hooks(module: nn.Module) -> tuple[Any, ...]:
    """The accelerate hooks attached to `module` itself (a SequentialHook's members, unpacked)."""
    hook = vars(module).get("_hf_hook")
    if hook is None:
        return ()
    return tuple(getattr(hook, "hooks", (hook,)))


def _offloading_hooks(module: nn.Module) -> Iterator[tuple[nn.Module, Any]]:
    for submodule in module.modules():
        for hook in _own_hooks(submodule):
            if getattr(hook, "offload", False):
                yield submodule, hook


def is_offloaded(module: nn.Module) -> bool:
    """Whether any weight in `module` (or below it) is offloaded: a meta placeholder between calls."""
    return next(_offloading_hooks(module), None) is not None


@contextlib.contextmanager
def materialized(module: nn.Module) -> Iterator[nn.Module]:
    """`module` with every offloaded weight in it loaded on its execution device, for the block's length.

    What accelerate does around the module's own forward, done around a direct read. Tensors read
    inside stay valid afterwards (the hook puts new placeholders in the module; it does not free
    what was loaded), but they are copies: writing to them changes nothing the next call reads.
    For a module in memory this yields it untouched.
    """
    hooks = list(_offloading_hooks(module))
    with contextlib.ExitStack() as stack:
        for submodule, hook in hooks:
            hook.pre_forward(submodule)
            stack.callback(hook.post_forward, submodule, None)
        yield module


def execution_device(module: nn.Module) -> torch.device:
    """The device `module` computes on: its accelerate hook's execution device, else its weights'.

    For a model in memory this is the device of the first weight found, so nothing moves.
    """
    for submodule in module.modules():
        for hook in _own_hooks(submodule):
            device = getattr(hook, "execution_device", None)
            if device is not None:
                # accelerate names a GPU by its index
                return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        for tensor in chain(submodule.parameters(recurse=False), submodule.buffers(recurse=False)):
            if not tensor.is_meta:
                return tensor.device
    return torch.device("cpu")


def read_weights(module: nn.Module, *names: str, device: torch.device | None = None) -> tuple[Tensor, ...]:
    """`module`'s tensors `names` (default: its weight), materialized if offloaded, on `device` if given."""
    with materialized(module):
        tensors = tuple(getattr(module, name) for name in names or ("weight",))
    return tensors if device is None else tuple(tensor.to(device) for tensor in tensors)
