"""``python -m runtime.features``: pooled pre-logit features of every image, aligned with an index.

Writes ``<out>/features.npy`` (float32, N x D: timm ``forward_head(x, pre_logits=True)``; the exported ONNX,
OpenVINO and TensorRT artifacts carry it as their ``features`` output) and ``<out>/index.csv``
(``image_id,label``: row i of the index is row i of the features; ``label`` is the CSV's given label, empty when
the CSV has none). Unreadable images are skipped and listed in ``<out>/errors.csv``; the exit status is then 3.
Input options are those of ``runtime.predict`` (contest layout, a CSV with ``--images``, or a folder).

Example::

    python -m runtime.features --engine onnx --model artifacts/resnet18_cpu --data data/elpv --csv train.csv \\
        --out features/resnet18_cpu
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from runtime.artifacts import PRECISIONS
from runtime.atomic import atomic_path, check_replaceable
from runtime.dataset import discover_inputs, read_csv, resolve_ids
from runtime.engines import ENGINE_NAMES
from runtime.errors import EXIT_SKIPPED, ArgumentParser, UserError, description, positive_int, run_cli
from runtime.members import Member
from runtime.predictor import Predictor


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m runtime.features``; returns the exit code."""
    p = ArgumentParser(prog="python -m runtime.features", description=description(__doc__))
    p.add_argument("--engine", choices=ENGINE_NAMES, default="onnx", help="backend (default: onnx)")
    p.add_argument("--model", required=True, help="artifact file, or a model folder such as artifacts/<model>")
    p.add_argument("--precision", choices=PRECISIONS, help="artifact precision in a model folder")
    p.add_argument("--data", help="dataset folder in the contest layout")
    p.add_argument("--csv", help="CSV with image_id (and label) inside --data or a path (default: test.csv)")
    p.add_argument("--images", help="image folder (default from the layout); alone: every image in it")
    p.add_argument("--out", required=True, help="output folder for features.npy, index.csv (and errors.csv)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--workers", type=positive_int, default=None, help="image-decoding threads (default: measured)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.resolve() == Path.cwd().resolve() or out.name in ("", ".", ".."):
        raise UserError(f"{args.out}: give a folder of its own for the features")
    check_replaceable(out)  # before minutes of work, not after
    ids, image_dir = discover_inputs(args.data, args.csv, args.images)
    labels = [""] * len(ids)
    if args.csv or args.data:
        df = read_csv(Path(args.data or ".") / (args.csv or "test.csv"))
        if "label" in df.columns:
            labels = df["label"].tolist()
    items = resolve_ids(image_dir, ids)
    chunks, rows, errors = [], [], []
    predictor = Predictor([Member(args.model, args.engine, args.precision)], device=args.device, threads=args.threads)
    bar = tqdm(total=len(ids), unit="img", desc="features", disable=None if not args.no_progress else True)
    with predictor, bar:
        plan = predictor.plan_decode(items, args.batch_size, args.workers)
        for batch, feats in predictor.stream(items, args.batch_size, plan, skip_errors=True, features=True):
            if feats is not None:
                chunks.append(feats)
                rows.extend(batch.ok)
            errors.extend(batch.errors)
            bar.update(batch.count)
    dim = chunks[0].shape[1] if chunks else 0
    features = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, dim), np.float32)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        np.save(tmp / "features.npy", features)
        pd.DataFrame({"image_id": [ids[i] for i in rows], "label": [labels[i] for i in rows]}).to_csv(
            tmp / "index.csv", index=False
        )
        if errors:
            pd.DataFrame({"image_id": [ids[i] for i, _ in errors], "reason": [r for _, r in errors]}).to_csv(
                tmp / "errors.csv", index=False
            )
    skipped = f", {len(errors)} skipped (listed in {out / 'errors.csv'})" if errors else ""
    print(f"{out}: {features.shape[0]} x {features.shape[1]} features{skipped}", file=sys.stderr)
    return EXIT_SKIPPED if errors else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
