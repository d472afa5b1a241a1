"""Import a D4RL-format HDF5 file as a Minari dataset.

    rate-import-d4rl FILE DATASET_ID [--env Hopper-v5] [--overwrite] [--keep-infos]
    python -m rate.cli.import_d4rl ...                  (the same command)

Prints one summary line: episodes and steps written, a last episode that had no terminal or
timeout flag (kept as truncated), and the file's arrays that were not written (``infos/*``
unless --keep-infos).  Bad input or a failed write (a read-only Minari root, a full disk) is one
``error:`` line and exit status 2; an existing dataset is replaced only with --overwrite, and only
once the new one is complete.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rate.cli.run import error_exit, interrupted, make_parser, write_error_types
from rate.data.d4rl import import_d4rl
from rate.data.episodes import DatasetError


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("rate-import-d4rl", __doc__)
    parser.add_argument("file", type=Path, help="a D4RL HDF5 file")
    parser.add_argument("dataset_id", help="the Minari id to write, NAMESPACE/NAME-vN (under MINARI_DATASETS_PATH)")
    parser.add_argument("--env", help="Gymnasium id stored with the dataset (e.g. Hopper-v5)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset of this id (once the new one is complete)")
    parser.add_argument("--keep-infos", action="store_true", help="write the per-step infos/* arrays as episode infos")
    args = parser.parse_args(argv)
    try:
        _, summary = import_d4rl(args.file, args.dataset_id, args.env, args.overwrite, args.keep_infos)
    except (DatasetError, FileExistsError, ValueError) + write_error_types() as err:  # ValueError: a malformed id
        return error_exit(err)
    except KeyboardInterrupt:  # (the dataset is written beside its place and moved in once complete)
        return interrupted(f"nothing was written ({args.dataset_id}, if there was one, is as it was)")
    print(summary.line(args.dataset_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
