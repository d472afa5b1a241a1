"""Export a RATE checkpoint's per-step policy to ONNX or torch.export (.pt2), verified against the eager policy.

    rate-export CHECKPOINT --format onnx|pt2 [--out FILE] [--target-return R] [--threads 2]
    python -m rate.cli.export ...                       (the same command)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rate.checkpoint import CheckpointError
from rate.deploy.export import ExportError, export_checkpoint
from rate.deploy.onnx_runner import ArtifactError
from rate.training import positive_int, setup_process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rate-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a RATE checkpoint folder (model.safetensors + config.json)")
    parser.add_argument("--format", choices=["onnx", "pt2"], required=True)
    parser.add_argument("--out", type=Path, help="default: CHECKPOINT/policy.FORMAT")
    parser.add_argument("--target-return", type=float, help="default return to condition on (default: the run's eval one)")
    parser.add_argument("--threads", type=positive_int, default=2)
    args = parser.parse_args(argv)
    setup_process(0, args.threads)
    out = args.out or args.checkpoint / f"policy.{args.format}"
    if out.suffix != f".{args.format}":
        parser.error(f"--out must end in .{args.format}, got {out}")
    try:
        path, diff = export_checkpoint(args.checkpoint, args.format, out, args.target_return)
    except (CheckpointError, ExportError, ArtifactError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); matches the eager policy to {diff:.2e} "
          f"over 120 steps of 3 rows with resets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
