"""The README states what the code does: its settings table and its two commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_settings_table_matches_the_settings_model() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "arrowport", "settings"], check=True, capture_output=True, text=True
    ).stdout
    block = re.search(r"<!-- settings:start -->\n(.*?)<!-- settings:end -->", README, re.S)
    assert block is not None, "README has no settings block"
    assert block[1] == printed, "README settings table is stale: run `make docs`"


def test_readme_quick_start_is_make_serve_and_make_test() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make serve" in quick_start
    assert "make test" in quick_start
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci
