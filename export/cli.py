"""``python -m export``: export a model's checkpoint (or every fold of a k-fold run) to the configured targets
(see :mod:`export.export`)."""

from __future__ import annotations

import sys
from pathlib import Path

from export.config import TARGETS, add_common_args, config_from_args
from export.export import export_model
from export.memory import StepMeter
from runtime.artifacts import PRECISIONS, fold_dirs
from runtime.errors import ArgumentParser, UserError, description, one_line, positive_int, run_cli


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m export``."""
    p = ArgumentParser(prog="python -m export", description=description(__doc__))
    add_common_args(p)
    p.add_argument("--targets", help=f"comma-separated subset of {','.join(TARGETS)} (overrides the config)")
    p.add_argument("--precision", choices=PRECISIONS, help="TensorRT precision (overrides trt_precision)")
    p.add_argument("--allow-degraded", action="store_true", help="install artifacts that fail their gate")
    p.add_argument(
        "--folds", nargs="?", const=0, type=positive_int, metavar="K",
        help="export every fold model fold<k>/ of the finished k-fold run instead (K: check the fold count)",
    )  # fmt: skip
    p.add_argument("--memory-report", metavar="FILE", help="write the peak resident memory of every step (JSON)")
    args = p.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
    cfg = config_from_args(
        args, targets=targets, trt_precision=args.precision, allow_degraded=True if args.allow_degraded else None
    )
    names = [args.model]
    if args.folds is not None:
        folds = fold_dirs(Path(cfg.artifacts) / args.model, args.folds or None)
        names = [f"{args.model}/{p.name}" for p in folds]
    failed = []
    meter = StepMeter(path=Path(args.memory_report)) if args.memory_report else None
    for name in names:  # every fold is tried, as every target is
        if len(names) > 1:
            print(f"== {name}", file=sys.stderr)
        try:
            export_model(name, cfg, meter=meter)
        except UserError as exc:
            if len(names) == 1:
                raise
            print(f"error: {name}: {one_line(exc)}", file=sys.stderr)
            failed.append(name)
        finally:
            if meter is not None:
                meter.write(args.memory_report)
    if failed:
        raise UserError(f"{len(failed)} of {len(names)} fold models did not export cleanly: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
