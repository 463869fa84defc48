"""Types the command modules share."""

from __future__ import annotations

import argparse
from typing import TypeAlias

#: What ``ArgumentParser.add_subparsers()`` returns; each command module registers on it.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
