"""Export a RATE checkpoint's per-step policy to ONNX or torch.export (.pt2), verified against the eager policy.
Transformer policies with a streaming state export (RATE, RMT, TrXL); DT's sliding window and the
BC baselines do not.

    rate-export CHECKPOINT --format onnx|pt2 [--out FILE] [--target-return R] [--threads N]
    python -m rate.cli.export ...                       (the same command)

The artifact is traced and verified on the CPU (it then runs wherever torch or onnxruntime
does: ``rate.load_policy(FILE)``, ``rate-play-onnx``).  The output folder is checked for writing
before the export starts; a failed write (read-only folder, full disk) is one ``error:`` line and
exit status 2 and leaves no partial file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rate.cli.run import (add_device_arguments, check_file_target, error_exit, file_path, interrupted, make_parser,
                          write_error_types)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("rate-export", __doc__)
    parser.add_argument("checkpoint", type=Path, help="a RATE checkpoint folder (model.safetensors + config.json)")
    parser.add_argument("--format", choices=["onnx", "pt2"], required=True)
    parser.add_argument("--out", type=file_path, help="default: CHECKPOINT/policy.FORMAT")
    parser.add_argument("--target-return", type=float, help="default return to condition on (default: the run's eval one)")
    add_device_arguments(parser, device_help="cpu only: the export is traced and checked on the CPU (the artifact then "
                         "runs wherever torch or onnxruntime runs)")
    args = parser.parse_args(argv)
    out = args.out or args.checkpoint / f"policy.{args.format}"
    if out.suffix.lower() != f".{args.format}":  # (the loader reads the suffix in either case)
        parser.error(f"--out must end in .{args.format}, got {out}")
    from rate.checkpoint import CheckpointError
    from rate.deploy.export import ExportError, export_checkpoint
    from rate.deploy.onnx_runner import ArtifactError
    from rate.training import setup_process

    setup_process(0, args.threads)
    try:
        if args.device not in (None, "cpu"):
            raise ExportError(f"--device {args.device}: the export is traced and verified on the CPU (the artifact "
                              "then runs wherever torch or onnxruntime runs)")
        if not args.checkpoint.is_dir():
            raise CheckpointError(f"{args.checkpoint}: not a checkpoint folder")
        check_file_target(out)  # before tracing, not after it
        # Each stage said as it starts, at a terminal (a log or a caller reading stderr gets the
        # result line, or one error line, alone).
        say = (lambda line: print(line, file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
        path, diff, steps = export_checkpoint(args.checkpoint, args.format, out, args.target_return, say=say)
    except (CheckpointError, ExportError, ArtifactError, ValueError) + write_error_types() as err:
        return error_exit(err)
    except KeyboardInterrupt:  # (the artifact is written whole after its check, or not at all)
        return interrupted(f"{out} not written")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); matches the eager policy to {diff:.2e} "
          f"over {steps} steps of 3 rows (one episode through segment closes, two with resets)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
