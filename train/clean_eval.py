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

import dataclasses
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
from runtime.errors import ArgumentParser, UserError, description, positive_int
from runtime.members import Member
from runtime.predictor import Predictor
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


@dataclasses.dataclass
class Injection:
    """A training set with injected junk: ``ids`` (the training images, then the foreign ones), their
    ``labels`` (flipped or random where injected), ``kinds`` (``clean`` or a :data:`KINDS` name) and the foreign
    images to write (``name -> image``)."""

    ids: list[str]
    labels: list[str]
    kinds: list[str]
    foreign: dict[str, Image.Image]


def inject(train: pd.DataFrame, flip: float, foreign: float, seed: int) -> Injection:
    """Flip ``flip`` of the labels to another class and add ``foreign`` of foreign images (half scattered, half
    clustered, :func:`foreign_images`) with random labels; seeded."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(train["label"]))
    labels, kinds = [str(v) for v in train["label"]], ["clean"] * len(train)
    for i in rng.choice(len(train), round(len(train) * flip), replace=False):
        labels[i], kinds[i] = str(rng.choice([c for c in classes if c != labels[i]])), "mislabeled"
    n_foreign = round(len(train) * foreign)
    images: dict[str, Image.Image] = {}
    for kind, found in foreign_images(n_foreign - n_foreign // 2, n_foreign // 2, seed).items():
        for j, img in enumerate(found):
            images[f"{kind}_{j:03d}.png"] = img
            labels.append(str(rng.choice(classes)))
            kinds.append(kind)
    return Injection([*train["image_id"], *images], labels, kinds, images)


def injected_features(injection: Injection, data: Path, model: str, engine: str) -> np.ndarray:
    """float32 (N, D) features of every image of ``injection`` (training images from ``data/train``) through the
    runtime's :class:`runtime.predictor.Predictor`."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, img in injection.foreign.items():
            img.save(folder / name)
        for image_id in injection.ids[: len(injection.ids) - len(injection.foreign)]:
            (folder / image_id).symlink_to((data / "train" / image_id).resolve())
        with Predictor([Member(model, engine)]) as predictor:
            stream = predictor.stream(resolve_ids(folder, injection.ids), 64, features=True)
            return np.concatenate([f for _, f in stream if f is not None])


def score_methods(injection: Injection, features: np.ndarray, flag_fraction: float, knn_k: int,
                  seed: int) -> list[dict]:  # fmt: skip
    """For each method x kind: ``method``, ``kind``, ``injected`` and :func:`evaluate_scores` against the clean
    images."""
    classes = sorted(set(injection.labels))
    y = np.array([classes.index(c) for c in injection.labels])
    kinds = np.array(injection.kinds)
    rows = []
    for method in METHODS:
        result = run_method(method, features, y, flag_fraction, knn_k, seed)
        for kind in KINDS:
            subset = (kinds == "clean") | (kinds == kind)
            truth = (kinds[subset] == kind).astype(int)
            rows.append({"method": method, "kind": kind, "injected": int(truth.sum()),
                         **evaluate_scores(truth, result.scores[subset])})  # fmt: skip
    return rows


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
    injection = inject(train, args.flip, args.foreign, args.seed)
    features = injected_features(injection, data, args.model, args.engine)
    rows = score_methods(injection, features, args.flag_fraction, args.knn_k, args.seed)
    out = Path(args.out)
    with atomic_path(out / "report.csv", suffix=".csv") as tmp_csv:
        pd.DataFrame(rows).to_csv(tmp_csv, index=False)
    count = {k: injection.kinds.count(k) for k in KINDS}
    lines = [f"# Cleaning methods on ELPV by injection (seed {args.seed})", "",
             f"{len(train)} training images; {count['mislabeled']} labels flipped ({args.flip:.0%}); "
             f"{len(injection.foreign)} foreign images added ({args.foreign:.0%}: {count['scattered_foreign']} "
             f"scattered, {count['clustered_foreign']} clustered). Features: {args.model} ({args.engine}).", "",
             "| method | kind | injected | AUROC | average precision | precision@k |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['method']} | {r['kind']} | {r['injected']} | {r['auroc']:.3f} | "
                     f"{r['average_precision']:.3f} | {r['precision_at_k']:.3f} |")  # fmt: skip
    write_text(out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"reports: {out / 'report.md'}, {out / 'report.csv'}", file=sys.stderr)
    return 0
