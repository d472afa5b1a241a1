"""Train RATE (or one of its baselines) offline from a Minari dataset.

    rate-train --dataset ID_OR_FOLDER [--model rate|rmt|trxl|dt|bc_gru|bc_mlp] [key=value ...]
    rate-train CONFIG.yaml [key=value ...] [--dataset ID_OR_FOLDER]
    rate-train ... --print-config                     (the resolved config with every field's doc)
    rate-train --resume --out RUN_FOLDER [key=value ...]   (continue a run with its own config)

With --dataset alone nothing is written by hand: observation and action spaces, the evaluation
environment, return scale and target come from the dataset (rate.rl.from_dataset), the
architecture from --model.  A CONFIG file's values win over the inferred ones; key=value
overrides win over both.  The run folder (--out, default runs/<name>) gets the last checkpoint,
checkpoint_best/, the training state (--resume continues it exactly) and TensorBoard logs; a
folder that holds a run is refused unless --resume or --overwrite.  ``python -m train`` in the
repository is the same command; ``torchrun --nproc_per_node 2 -m train ...`` trains data-parallel.
Bad input (config, dataset, checkpoint, a used run folder, a failed write) is one ``error:``
line and exit status 2; a run that cannot resume (its data or version changed) exits 3, a run
folder another trainer holds 4 (what train.sweep tells apart).
"""

from __future__ import annotations

from pathlib import Path

from rate.cli.run import (add_run_arguments, error_exit, interrupted, make_parser, override_not_config,
                          run_and_record, saved_config)
from rate.data.episodes import DatasetError
from rate.rl.experiment import RATEExperimentConfig
from rate.rl.from_dataset import MODEL_PRESETS, run_name_for


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("rate-train", __doc__)
    add_run_arguments(parser, "runs")
    parser.add_argument("--dataset", help="a Minari dataset id or folder: infer everything the config leaves out")
    parser.add_argument("--model", choices=sorted(MODEL_PRESETS), default=None,
                        help="architecture for --dataset without a CONFIG (default: rate)")
    parser.add_argument("--download", action="store_true", help="with --dataset: fetch a missing id from the Minari "
                                                                "hub (needs the network)")
    args = parser.parse_intermixed_args(argv)  # options may come after the overrides too
    override_not_config(args)  # `rate-train --dataset X train.steps=5`: no CONFIG, all overrides
    from_run = args.resume and not (args.config or args.dataset)  # the run's own config, as saved
    if from_run and args.out is None:
        parser.error("--resume without a CONFIG or --dataset continues the run folder's own config: name the "
                     "folder with --out")
    if args.print_config and not (args.config or args.dataset or from_run):
        from rate.rl.from_dataset import template

        print(template(args.model or "rate"), end="")  # the documented template of a run on any dataset
        return 0
    if from_run and args.model:
        parser.error("--resume --out RUN continues the run's own architecture; --model goes with --dataset")
    if not (args.config or args.dataset or from_run):
        parser.error("give a CONFIG file or --dataset (or --resume --out RUN_FOLDER)")
    if args.model and args.config:
        parser.error("--model picks the architecture when there is no CONFIG; the CONFIG file states its own")
    if args.download and not args.dataset:
        parser.error("--download goes with --dataset")
    if args.config and not Path(args.config).exists() and Path(args.config).suffix not in (".yaml", ".yml"):
        parser.error(f"config file not found: {args.config} (a Minari dataset? rate-train --dataset {args.config})")
    if args.config and Path(args.config).is_dir():  # (a dataset folder, or a run folder, where the config goes)
        parser.error(f"{args.config} is a folder, not a YAML config file: a Minari dataset folder is trained with "
                     "--dataset FOLDER, a run folder continued with --resume --out FOLDER")

    if args.config and not args.dataset:
        warn_if_training_on_the_default_dataset(args.config, args.overrides)
    load_config = None
    if args.dataset:
        from rate.rl.from_dataset import config_for_dataset

        if args.download:
            from rate.data.episodes import open_minari_dataset

            try:
                open_minari_dataset(args.dataset, download=True)
            except DatasetError as err:
                return error_exit(err)
            except KeyboardInterrupt:
                return interrupted(f"the download of {args.dataset} stopped")

        def load_config(overrides: list[str]) -> RATEExperimentConfig:
            return config_for_dataset(args.dataset, args.model or "rate", args.config, overrides)
    elif from_run:
        from rate.rl.model import CHECKPOINT_KIND

        load_config = saved_config(args.out, RATEExperimentConfig, CHECKPOINT_KIND)

    def train_run(cfg: RATEExperimentConfig, out: Path) -> dict | None:
        from rate.api import train

        policy, metrics = train(cfg, out=out, resume=args.resume, overwrite=args.overwrite,
                                progress=not args.no_progress)
        return metrics if policy is not None else None  # only rank 0 writes the row

    def row(cfg: RATEExperimentConfig, metrics: dict) -> dict:
        from rate.rl.trainer import eval_scalars

        # success where the task defines it; the mean return of every task (POPGym, MuJoCo are read by it)
        return {"train_seconds": metrics["train_seconds"], **eval_scalars(metrics["eval"])}

    source = Path(args.config).stem if args.config else run_name_for(args.dataset) if args.dataset else args.out.name
    return run_and_record(args, RATEExperimentConfig, "runs", train_run, row, errors=(DatasetError,),
                          load_config=load_config, source=source)


def warn_if_training_on_the_default_dataset(config: str, overrides: list[str]) -> None:
    """A warning when ``config`` (its ``extends`` included) and ``overrides`` name no dataset_id and
    the default dataset is there to train on: a template copied without ``--dataset`` would train
    on T-Maze data without a word.  (Where the default is missing, its not-found error says it is
    the default.)"""
    import warnings

    from rate.config import ConfigError, apply_overrides, read_config_file
    from rate.data.minari_writer import dataset_folder
    from rate.rl.experiment import DEFAULT_DATASET

    try:
        named = "dataset_id" in apply_overrides(read_config_file(config), overrides)
        default_here = dataset_folder(DEFAULT_DATASET).is_dir()
    except (ConfigError, OSError, ValueError):  # (the config's or the root's own error follows, in one line)
        return
    if not named and default_here:
        warnings.warn(f"{config} names no dataset_id: training on the default, {DEFAULT_DATASET} (name the data "
                      "with --dataset ID or dataset_id=ID)", stacklevel=2)


if __name__ == "__main__":
    raise SystemExit(main())
