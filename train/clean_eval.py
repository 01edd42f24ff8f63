"""``python -m train.clean --evaluate``: measure the cleaning methods by injection on ELPV.

Seeded and reproducible: flips the labels of ``flip`` (5%) of the training images to another class, and adds
``foreign`` (2%) foreign images of two kinds: *scattered* (each from a different source: scikit-learn's digits
upscaled, uniform noise, crops of scikit-learn's sample photos) and *clustered* (many crops of one photo, as when
a batch of junk lands in a dataset). Features come from a trained artifact through the runtime's own engine; every
method of :mod:`train.outliers` scores every image; for each kind (mislabeled, scattered foreign, clustered
foreign) the report gives AUROC, average precision and precision@k (k = number injected) of each method over
several injection seeds (mean and standard deviation), and names the best outlier score (by the lower of its two
foreign mean APs) and the best label-issue score (by mean AP on mislabeled images): ``report.md``, ``report.csv``
(one row per seed, method and kind) and ``summary.csv``. Several ``--model`` combine their feature sets (each
L2-normalised, concatenated, as ``train.clean`` does); ``--features`` reuses a features folder of
``data/train.csv`` per model, so only the foreign images run through the engine.
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
from train.clean_features import load_features
from train.outliers import METHODS, MethodOptions, concat_normalized, run_method

KINDS = ("mislabeled", "scattered_foreign", "clustered_foreign")
METRICS = ("auroc", "average_precision", "precision_at_k")


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


def _run(predictor: Predictor, folder: Path, ids: list[str]) -> np.ndarray:
    stream = predictor.stream(resolve_ids(folder, ids), 64, features=True)
    return np.concatenate([f for _, f in stream if f is not None]).astype(np.float32)


def cached_features(folder: str, ids: list[str]) -> np.ndarray:
    """float32 (N, D) rows of a ``runtime.features`` folder in the order of ``ids``.

    Raises:
        UserError: the folder lacks one of ``ids`` (features of another CSV).
    """
    features, index = load_features(folder)
    position = pd.Series(np.arange(len(index)), index=index["image_id"])
    missing = [i for i in ids if i not in position.index]
    if missing:
        raise UserError(f"{folder}: no features for training image {missing[0]!r}; compute them for this train.csv")
    return features[position.loc[ids].to_numpy()]


def model_features(injections: list[Injection], data: Path, model: str, engine: str,
                   cache: str | None = None) -> list[np.ndarray]:  # fmt: skip
    """float32 (N, D) features of every image of each injection, through the runtime's
    :class:`runtime.predictor.Predictor`: the training images once (or read from ``cache``, a features folder of
    ``data/train.csv``), the foreign images of each injection."""
    n_train = len(injections[0].ids) - len(injections[0].foreign)
    train_ids = injections[0].ids[:n_train]
    with tempfile.TemporaryDirectory() as tmp, Predictor([Member(model, engine)]) as predictor:
        train = cached_features(cache, train_ids) if cache else _run(predictor, data / "train", train_ids)
        out = []
        for n, injection in enumerate(injections):
            folder = Path(tmp) / str(n)
            folder.mkdir()
            for name, img in injection.foreign.items():
                img.save(folder / name)
            out.append(np.concatenate([train, _run(predictor, folder, list(injection.foreign))]))
        return out


def score_methods(injection: Injection, features: np.ndarray, opts: MethodOptions) -> list[dict]:
    """For each method x kind: ``method``, ``kind``, ``injected`` and :func:`evaluate_scores` against the clean
    images."""
    classes = sorted(set(injection.labels))
    y = np.array([classes.index(c) for c in injection.labels])
    kinds = np.array(injection.kinds)
    rows = []
    for method in METHODS:
        result = run_method(method, features, y, opts)
        for kind in KINDS:
            subset = (kinds == "clean") | (kinds == kind)
            truth = (kinds[subset] == kind).astype(int)
            rows.append({"method": method, "kind": kind, "injected": int(truth.sum()),
                         **evaluate_scores(truth, result.scores[subset])})  # fmt: skip
    return rows


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1; 0 for one seed) over seeds of every metric, per method and kind."""
    stats = rows.groupby(["method", "kind"], sort=False)[list(METRICS)].agg(["mean", "std"]).fillna(0.0)
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    return stats.reset_index()


def choose_defaults(summary: pd.DataFrame) -> tuple[str, str]:
    """(outlier method, label-issue method): the outlier method whose lower mean AP over the two foreign kinds is
    highest, and the method with the highest mean AP on mislabeled images."""
    ap = summary.pivot(index="method", columns="kind", values="average_precision_mean")
    outliers = ap.drop(index=["label_issues"], errors="ignore")
    outlier = str(outliers[["scattered_foreign", "clustered_foreign"]].min(axis=1).idxmax())
    return outlier, str(ap["mislabeled"].idxmax())


def report_lines(summary: pd.DataFrame, seeds: list[int], header: str) -> list[str]:
    """The markdown report: per method, AUROC / AP / precision@k of each kind as mean +- std over the seeds."""
    outlier, label = choose_defaults(summary)
    lines = [f"# Cleaning methods on ELPV by injection (seeds {', '.join(map(str, seeds))})", "", header, "",
             "Each cell: AUROC / average precision / precision@k, mean over the seeds (+- standard deviation).", "",
             "| method | " + " | ".join(KINDS) + " |", "|---|" + "---|" * len(KINDS)]  # fmt: skip
    for method, group in summary.groupby("method", sort=False):
        cells = []
        for kind in KINDS:
            r = group[group["kind"] == kind].iloc[0]
            cells.append(" / ".join(f"{r[f'{m}_mean']:.3f} ± {r[f'{m}_std']:.3f}" for m in METRICS))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", f"Best outlier score (highest lower mean AP of the two foreign kinds): **{outlier}**; "
              f"best label-issue score (mean AP on mislabeled): **{label}**."]  # fmt: skip
    return lines


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``.

    Raises:
        UserError: not a comma-separated list of distinct integers >= 0.
    """
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text!r}: give distinct integers >= 0, e.g. 0,1,2")
    return seeds


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m train.clean --evaluate``."""
    p = ArgumentParser(prog="python -m train.clean --evaluate", description=description(__doc__))
    p.add_argument("--model", action="append", help="artifact or model folder for the features (repeat: combined; "
                   "default artifacts/resnet18_cpu)")  # fmt: skip
    p.add_argument("--features", action="append", help="per --model: a features folder of data/train.csv to reuse")
    p.add_argument("--engine", default="onnx")
    p.add_argument("--data", default="data/elpv", help="ELPV in the contest layout (make data)")
    p.add_argument("--out", default="reports/clean_eval")
    p.add_argument("--flip", type=float, default=0.05, help="share of labels flipped (default 0.05)")
    p.add_argument("--foreign", type=float, default=0.02, help="share of foreign images added (default 0.02)")
    p.add_argument("--seeds", default="0,1,2", help="injection seeds, comma-separated (default 0,1,2)")
    p.add_argument("--knn-k", type=positive_int, default=10)
    p.add_argument("--knn-wide-k", type=positive_int, default=50)
    p.add_argument("--pca-dims", type=positive_int, default=16)
    p.add_argument("--flag-fraction", type=float, default=0.02)
    args = p.parse_args(argv)
    models, seeds = args.model or ["artifacts/resnet18_cpu"], parse_seeds(args.seeds)
    if not (0 < args.flip < 1 and 0 < args.foreign < 1 and 0 <= args.flag_fraction < 1):
        raise UserError("--flip and --foreign must be in (0, 1), --flag-fraction in [0, 1)")
    if args.features and len(args.features) != len(models):
        raise UserError(f"--features given {len(args.features)} times for {len(models)} --model: give one per model")
    data = require_dir(args.data)
    train = read_csv(data / "train.csv", require_label=True)
    injections = [inject(train, args.flip, args.foreign, seed) for seed in seeds]
    per_model = [model_features(injections, data, m, args.engine, (args.features or [None] * len(models))[i])
                 for i, m in enumerate(models)]  # fmt: skip
    rows = []
    for n, (seed, injection) in enumerate(zip(seeds, injections, strict=True)):
        features = concat_normalized([f[n] for f in per_model])
        opts = MethodOptions(args.flag_fraction, args.knn_k, args.knn_wide_k, args.pca_dims, seed)
        rows += [{"seed": seed, **r} for r in score_methods(injection, features, opts)]
    summary = summarize(pd.DataFrame(rows))
    out = Path(args.out)
    with atomic_path(out / "report.csv", suffix=".csv") as tmp_csv:
        pd.DataFrame(rows).to_csv(tmp_csv, index=False)
    with atomic_path(out / "summary.csv", suffix=".csv") as tmp_csv:
        summary.to_csv(tmp_csv, index=False)
    count = {k: injections[0].kinds.count(k) for k in KINDS}
    header = (f"{len(train)} training images; per seed {count['mislabeled']} labels flipped ({args.flip:.0%}), "
              f"{count['scattered_foreign']} scattered and {count['clustered_foreign']} clustered foreign images "
              f"added. Features: {' + '.join(models)} ({args.engine}).")  # fmt: skip
    lines = report_lines(summary, seeds, header)
    write_text(out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"reports: {out / 'report.md'}, {out / 'report.csv'}, {out / 'summary.csv'}", file=sys.stderr)
    return 0
