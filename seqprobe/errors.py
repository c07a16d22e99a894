"""seqprobe's exceptions: one root, a short tree, each message actionable.

SeqprobeError
├── CaseFileError (ValueError)        a case file is malformed: names file:line and the fix
│   └── TokenizationError             a next-token bar on a longer answer, a prompt too long or empty
├── ModelLoadError (RuntimeError)     a model name, file or download cannot be resolved
│   └── WeightsIntegrityError         a file's sha256 differs from the one expected
├── PatchingError (ValueError)        clean/corrupted mismatch, or recovery is undefined
│   └── CircuitError                  a circuit or ablation the model or its scope cannot run
├── BaselineError (ValueError)        a baseline file is missing, unreadable or incomparable
├── AblationError (ValueError)        a head to ablate that the model lacks, or an occupied folder
└── SequenceIndexError (IndexError)   a step past the end of a sequence that does not wrap
                                      (defined beside the sequences, seqprobe.casefiles.sequences)
"""

from __future__ import annotations

__all__ = [
    "AblationError",
    "BaselineError",
    "CaseFileError",
    "CircuitError",
    "ModelLoadError",
    "PatchingError",
    "SeqprobeError",
    "TokenizationError",
    "WeightsIntegrityError",
]


class SeqprobeError(Exception):
    """Root of every error seqprobe raises on purpose."""


class CaseFileError(SeqprobeError, ValueError):
    """A case file cannot be used; the message names the file, the line and the fix."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")


class TokenizationError(CaseFileError):
    """A prompt or answer does not tokenize as a case needs (one-token answer, bounded prompt)."""


class ModelLoadError(SeqprobeError, RuntimeError):
    """A model cannot be resolved or loaded; the message says where seqprobe looked."""


class WeightsIntegrityError(ModelLoadError):
    """Downloaded or cached weights do not have the sha256 they must have."""


class PatchingError(SeqprobeError, ValueError):
    """An activation-patching experiment is ill-posed (length mismatch, undefined recovery)."""


class CircuitError(PatchingError):
    """A circuit or ablation cannot be run: a component the model lacks or outside the scope, a bad reference."""


class BaselineError(SeqprobeError, ValueError):
    """A baseline results file cannot be compared with this run."""


class AblationError(SeqprobeError, ValueError):
    """A damaged copy cannot be made: a head the model does not have, or a folder that would lose files."""
