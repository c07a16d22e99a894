"""How much memory a stacked batch of patched runs may take, and how many configurations fit in it.

A sweep stacks every patch configuration into one resumed batch; its peak is the MLP step, where
each *lane* (one configuration × pair × computed position) holds the residual stream, its normed
copy and the MLP's hidden activations. Configurations therefore run in chunks of at most
`max_lanes` lanes, sized to a budget: `--max-memory SIZE`, or by default half of what the device
has free. Chunks run one after another, each exactly as the whole batch would (a configuration's
numbers do not depend on the others stacked with it, up to float rounding).

What is per lane and what is not: a chunk's residual streams live in one buffer allocated once
and updated in place (seqprobe.engine.stack), and the keys and values of the positions before the
first difference are the target run's, read by every configuration without a copy per
configuration (seqprobe.engine.shared_prefix); neither grows beyond one copy of the stream per lane.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from seqprobe.engine.forward import ResumableForward

__all__ = ["DEFAULT_SHARE", "PeakMemory", "available_memory", "lane_bytes", "max_lanes"]

# The share of the free memory a sweep may take by default: the rest is for the model, the cached
# runs and whatever else the machine is doing.
DEFAULT_SHARE = 0.5


def available_memory(device: torch.device) -> int:
    """Free bytes on `device`: the CUDA allocator's free memory, or the system's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("cannot read the available memory from /proc/meminfo; give the budget with --max-memory SIZE")


def lane_bytes(forward: ResumableForward, *, n_keys: int) -> int:
    """What one lane holds at the batch's peak, in bytes, attending over `n_keys` positions.

    Four copies of d_model (the stream's buffer, the lanes of several starts concatenated for one
    MLP product, the normed input, the sublayer's output, which is added in place), the MLP's
    hidden activations (three of its width: gate, up and their product), and the attention scores
    of every head, which are softmaxed in float32.
    """
    config = forward.config
    d_mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * forward.d_model
    element = torch.finfo(forward.model.dtype).bits // 8
    return (4 * forward.d_model + 3 * int(d_mlp)) * element + forward.n_heads * n_keys * 4


def max_lanes(forward: ResumableForward, *, n_keys: int, budget: int | None) -> int:
    """How many lanes fit in `budget` bytes (None: `DEFAULT_SHARE` of the device's free memory); at least 1."""
    if budget is None:
        budget = int(available_memory(forward.device) * DEFAULT_SHARE)
    return max(1, budget // lane_bytes(forward, n_keys=n_keys))


class PeakMemory:
    """The most memory a block of work takes above what was in use when it began, in bytes.

    On CUDA the allocator's own peak (`torch.cuda.max_memory_allocated`). On a CPU, the process's
    resident set sampled every `interval` seconds from /proc/self/statm by a background thread:
    a short spike between two samples can be missed, so it is a lower bound to within one
    interval's allocations.
    """

    def __init__(self, device: torch.device | str, *, interval: float = 0.002) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_bytes = 0
        self._start = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = self._highest = _resident_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            highest = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            highest = max(self._highest, _resident_bytes())
        self.peak_bytes = max(0, highest - self._start)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._highest = max(self._highest, _resident_bytes())


def _resident_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")
