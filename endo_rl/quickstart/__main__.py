"""`python -m endo_rl.quickstart [RECIPE] [--out DIR] [--seed N] [key.sub=value ...]` (also `endo-rl quickstart`)."""

from __future__ import annotations

import sys

from endo_rl.quickstart.command import main

if __name__ == "__main__":
    sys.exit(main())
