"""seqprobe: test what a language model can do, and how it does it.

Public names are imported lazily, so that `import seqprobe.plugin` (which pytest does at start-up
through the `pytest11` entry point) does not pull in torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Defined here, not in seqprobe.models, so the plugin and the CLI can name it without importing torch.
DEFAULT_MODEL = "smollm2-135m"

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "SeqprobeError": "seqprobe.errors",
    "CaseFileError": "seqprobe.errors",
    "TokenizationError": "seqprobe.errors",
    "ModelLoadError": "seqprobe.errors",
    "WeightsIntegrityError": "seqprobe.errors",
    "PatchingError": "seqprobe.errors",
    "BaselineError": "seqprobe.errors",
    "AblationError": "seqprobe.errors",
    "CaseResult": "seqprobe.results",
    "RunResults": "seqprobe.results",
    "load_model": "seqprobe.models",
    "LoadedModel": "seqprobe.models",
    "ModelInfo": "seqprobe.models",
    "KNOWN_MODELS": "seqprobe.models",
    "PatchingPair": "seqprobe.patching",
    "PatchingRuns": "seqprobe.patching",
    "SweepResult": "seqprobe.patching",
    "make_pair": "seqprobe.patching",
    "prepare_patching": "seqprobe.patching",
    "patch_sweep": "seqprobe.patching",
    "logit_diff_metric": "seqprobe.patching",
    "recovery": "seqprobe.patching",
    "attribution_patching": "seqprobe.attribution",
    "direct_logit_attribution": "seqprobe.attribution",
    "logit_lens": "seqprobe.attribution",
    "agreement": "seqprobe.attribution",
    "save_ablated_copy": "seqprobe.ablation",
}

__all__ = ["DEFAULT_MODEL", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'seqprobe' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:
    from seqprobe.ablation import save_ablated_copy
    from seqprobe.attribution import agreement, attribution_patching, direct_logit_attribution, logit_lens
    from seqprobe.errors import (
        AblationError,
        BaselineError,
        CaseFileError,
        ModelLoadError,
        PatchingError,
        SeqprobeError,
        TokenizationError,
        WeightsIntegrityError,
    )
    from seqprobe.models import KNOWN_MODELS, LoadedModel, ModelInfo, load_model
    from seqprobe.patching import (
        PatchingPair,
        PatchingRuns,
        SweepResult,
        logit_diff_metric,
        make_pair,
        patch_sweep,
        prepare_patching,
        recovery,
    )
    from seqprobe.results import CaseResult, RunResults
