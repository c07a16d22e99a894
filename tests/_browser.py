"""Open a page in headless Chromium and read back what it drew: its DOM, its JavaScript errors, a screenshot.

Tests that must know a page works in a browser (not only that its HTML looks right) run it here.
Chromium is driven from the command line only (`--dump-dom`, `--screenshot`), so no driver
library is needed; each call starts a fresh browser with its own throwaway profile on a
file:// page.

JavaScript errors are caught by `with_error_hook`, which puts a script first in the page's
<head>: it records uncaught errors, rejected promises and console.error calls into an attribute
of the <html> element, where `--dump-dom` shows them and `recorded_errors` reads them back. A
test's own probe script can leave its findings the same way, for `recorded` to read.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "CHROMIUM_NAMES",
    "dump_dom",
    "ids_containing",
    "recorded",
    "recorded_errors",
    "require_chromium",
    "screenshot",
    "with_error_hook",
]

CHROMIUM_NAMES = ("chromium", "chromium-browser")
ERRORS_ATTRIBUTE = "data-js-errors"
ERROR_HOOK = f"""<script>
(() => {{
  const errors = [];
  const record = (text) => {{
    errors.push(String(text));
    document.documentElement.setAttribute("{ERRORS_ATTRIBUTE}", JSON.stringify(errors));
  }};
  window.addEventListener("error", (event) => record(event.message + " at " + event.filename + ":" + event.lineno));
  window.addEventListener("unhandledrejection", (event) => record("unhandled rejection: " + event.reason));
  const consoleError = console.error;
  console.error = (...args) => {{ record("console.error: " + args.join(" ")); consoleError(...args); }};
}})();
</script>"""
# Elements that never have an end tag, so never hold children.
VOID_ELEMENTS = frozenset("area base br col embed hr img input link meta source track wbr".split())


def require_chromium() -> str:
    """The Chromium executable on PATH; the calling test is skipped when there is none."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed: apt-get install chromium")


def with_error_hook(page: str) -> str:
    """`page` with `ERROR_HOOK` as the first thing in its <head>, before any of its own scripts run."""
    head = page.index("<head>") + len("<head>")
    return page[:head] + ERROR_HOOK + page[head:]


def recorded_errors(dom: str) -> list[str]:
    """The errors `ERROR_HOOK` recorded in a dumped DOM; [] when there were none."""
    return recorded(dom, ERRORS_ATTRIBUTE, missing=[])


def recorded(dom: str, attribute: str, *, missing: Any = None) -> Any:
    """The JSON a script left in `attribute` of the <html> element, or `missing` when it left none."""
    found = re.search(rf'<html[^>]*\s{attribute}="([^"]*)"', dom)
    return json.loads(html.unescape(found.group(1))) if found else missing


def dump_dom(chromium: str, page: Path, *, budget_ms: int = 5000, timeout: float = 60) -> str:
    """The page's DOM once its scripts have run for `budget_ms` of (virtual, fast-forwarded) time."""
    return _run(chromium, page, "--dump-dom", f"--virtual-time-budget={budget_ms}", timeout=timeout)


def screenshot(
    chromium: str,
    page: Path,
    out: Path,
    *,
    size: tuple[int, int] = (1280, 2400),
    budget_ms: int = 5000,
    timeout: float = 60,
) -> Path:
    """A PNG of the page's first `size` pixels (width, height), written to `out`."""
    _run(
        chromium,
        page,
        f"--screenshot={out}",
        f"--window-size={size[0]},{size[1]}",
        "--hide-scrollbars",
        f"--virtual-time-budget={budget_ms}",
        timeout=timeout,
    )
    if not out.is_file():
        raise AssertionError(f"chromium wrote no screenshot to {out}")
    return out


def ids_containing(dom: str, *, css_class: str) -> set[str]:
    """The ids of elements that have a descendant of class `css_class` (e.g. plotly's "main-svg")."""
    walker = _Nesting(css_class)
    walker.feed(dom)
    walker.close()
    return walker.containing


def _run(chromium: str, page: Path, *args: str, timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="seqprobe-chromium-") as profile:
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            *args,
            page.resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"chromium exited {done.returncode}: {' '.join(command)}\n{done.stderr[-2000:]}")
    return done.stdout


class _Nesting(HTMLParser):
    """Walks a DOM keeping the ids of the open elements, noting those around an element of a class."""

    def __init__(self, css_class: str) -> None:
        super().__init__(convert_charrefs=True)
        self.css_class = css_class
        self.containing: set[str] = set()
        self.open: list[str] = []  # the id (or "") of each element enclosing the current one

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_startendtag(tag, attrs)
        if tag not in VOID_ELEMENTS:
            self.open.append(dict(attrs).get("id") or "")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.css_class in (dict(attrs).get("class") or "").split():
            self.containing.update(element for element in self.open if element)

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID_ELEMENTS and self.open:
            self.open.pop()
