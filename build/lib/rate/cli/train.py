"""Train RATE (or one of its baselines) offline from a Minari dataset, as a YAML config says.

    rate-train CONFIG [key=value ...] [--out runs/NAME] [--resume] [--csv FILE] [--run-name NAME]
    python -m train CONFIG ...                                   (the same command, in the repository)
    torchrun --nproc_per_node 2 -m train CONFIG ...              (data parallel, same command line)

Bad input (config, dataset, checkpoint, a held run folder) is one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rate.cli.run import run_and_record
from rate.data.episodes import DatasetError
from rate.rl.experiment import RATEExperimentConfig
from rate.rl.trainer import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rate-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.backbone.num_mem_tokens=10")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--resume", action="store_true", help="continue from OUT's last checkpoint")
    parser.add_argument("--csv", type=Path, help="append one result row to this CSV")
    parser.add_argument("--run-name")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_intermixed_args(argv)  # options may come after the overrides too

    def train_run(cfg: RATEExperimentConfig, out: Path) -> dict | None:
        _, metrics = train(cfg, out, resume=args.resume, progress=not args.no_progress)
        return metrics if metrics.pop("rank") == 0 else None  # only rank 0 writes the row

    def row(cfg: RATEExperimentConfig, metrics: dict) -> dict:
        success = {f"success_T{t}": r["success"] for t, r in metrics["eval"].items()}
        # Mean episode return: the measure of tasks whose reward is not a success flag (POPGym, MuJoCo).
        returns = {f"return_T{t}": r["return"] for t, r in metrics["eval"].items()}
        return {"train_seconds": metrics["train_seconds"], **success, **returns}

    return run_and_record(args, RATEExperimentConfig, "runs/rate", train_run, row, errors=(DatasetError,))
