"""Evaluate a language-model checkpoint: bits per character over the whole stream, in order.

    python -m eval.lm CHECKPOINT [--split test] [--batch 16] [--no-progress]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rate.checkpoint import CheckpointError, load_checkpoint
from rate.tasks.lm_data import CorpusError, load_split
from train.experiments.lm import CHECKPOINT_KIND, LMExperimentConfig, build_lm, evaluate_stream
from rate.tasks.lm_stream import OrderedStream
from rate.training import positive_int, setup_process
from rate.cli.run import interruptible


@interruptible
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.lm", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--split", choices=["valid", "test"], default="test")
    parser.add_argument("--batch", type=positive_int, help="parallel streams (default: the run's eval_batch_size)")
    parser.add_argument("--data-dir", help="prepared corpus folder (default: the run's data_dir)")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    setup_process(0, args.threads)
    try:
        model, cfg, _ = load_checkpoint(args.checkpoint, CHECKPOINT_KIND, LMExperimentConfig, build_lm)
        data = load_split(args.data_dir or cfg.data_dir, args.split)
        batch = cfg.eval_batch_size if args.batch is None else args.batch
        try:
            stream = OrderedStream(data, batch, cfg.segment_len)
        except ValueError as err:  # a split too short for that many streams
            raise CorpusError(f"--batch {batch}, segment_len {cfg.segment_len}: {err}") from None
    except (CheckpointError, CorpusError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = evaluate_stream(model, stream, progress=not args.no_progress)
    # (the batch and segment decide the streams, so the bpc: a batch other than the run's gives another number)
    print(json.dumps({"checkpoint": str(args.checkpoint), "split": args.split, "batch": batch,
                      "segment_len": cfg.segment_len, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
