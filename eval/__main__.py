"""`python -m eval CHECKPOINT ...`: roll out a RATE policy (rate/cli/evaluate.py, the console script rate-eval)."""

import sys

from rate.cli.evaluate import main

sys.exit(main())
