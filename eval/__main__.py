"""`python -m eval CHECKPOINT ...`: roll out a RATE policy (see eval/rate_rollouts.py)."""

import sys

from eval.rate_rollouts import main

sys.exit(main())
