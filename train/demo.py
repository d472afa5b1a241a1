"""The RMT demo (`python -m train.demo`): reverse in 4 segments, three models side by side.

Trains RMT (memory tokens), a Transformer-XL (cache) and a plain Transformer on reverse cut into
4 segments (configs/algorithmic/demo.yaml), evaluates each by free-running greedy generation and
prints a table.  About 3-4 minutes on 2 CPU cores.  Checkpoints and TensorBoard logs go to
runs/demo/<model>/, the table to runs/demo/summary.md; a demo that ran there before is replaced
only with --overwrite (each model's old run once its new one has a checkpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from train.experiments.algorithmic import AlgorithmicConfig
from rate.run_folder import claimed_run_dir
from rate.config import atomic_write_text, load_yaml
from train.algorithmic import train
from rate.cli.run import USER_ERRORS, interruptible

MODELS = {
    "RMT (memory tokens)": lambda seg_len: ["model.num_mem_tokens=" + str(seg_len)],
    "Transformer-XL (cache)": lambda seg_len: ["model.num_mem_tokens=0", f"model.mem_len={seg_len}"],
    "Transformer (no memory)": lambda seg_len: ["model.num_mem_tokens=0"],
}


@interruptible
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/algorithmic/demo.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--overwrite", action="store_true", help="replace the runs of a demo made in --out before")
    args = parser.parse_args(argv)
    try:
        return demo(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an output folder that cannot be written, a full disk
        print(f"error: file system: {err}", file=sys.stderr)
        return 2


def demo(args: argparse.Namespace) -> int:
    """Train and evaluate the three models; print and write the summary table."""
    base = load_yaml(AlgorithmicConfig, args.config)
    print(f"reverse, source length {base.task.length}: {base.task.input_len} tokens in {base.segments} "
          f"segments of {base.segment_len}; the answer needs the source, which lies in earlier segments")
    folders = {name: args.out / name.split()[0].lower() for name in MODELS}
    rows = []
    with contextlib.ExitStack() as held:
        for folder in folders.values():  # every folder refused or held before the first model trains
            # (a second demo fails here; the demo has no --resume)
            held.enter_context(claimed_run_dir(folder, False, args.overwrite, (None, "--overwrite", "--out")))
        for name, overrides in MODELS.items():
            cfg = load_yaml(AlgorithmicConfig, args.config, overrides(base.segment_len))
            start = time.time()
            # (its checkpoint, with the metrics, in there)
            _, metrics = train(cfg, folders[name], overwrite=args.overwrite)
            rows.append((name, metrics, time.time() - start))
    lines = [
        "| model | generated per-token accuracy | whole answer exact | teacher-forced accuracy | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, m, secs in rows:
        lines.append(f"| {name} | {m['gen_token_acc']:.3f} | {m['answer_acc']:.3f} | {m['tf_token_acc']:.3f} | {secs:.0f} |")
    table = "\n".join(lines)
    chance = base.task.chance
    summary = (f"# Demo: reverse in {base.segments} segments (seed {base.train.seed}, {base.train.steps} steps)\n\n"
               f"{table}\n\nChance per token: {chance:.3f}. Checkpoints: {args.out}/<model>/; "
               f"evaluate again with `python -m eval.algorithmic {args.out}/rmt`.\n")
    atomic_write_text(args.out / "summary.md", summary)
    print("\n" + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
