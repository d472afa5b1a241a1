"""`python -m train CONFIG [key=value ...]`: offline RATE training (rate/cli/train.py, the console script rate-train)."""

import sys

from rate.cli.train import main

sys.exit(main())
