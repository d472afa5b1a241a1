"""Import a D4RL-format HDF5 file as a Minari dataset.

    rate-import-d4rl FILE DATASET_ID [--env Hopper-v5] [--overwrite]
    python -m rate.cli.import_d4rl ...                  (the same command)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rate.data.d4rl import import_d4rl
from rate.data.episodes import DatasetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rate-import-d4rl", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("dataset_id")
    parser.add_argument("--env", help="Gymnasium id stored with the dataset (e.g. Hopper-v5)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset of this id (once the new one is complete)")
    args = parser.parse_args(argv)
    try:
        ds = import_d4rl(args.file, args.dataset_id, args.env, args.overwrite)
    except (DatasetError, FileExistsError, ValueError) as err:  # ValueError: a malformed id or --env
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.dataset_id}: {ds.total_episodes} episodes, {ds.total_steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
