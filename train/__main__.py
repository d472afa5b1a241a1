"""`python -m train CONFIG [key=value ...]`: offline RATE training (see train/rate_offline.py)."""

import sys

from train.rate_offline import main

sys.exit(main())
