"""``python -m train --model <name>`` (``make train MODEL=<name> [NPROC=n] [RESUME=1]``): train a timm backbone
on a dataset in the contest layout and keep the best checkpoint by validation micro-F1.

Reads ``configs/models/<name>.yaml``; ``--data`` and ``--set key=value`` override its keys. Logs loss, micro-/
macro-F1 and lr to TensorBoard under ``runs/<name>/<time>/`` (plus hparams, the confusion matrix and per-class F1
of the best epoch); writes ``artifacts/<name>/best.pt`` and, every epoch, ``artifacts/<name>/last.pt`` (model,
optimizer, scheduler, AMP scaler, EMA, epoch, best metrics, RNG states) for ``--resume``. Under ``torchrun``
it trains with DistributedDataParallel (NCCL on GPUs, gloo on CPU); rank 0 logs, validates and saves.
"""

from __future__ import annotations

import sys
from pathlib import Path

from runtime.config import add_set_argument, parse_overrides
from runtime.errors import ArgumentParser, UserError, description, positive_int, run_cli
from train.config import load_train_config
from train.kfold import cross_validate, fold_config, fold_matches, fold_name, fold_record, prepare_folds
from train.train import train, write_pretrained


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m train``."""
    p = ArgumentParser(prog="python -m train", description=description(__doc__))
    p.add_argument("--model", required=True, help="name in configs/models/ (or a YAML path)")
    p.add_argument("--data", help="dataset folder (overrides the config's data)")
    p.add_argument("--epochs", type=positive_int, help="override epochs")
    p.add_argument("--resume", action="store_true", help="continue from artifacts/<model>/last.pt")
    add_set_argument(p)
    p.add_argument(
        "--pretrained-only", action="store_true",
        help="no training: artifacts/<model>_pretrained/best.pt (pretrained backbone, untrained head) for features",
    )  # fmt: skip
    p.add_argument("--folds", type=int, help="k-fold cross-validation: K models + oof.csv (see train.kfold)")
    p.add_argument("--folds-csv", help="with --folds: CSV cut into folds (default: train.csv)")
    p.add_argument("--fold", type=int, help="with --folds: train only this fold (0-based)")
    p.add_argument("--nproc", type=positive_int, default=1, help="with --folds: torchrun processes per fold")
    args = p.parse_args(argv)
    overrides = parse_overrides(args.set)
    if args.data:
        overrides["data"] = args.data
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    name, cfg = load_train_config(args.model, overrides)
    if args.pretrained_only:
        if args.folds is not None or args.resume or args.fold is not None:
            raise UserError("--pretrained-only trains nothing: it goes without --folds, --fold and --resume")
        path = write_pretrained(name, cfg)
        print(f"{path}: {cfg.architecture} with its pretrained backbone, head untrained (for features only)",
              file=sys.stderr)  # fmt: skip
        return 0
    if args.folds is None:
        if args.fold is not None or args.nproc > 1 or args.folds_csv:
            raise UserError(
                "--fold, --folds-csv and --nproc go with --folds (plain DDP: torchrun -m train, or make train NPROC=n)"
            )
        train(name, cfg, resume=args.resume)
        return 0
    if args.folds < 2:
        raise UserError(f"FOLDS={args.folds}: k-fold needs at least 2 folds")
    folds_csv = args.folds_csv or "train.csv"

    if args.fold is None:
        relaunch = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--resume"]
        relaunch = [
            a for i, a in enumerate(relaunch) if not a.startswith("--nproc") and relaunch[i - 1 : i] != ["--nproc"]
        ]
        cross_validate(name, cfg, args.folds, folds_csv, args.resume, args.nproc, relaunch)
        return 0
    if not 0 <= args.fold < args.folds:
        raise UserError(f"--fold {args.fold}: choose 0..{args.folds - 1}")
    folder = Path(cfg.artifacts) / fold_name(name, args.fold)
    if args.resume and not fold_matches(folder, fold_record(cfg, args.folds, args.fold, folds_csv)):
        raise UserError(f"{folder}: made with another FOLDS, seed, CSV or config; train it without --resume")
    prepare_folds(name, cfg, args.folds, folds_csv)
    train(fold_name(name, args.fold), fold_config(name, cfg, args.fold), resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
