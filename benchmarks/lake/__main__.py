"""``python -m benchmarks.lake``: runs :func:`benchmarks.lake.run.main` with the command line's
options (``--quick``, ``--nodes``, ``--no-file``, ``--memory-limit``, ``--output``) and exits
with its status; everything else lives in the package's modules."""

from __future__ import annotations

import sys

from benchmarks.lake.run import main

if __name__ == "__main__":
    sys.exit(main())
