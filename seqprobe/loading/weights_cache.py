"""seqprobe's on-disk cache: folders that are slow to make, safe against crashes and races.

Dequantizing a GGUF model takes a minute; reading the result back takes seconds. The cache keeps
such results as *entries*: folders under the cache root, each finished by a completion marker
(`.seqprobe-entry.json`) that lists every file with its size and sha256.

- An entry is used only when its marker is there and every file matches it; anything else (a
  crash mid-write, a truncated or edited file, a stray extra file) is rebuilt, never used.
- An entry is built in a temporary sibling folder and renamed into place, so no reader sees
  half of one.
- Building happens under a file lock on the entry, so two processes asking for the same entry
  at once (pytest-xdist workers) make it once: the second waits, then verifies and reuses it.

Cache root: `$SEQPROBE_CACHE_DIR`, else the platform's user cache folder for "seqprobe".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import platformdirs
from filelock import FileLock, Timeout

__all__ = [
    "CACHE_DIR_ENV",
    "MARKER_NAME",
    "cache_root",
    "ensure_entry",
    "progress",
    "sha256_file",
    "verify_entry",
]

CACHE_DIR_ENV = "SEQPROBE_CACHE_DIR"
MARKER_NAME = ".seqprobe-entry.json"
# Bump when the marker's layout changes, so old entries are rebuilt rather than misread.
_MARKER_FORMAT = 1


def cache_root() -> Path:
    """Where seqprobe keeps downloads and dequantized weights (created on first use)."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("seqprobe"))


def progress(message: str) -> None:
    """One line on stderr for a step that takes long enough to make a user wonder."""
    print(f"seqprobe: {message}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def ensure_entry(entry: Path, build: Callable[[Path], None]) -> Path:
    """Return `entry`, first running `build(folder)` to fill it unless it is already complete.

    `build` writes the entry's files into the empty folder it is given; if it raises, nothing
    is kept and the error propagates. Safe to call from several processes at once.
    """
    if verify_entry(entry) is None:
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{entry}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        progress(f"waiting for another process to finish {entry}")
        lock.acquire()
    try:
        problem = verify_entry(entry)
        if problem is None:  # another process finished it while this one waited
            return entry
        if entry.exists():
            progress(f"rebuilding cache entry {entry}: {problem}")
            _remove(entry)
        _remove_leftovers(entry)
        staging = entry.with_name(f".{entry.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        staging.mkdir()
        try:
            build(staging)
            _write_marker(staging)
            staging.rename(entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # only still there when the build failed
    finally:
        lock.release()
    return entry


def verify_entry(entry: Path) -> str | None:
    """None when `entry` is complete and intact, else why it cannot be used."""
    try:
        marker = json.loads((entry / MARKER_NAME).read_text(encoding="utf-8"))
        if marker.get("format") != _MARKER_FORMAT:
            return f"marker format={marker.get('format')!r}, expected {_MARKER_FORMAT}"
        expected: dict[str, dict[str, object]] = marker["files"]
        found = _relative_files(entry)
        if set(found) != set(expected):
            return f"files differ from its marker: {sorted(found)} != {sorted(expected)}"
        for name, recorded in expected.items():
            path = entry / name
            if path.stat().st_size != recorded["size"]:
                return f"{name} is {path.stat().st_size} bytes, expected {recorded['size']}"
            if sha256_file(path) != recorded["sha256"]:
                return f"{name} has sha256 {sha256_file(path)}, expected {recorded['sha256']}"
    except FileNotFoundError:
        return "missing" if not entry.exists() else "no completion marker (an interrupted build?)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"unreadable marker or file ({type(error).__name__}: {error})"
    return None


def _write_marker(folder: Path) -> None:
    files = {
        name: {"size": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
        for name in _relative_files(folder)
    }
    marker = {"format": _MARKER_FORMAT, "files": files}
    text = json.dumps(marker, indent=2, sort_keys=True)
    (folder / MARKER_NAME).write_text(text, encoding="utf-8")


def _relative_files(folder: Path) -> list[str]:
    """Every file under `folder` except the marker, as posix paths relative to it."""
    return sorted(
        path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file() and path.name != MARKER_NAME
    )


def _remove_leftovers(entry: Path) -> None:
    """Delete what dead builds and removals left; only called while holding the entry's lock."""
    for pattern in (f".{entry.name}.tmp-*", f".{entry.name}.deleting-*"):
        for leftover in entry.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _remove(entry: Path) -> None:
    """Remove an entry without ever leaving a half-deleted one under its real name."""
    doomed = entry.with_name(f".{entry.name}.deleting-{uuid.uuid4().hex[:8]}")
    entry.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)
