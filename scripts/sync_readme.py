"""Rewrite the settings table in README.md from the settings model (`make docs`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!-- settings:start -->\n).*?(<!-- settings:end -->)", re.S)


def main() -> int:
    table = subprocess.run(
        [sys.executable, "-m", "arrowport", "settings"], check=True, capture_output=True, text=True
    ).stdout
    text = README.read_text()
    README.write_text(BLOCK.sub(lambda m: m[1] + table + m[2], text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
