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
