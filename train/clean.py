"""``python -m train.clean`` (``make audit MODEL=<m>``): find outliers and mislabeled images from features.

Reads ``features.npy`` + ``index.csv`` written by ``runtime.features`` (one folder, or several combined: each set
L2-normalised, rows aligned by ``image_id``, concatenated: e.g. the task model's features and a pretrained
backbone's), scores every image with each method of :mod:`train.outliers`, and writes to ``--out``:
``scores.csv`` (image_id, label, a score and a flag per method, the suggested label of label issues),
``<csv stem>.clean.csv`` (the input CSV minus the images flagged by the ``remove_by`` methods; the input is never
modified), ``<csv stem>.flagged.csv`` (those removed rows, ranked, with the methods that flagged them and the
suggested label), ``gallery.html`` with ``thumbs/`` (:mod:`train.clean_review`: flagged images ranked by score,
thumbnails loaded lazily) and, with ``copy_flagged``, copies of the flagged images in ``<dir>/<label>/`` (the
seed's review folders). ``--evaluate`` runs the injection harness instead
(:mod:`train.clean_eval`).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from runtime.atomic import atomic_path, write_text
from runtime.config import add_set_argument, load_config, parse_overrides
from runtime.dataset import read_csv, require_dir, require_unique_ids
from runtime.errors import ArgumentParser, UserError, description, run_cli
from train.clean_features import combine_features, load_features
from train.clean_review import flagged_rows, gallery_html, write_thumbnails
from train.outliers import METHODS, MethodOptions, run_method


@dataclasses.dataclass
class CleanConfig:
    """Keys of ``configs/clean.yaml``."""

    features: str | list[str] = dataclasses.field(
        default_factory=lambda: ["features/resnet18_cpu", "features/efficientnet_lite0_pretrained"]
    )
    csv: str = "data/elpv/train.csv"
    images: str = "data/elpv/train"
    out: str = "reports/clean"
    methods: list[str] = dataclasses.field(default_factory=lambda: list(METHODS))
    remove_by: list[str] = dataclasses.field(default_factory=lambda: ["knn_wide", "label_issues"])
    flag_fraction: float = 0.02
    knn_k: int = 10
    knn_wide_k: int = 50
    pca_dims: int = 16
    folds: int = 5
    seed: int = 0
    pred_probs: str | None = None
    copy_flagged: str | None = None

    def validate(self, source: str) -> None:
        """Raises UserError naming a bad key."""
        for key in ("methods", "remove_by"):
            bad = [m for m in getattr(self, key) if m not in METHODS]
            if bad:
                raise UserError(f"{source}: key {key!r}: unknown method {bad[0]!r} (choose from {', '.join(METHODS)})")
        if not set(self.remove_by) <= set(self.methods):
            raise UserError(f"{source}: key 'remove_by' names methods that are not in 'methods'")
        if not 0 <= self.flag_fraction < 1:
            raise UserError(f"{source}: key 'flag_fraction' must be in [0, 1)")
        if min(self.knn_k, self.knn_wide_k, self.pca_dims) < 1 or self.folds < 2 or self.seed < 0:
            raise UserError(
                f"{source}: keys 'knn_k', 'knn_wide_k', 'pca_dims' >= 1, 'folds' >= 2 and 'seed' >= 0 required"
            )
        if not self.feature_folders:
            raise UserError(f"{source}: key 'features' names no folder")
        out, copy = Path(self.out).resolve(), Path(self.copy_flagged).resolve() if self.copy_flagged else None
        if copy is not None and (copy == out or copy == Path(self.images).resolve() or copy in out.parents):
            raise UserError(f"{source}: key 'copy_flagged' must be a folder of its own, not out or images")

    @property
    def feature_folders(self) -> list[str]:
        """``features`` as a list of folders."""
        return [self.features] if isinstance(self.features, str) else list(self.features)

    @property
    def options(self) -> MethodOptions:
        """The methods' options."""
        return MethodOptions(self.flag_fraction, self.knn_k, self.knn_wide_k, self.pca_dims, self.seed, self.folds)


def read_pred_probs(path: str | Path, index: pd.DataFrame, class_names: list[str]) -> np.ndarray:
    """Out-of-fold probabilities (N, K) in ``index`` order from a CSV with ``image_id`` and one column per class.

    Raises:
        UserError: a class column or an image is missing.
    """
    df = read_csv(path)
    require_unique_ids(df, path)
    df = df.set_index("image_id")
    missing = [c for c in class_names if c not in df.columns]
    if missing:
        raise UserError(f"{path}: no probability column for class {missing[0]!r}")
    absent = [i for i in index["image_id"] if i not in df.index]
    if absent:
        raise UserError(f"{path}: no probabilities for image {absent[0]!r}")
    probs = pd.DataFrame(df.loc[index["image_id"], class_names]).apply(pd.to_numeric, errors="coerce").to_numpy()
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise UserError(f"{path}: probabilities must be numbers in [0, 1] for every image and class")
    return probs


def score_all(features: np.ndarray, index: pd.DataFrame, cfg: CleanConfig) -> pd.DataFrame:
    """``scores.csv`` rows: image_id, label, ``<method>_score`` and ``<method>_flag`` per method, and
    ``suggested_label`` when label issues ran."""
    class_names = sorted(set(index["label"]))
    if "label_issues" in cfg.methods and len(class_names) < 2:
        raise UserError(f"{', '.join(cfg.feature_folders)}: label_issues needs at least 2 classes in index.csv")
    labels = index["label"].map({c: i for i, c in enumerate(class_names)}).to_numpy()
    probs = read_pred_probs(cfg.pred_probs, index, class_names) if cfg.pred_probs else None
    out = index[["image_id", "label"]].copy()
    for method in cfg.methods:
        result = run_method(method, features, labels, cfg.options, probs)
        out[f"{method}_score"] = result.scores
        out[f"{method}_flag"] = result.flags
        if result.suggested is not None:
            out["suggested_label"] = [class_names[i] for i in result.suggested]
    return out


def clean(cfg: CleanConfig) -> pd.DataFrame:
    """Run every method and write the outputs (see the module docstring); returns the scores table.

    Raises:
        UserError: missing or misaligned inputs, unknown methods.
    """
    folders = cfg.feature_folders
    features, index = combine_features([load_features(f) for f in folders], folders) if len(folders) > 1 else \
        load_features(folders[0])  # fmt: skip
    images = require_dir(cfg.images, "image folder")
    source = read_csv(cfg.csv)
    foreign = ~index["image_id"].isin(source["image_id"])
    if foreign.any():
        raise UserError(
            f"{', '.join(folders)}: image {index['image_id'][foreign].iloc[0]!r} is not in {cfg.csv}: "
            "the features were computed for another CSV"
        )
    unscored = int((~source["image_id"].isin(index["image_id"])).sum())
    scores = score_all(features, index, cfg)
    out = Path(cfg.out)
    remove = set(scores.loc[scores[[f"{m}_flag" for m in cfg.remove_by]].any(axis=1), "image_id"])
    with atomic_path(out / "scores.csv", suffix=".csv") as tmp:
        scores.to_csv(tmp, index=False)
    raw = pd.read_csv(cfg.csv, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    with atomic_path(out / f"{Path(cfg.csv).stem}.clean.csv", suffix=".csv") as tmp:
        raw.loc[~source["image_id"].isin(remove)].to_csv(tmp, index=False)
    flagged = flagged_rows(scores, cfg.methods, cfg.remove_by)
    with atomic_path(out / f"{Path(cfg.csv).stem}.flagged.csv", suffix=".csv") as tmp:
        flagged.to_csv(tmp, index=False)
    shown = scores.loc[scores[[f"{m}_flag" for m in cfg.methods]].any(axis=1), "image_id"].tolist()
    have = write_thumbnails(shown, images, out / "thumbs")
    write_text(out / "gallery.html", gallery_html(scores, cfg.methods, cfg.remove_by, "thumbs", have))
    if cfg.copy_flagged:
        with atomic_path(cfg.copy_flagged) as tmp:
            tmp.mkdir(parents=True)
            for n, (_, row) in enumerate(scores[scores["image_id"].isin(remove)].iterrows()):
                src = images / row["image_id"]
                if src.is_file():  # an image deleted since the features were computed is simply not copied
                    (tmp / row["label"]).mkdir(exist_ok=True)
                    name = Path(row["image_id"]).name
                    dst = tmp / row["label"] / name
                    if dst.exists():  # the same file name in two sub-folders: keep both
                        dst = dst.with_name(f"{n}_{name}")
                    shutil.copyfile(src, dst)
    counts = ", ".join(f"{m} {int(scores[f'{m}_flag'].sum())}" for m in cfg.methods)
    share = scores.assign(removed=scores["image_id"].isin(remove)).groupby("label")["removed"].mean()
    for label, fraction in share[share > 0.2].items():
        print(f"warning: {fraction:.0%} of class {label!r} would be removed; review gallery.html before training "
              "on the cleaned CSV (a weak model flags hard classes)", file=sys.stderr)  # fmt: skip
    kept = f"; {unscored} rows of {cfg.csv} had no features and were kept" if unscored else ""
    print(f"{out}: {len(scores)} images scored; flagged: {counts}; {len(remove)} removed from the cleaned CSV{kept}",
          file=sys.stderr)  # fmt: skip
    return scores


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m train.clean``."""
    p = ArgumentParser(prog="python -m train.clean", description=description(__doc__))
    p.add_argument("--config", default="configs/clean.yaml", help="YAML config (default: configs/clean.yaml)")
    add_set_argument(p)
    p.add_argument("--evaluate", action="store_true", help="run the injection harness on ELPV instead")
    args, rest = p.parse_known_args(argv)
    if args.evaluate:
        if args.set or args.config != p.get_default("config"):
            raise UserError(
                "--set and --config configure the cleaning run, not --evaluate; the harness takes its "
                "own options (--seeds, --out, --flip, ...: python -m train.clean --evaluate --help)"
            )
        from train.clean_eval import main as evaluate_main

        return evaluate_main(rest)
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    clean(load_config(CleanConfig, args.config, parse_overrides(args.set)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
