"""The package's public names: all resolve, and importing the plugin stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import seqprobe


@pytest.mark.parametrize("name", seqprobe.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(seqprobe, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'patch_everything'"):
        seqprobe.patch_everything  # noqa: B018


def test_importing_the_plugin_loads_no_torch() -> None:
    """pytest imports the plugin in every session, also in projects that never load a model."""
    code = "import sys, seqprobe, seqprobe.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "False\n"


TORCH_FREE_PACKAGES = ("seqprobe.casefiles", "seqprobe.records", "seqprobe.vocabulary", "seqprobe.loading.known")
HEAVY_MODULES = ("torch", "transformers", "transformer_lens", "seqprobe.engine", "seqprobe.checks")


@pytest.mark.parametrize("package", TORCH_FREE_PACKAGES)
def test_the_torch_free_layers_stay_torch_free(package: str) -> None:
    """Parsing case files, writing reports and comparing baselines never load torch or the engine."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"root = importlib.import_module({package!r})\n"
        "for info in pkgutil.walk_packages(getattr(root, '__path__', []), prefix=root.__name__ + '.'):\n"
        "    importlib.import_module(info.name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY_MODULES!r} or m.startswith({HEAVY_MODULES!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"


def test_every_case_kind_has_a_runner() -> None:
    from seqprobe.casefiles.kinds import CASE_KINDS
    from seqprobe.checks.runners import RUNNERS

    assert sorted(CASE_KINDS) == sorted(RUNNERS)


def test_the_readme_draws_every_module() -> None:
    """The Development section's tree lists each module once, in its folder: docs that match the code."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    tree = readme.split("The package, top to bottom", 1)[1].split("```", 2)[1]
    drawn, folder = set(), ""
    for line in tree.splitlines()[2:]:
        match = re.match(r"( *)(\S+)", line)
        if not match:
            continue
        indent, name = len(match[1]), match[2]
        if name.endswith("/"):
            folder = name
        else:
            drawn.add(f"{folder if indent > 2 else ''}{name}")
    modules = {
        path.relative_to(root / "seqprobe").as_posix()
        for path in (root / "seqprobe").rglob("*.py")
        if path.name != "__init__.py" or path.parent == root / "seqprobe"
    }
    assert drawn == modules
