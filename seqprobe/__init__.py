"""seqprobe: test what a language model can do, and how it does it.

Public names are imported lazily, so that `import seqprobe.plugin` (which pytest does at start-up
through the `pytest11` entry point) does not pull in torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from seqprobe.loading.known import DEFAULT_MODEL  # torch-free, so the plugin can name it

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
    "CaseResult": "seqprobe.records.results",
    "RunResults": "seqprobe.records.results",
    "load_model": "seqprobe.loading.models",
    "LoadedModel": "seqprobe.loading.models",
    "ModelInfo": "seqprobe.loading.models",
    "KNOWN_MODELS": "seqprobe.loading.known",
    "PatchingPair": "seqprobe.engine.patching",
    "PatchingRuns": "seqprobe.engine.patching",
    "SweepResult": "seqprobe.engine.patching",
    "make_pair": "seqprobe.engine.patching",
    "prepare_patching": "seqprobe.engine.patching",
    "patch_sweep": "seqprobe.engine.patching",
    "logit_diff_metric": "seqprobe.engine.metric",
    "recovery": "seqprobe.engine.metric",
    "attribution_patching": "seqprobe.engine.attribution",
    "direct_logit_attribution": "seqprobe.engine.attribution",
    "logit_lens": "seqprobe.engine.attribution",
    "agreement": "seqprobe.engine.attribution",
    "save_ablated_copy": "seqprobe.ablation",
    "resolve_model": "seqprobe.loading.models",
    "run": "seqprobe.notebook",
    "NotebookResults": "seqprobe.notebook",
    "cases": "seqprobe.expect",
    "expect_case": "seqprobe.expect",
    "expect_completion": "seqprobe.expect",
    "expect_patching": "seqprobe.expect",
    "expect_family": "seqprobe.expect",
    "expect_invariance": "seqprobe.expect",
    "expect_direction": "seqprobe.expect",
    "ExpectationFailed": "seqprobe.expect",
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
    from seqprobe.engine.attribution import agreement, attribution_patching, direct_logit_attribution, logit_lens
    from seqprobe.engine.metric import logit_diff_metric, recovery
    from seqprobe.engine.patching import (
        PatchingPair,
        PatchingRuns,
        SweepResult,
        make_pair,
        patch_sweep,
        prepare_patching,
    )
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
    from seqprobe.expect import (
        ExpectationFailed,
        cases,
        expect_case,
        expect_completion,
        expect_direction,
        expect_family,
        expect_invariance,
        expect_patching,
    )
    from seqprobe.loading.known import KNOWN_MODELS
    from seqprobe.loading.models import LoadedModel, ModelInfo, load_model, resolve_model
    from seqprobe.notebook import NotebookResults, run
    from seqprobe.records.results import CaseResult, RunResults
