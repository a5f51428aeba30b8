"""``python -m tests.chaos [--quick]``: run the chaos scenarios; exit 1 when a verdict fails."""

from __future__ import annotations

import sys

from tests.chaos.harness import main

sys.exit(main(sys.argv[1:]))
