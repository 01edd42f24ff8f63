"""``python -m runtime.predict``: write a submission (``image_id,label``) for a CSV of image ids with any engine.

Example::

    python -m runtime.predict --engine onnx --model artifacts/resnet18_cpu --data data/elpv \\
        --csv test.csv --out submission.csv
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from runtime.dataset import image_dir_for, image_paths, read_csv, require_dir
from runtime.engines import ENGINE_NAMES, create_engine
from runtime.errors import ArgumentParser, description, positive_int, run_cli
from runtime.pipeline import predict_logits, write_submission


def build_parser() -> ArgumentParser:
    """Command-line options of ``runtime.predict``."""
    p = ArgumentParser(prog="python -m runtime.predict", description=description(__doc__))
    p.add_argument("--engine", choices=ENGINE_NAMES, default="onnx", help="backend (default: onnx)")
    p.add_argument("--model", required=True, help="artifact file, or a model folder such as artifacts/<model>")
    p.add_argument("--data", required=True, help="dataset folder in the contest layout")
    p.add_argument("--csv", default="test.csv", help="CSV inside --data with an image_id column (default: test.csv)")
    p.add_argument("--images", help="image folder (default: <data>/<csv stem>/ or <data>/train/)")
    p.add_argument("--out", default="submission.csv", help="output CSV (default: submission.csv)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default: 32)")
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        help="artifact precision inside a model folder (default: fp32; a file runs at its own precision)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--threads", type=positive_int, default=None, help="intra-op CPU threads (default: library default)")
    p.add_argument("--workers", type=positive_int, default=2, help="image-decoding threads (default: 2)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code. Bad input raises :class:`runtime.errors.UserError`."""
    args = build_parser().parse_args(argv)
    data = require_dir(args.data)
    csv_path = data / args.csv
    df = read_csv(csv_path)
    images = Path(args.images) if args.images else image_dir_for(data, args.csv)
    require_dir(images, "image folder")
    ids = df["image_id"].tolist()
    paths = image_paths(images, ids)
    with create_engine(
        args.engine, args.model, device=args.device, threads=args.threads, precision=args.precision
    ) as engine:
        start = time.perf_counter()
        logits = predict_logits(engine, paths, args.batch_size, args.workers, progress=not args.no_progress)
        seconds = time.perf_counter() - start
        info = engine.describe()
    labels = [engine.meta.class_names[i] for i in np.argmax(logits, axis=1)]
    out = write_submission(args.out, ids, labels)
    print(
        f"{out}: {len(ids)} rows | engine {info['engine']} {info['precision']} ({info['provider']}, "
        f"{info['device']}) | {len(ids) / seconds:.1f} img/s end-to-end",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
