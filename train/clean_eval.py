"""``python -m train.clean --evaluate``: measure the cleaning methods by injection on ELPV.

Seeded and reproducible: flips the labels of ``flip`` (5%) of the training images to another class, and adds
``foreign`` (2%) foreign images of two kinds: *scattered* (each from a different source: scikit-learn's digits
upscaled, uniform noise, crops of scikit-learn's sample photos) and *clustered* (many crops of one photo, as when
a batch of junk lands in a dataset). Features come from a trained artifact through the runtime's own engine; every
method of :mod:`train.outliers` scores every image; for each kind (mislabeled, scattered foreign, clustered
foreign) the report gives AUROC, average precision and precision@k (k = number injected) of each method, as
``report.md`` and ``report.csv``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images
from sklearn.metrics import average_precision_score, roc_auc_score

from runtime.atomic import atomic_path, write_text
from runtime.dataset import read_csv, require_dir, resolve_ids
from runtime.engines import create_engine
from runtime.errors import ArgumentParser, UserError, description, positive_int
from runtime.pipeline import stream_batches
from train.outliers import METHODS, run_method

KINDS = ("mislabeled", "scattered_foreign", "clustered_foreign")


def foreign_images(n_scattered: int, n_clustered: int, seed: int, size: int = 300) -> dict[str, list[Image.Image]]:
    """Scattered foreign images (digits, noise and photo crops, each different) and clustered ones (crops near
    one spot of one photo), ``size`` x ``size``."""
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(p) for p in load_sample_images().images]
    digits = load_digits().images
    scattered = []
    for i in range(n_scattered):
        kind = i % 3
        if kind == 0:
            d = digits[rng.integers(len(digits))]
            img = Image.fromarray((d / 16 * 255).astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
        elif kind == 1:
            img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        else:
            photo = photos[(i // 3) % len(photos)]
            x, y = rng.integers(0, photo.width - size), rng.integers(0, photo.height - size)
            img = photo.crop((x, y, x + size, y + size))
        scattered.append(img)
    photo = photos[1]
    cx, cy = photo.width // 2 - size // 2, photo.height // 2 - size // 2
    clustered = []
    for _ in range(n_clustered):
        dx, dy = rng.integers(-40, 41, 2)
        clustered.append(photo.crop((cx + dx, cy + dy, cx + dx + size, cy + dy + size)))
    return {"scattered_foreign": scattered, "clustered_foreign": clustered}


def evaluate_scores(truth: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC, average precision and precision@k (k = number of positives) of ``scores`` for binary ``truth``."""
    k = int(truth.sum())
    top = np.argsort(-scores, kind="stable")[:k]
    return {
        "auroc": float(roc_auc_score(truth, scores)),
        "average_precision": float(average_precision_score(truth, scores)),
        "precision_at_k": float(truth[top].mean()) if k else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m train.clean --evaluate``."""
    p = ArgumentParser(prog="python -m train.clean --evaluate", description=description(__doc__))
    p.add_argument("--model", default="artifacts/resnet18_cpu", help="artifact or model folder for the features")
    p.add_argument("--engine", default="onnx")
    p.add_argument("--data", default="data/elpv", help="ELPV in the contest layout (make data)")
    p.add_argument("--out", default="reports/clean_eval")
    p.add_argument("--flip", type=float, default=0.05, help="share of labels flipped (default 0.05)")
    p.add_argument("--foreign", type=float, default=0.02, help="share of foreign images added (default 0.02)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--knn-k", type=positive_int, default=10)
    p.add_argument("--flag-fraction", type=float, default=0.02)
    args = p.parse_args(argv)
    if not (0 < args.flip < 1 and 0 < args.foreign < 1 and 0 <= args.flag_fraction < 1 and args.seed >= 0):
        raise UserError("--flip and --foreign must be in (0, 1), --flag-fraction in [0, 1), --seed >= 0")
    data = require_dir(args.data)
    train = read_csv(data / "train.csv", require_label=True)
    rng = np.random.default_rng(args.seed)
    classes = sorted(set(train["label"]))
    labels = train["label"].to_numpy(dtype=object).copy()
    flipped = rng.choice(len(train), round(len(train) * args.flip), replace=False)
    for i in flipped:
        labels[i] = rng.choice([c for c in classes if c != labels[i]])
    n_foreign = round(len(train) * args.foreign)
    extra = foreign_images(n_foreign - n_foreign // 2, n_foreign // 2, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ids, kinds = list(train["image_id"]), ["clean"] * len(train)
        for i in flipped:
            kinds[i] = "mislabeled"
        for kind, images in extra.items():
            for j, img in enumerate(images):
                name = f"{kind}_{j:03d}.png"
                img.save(folder / name)
                ids.append(name)
                kinds.append(kind)
                labels = np.append(labels, rng.choice(classes))
        for image_id in train["image_id"]:
            (folder / image_id).symlink_to((data / "train" / image_id).resolve())
        with create_engine(args.engine, args.model) as engine:
            chunks = [engine.run_features(b.array) for b in stream_batches(resolve_ids(folder, ids), engine.meta, 64)]
    features = np.concatenate(chunks)
    y = np.array([classes.index(c) for c in labels])
    kinds_arr = np.array(kinds)
    rows = []
    for method in METHODS:
        result = run_method(method, features, y, args.flag_fraction, args.knn_k, args.seed)
        for kind in KINDS:
            subset = (kinds_arr == "clean") | (kinds_arr == kind)
            truth = (kinds_arr[subset] == kind).astype(int)
            rows.append({"method": method, "kind": kind, "injected": int(truth.sum()),
                         **evaluate_scores(truth, result.scores[subset])})  # fmt: skip
    table = pd.DataFrame(rows)
    out = Path(args.out)
    with atomic_path(out / "report.csv", suffix=".csv") as tmp_csv:
        table.to_csv(tmp_csv, index=False)
    lines = [f"# Cleaning methods on ELPV by injection (seed {args.seed})", "",
             f"{len(train)} training images; {len(flipped)} labels flipped ({args.flip:.0%}); {n_foreign} foreign "
             f"images added ({args.foreign:.0%}: {len(extra['scattered_foreign'])} scattered, "
             f"{len(extra['clustered_foreign'])} clustered). Features: {args.model} ({args.engine}).", "",
             "| method | kind | injected | AUROC | average precision | precision@k |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['method']} | {r['kind']} | {r['injected']} | {r['auroc']:.3f} | "
                     f"{r['average_precision']:.3f} | {r['precision_at_k']:.3f} |")  # fmt: skip
    write_text(out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"reports: {out / 'report.md'}, {out / 'report.csv'}", file=sys.stderr)
    return 0
