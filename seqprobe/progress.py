"""A progress bar for work long enough to make a user wonder: loading a model, running many cases.

tqdm's `auto` module draws a widget in Jupyter (with ipywidgets installed) and a text bar
elsewhere. By default the text bar shows only when stderr is a terminal, so CI logs, pipes and
pytest runs (which capture stderr) stay quiet; `enabled` forces it on or off.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["progress_bar"]


def progress_bar(*, total: int, description: str = "", unit: str = "case", enabled: bool | None = None) -> tqdm:
    """A bar counting to `total`; use it as a context manager, `update(n)` it, `set_description` it.

    `enabled=None` shows it in a notebook and on a terminal's stderr; True or False decides.
    """
    with warnings.catch_warnings():
        # In a notebook tqdm.auto warns, once, that its widget is "experimental".
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, disable=None if enabled is None else not enabled)
