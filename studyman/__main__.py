"""``python -m studyman``: the same command line as the ``studyman`` script."""

from __future__ import annotations

import sys

from studyman.cli import main

if __name__ == "__main__":
    sys.exit(main())
