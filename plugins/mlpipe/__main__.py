"""``python -m mlpipe``: the command line (see mlpipe.cli)."""

from __future__ import annotations

import sys

from mlpipe.cli import main

sys.exit(main())
