"""Write files so that readers see the old content or the new, never half of either.

Reports, results files and baselines are read by people and by later runs; a run killed while
writing must not leave a truncated file in their place. Each write goes to a hidden temporary
file in the target's own folder (so the final rename stays on one filesystem, where
`os.replace` is atomic), is flushed to disk, and only then renamed over the target. If anything
fails on the way, including Ctrl-C, the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "write_text_atomic"]


@contextmanager
def atomic_open(path: str | Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """Yield a file to write; on a clean exit it replaces `path`, on an exception it vanishes.

    Text mode writes UTF-8 with "\\n" line endings on every platform, so reports diff cleanly.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file 0600; keep the mode of the file being replaced, or the usual
        # 0644, so a report stays readable by whoever could read the last one.
        os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically."""
    with atomic_open(path) as handle:
        handle.write(text)
