"""K-fold cross-validation (``make train MODEL=<m> FOLDS=K``): K models and their out-of-fold predictions.

The training CSV (``folds_csv``, default ``train.csv``: every labelled image outside the held-out set) is cut
into K seeded, stratified folds (scikit-learn ``StratifiedKFold``). Model k trains on the other K-1 folds and
picks its best epoch on fold k, then predicts fold k. Outputs, in ``artifacts/<m>/``:

- ``fold<k>/best.pt`` (+ ``last.pt``, ``fold_train.csv``, ``fold_valid.csv``, ``oof.csv``) per fold;
- ``oof.csv``: ``image_id,label`` and one probability column per class, each row predicted by the one model that
  never trained on it, in the order of the training CSV (``make audit ARGS="--set pred_probs=..."`` reads it);
- ``cv.json``: per-fold and mean +- std micro-/macro-F1 (the fold's validation set also chose its best epoch, as
  with early stopping, so the CV estimate is slightly optimistic).

Each fold folder records how it was made in ``fold.json`` (K, fold, seed, the CSV and its SHA-256, a hash of the
training settings). With ``--resume``, folds whose record matches the current run and that have their ``oof.csv``
are kept and an interrupted one resumes from its ``last.pt``; a fold made with another K, seed, CSV or config is
trained again. ``cv.json`` lists the folds of the finished run (with each ``best.pt`` SHA-256), which is what
``--folds`` ensembles and ``make export FOLDS=k`` use. With ``--nproc N`` each fold runs under ``torchrun``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from runtime.artifacts import CV_SUMMARY, file_sha256, is_fold_dir
from runtime.atomic import atomic_path, write_text
from runtime.dataset import image_dir_for, image_paths, read_class_map, read_csv, require_dir, require_unique_ids
from runtime.errors import UserError
from runtime.members import Member
from runtime.metrics import f1_micro_macro
from runtime.predictor import Predictor
from train.config import TrainConfig
from train.distributed import pick_device
from train.train import train

#: per-fold record of how the fold was made (compared on --resume)
FOLD_RECORD = "fold.json"
#: config keys that do not change what a fold learns (where it runs, where outputs go, which CSVs: set per fold)
_NOT_SETTINGS = frozenset({"train_csv", "valid_csv", "workers", "device", "runs", "artifacts", "data"})


def make_folds(labels: list[str], folds: int, seed: int) -> np.ndarray:
    """Fold index (0..folds-1) of every row: seeded ``StratifiedKFold`` with shuffling.

    Raises:
        UserError: ``folds`` < 2, or larger than the smallest class (each fold needs one image of every class).
    """
    counts = pd.Series(labels).value_counts()
    if folds < 2:
        raise UserError(f"FOLDS={folds}: k-fold needs at least 2 folds")
    if folds > counts.min():
        n = int(counts.min())
        fix = f"use FOLDS <= {n}" if n >= 2 else "k-fold needs at least 2 images of every class"
        raise UserError(
            f"FOLDS={folds} is larger than the smallest class ({counts.idxmin()!r}: {n} image{'s' * (n != 1)}); {fix}"
        )
    fold_of = np.empty(len(labels), dtype=int)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, valid) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold_of[valid] = k
    return fold_of


def fold_name(name: str, k: int) -> str:
    """Model name of fold ``k`` (its folder under ``artifacts/``): ``<name>/fold<k>``."""
    return f"{name}/fold{k}"


def prepare_folds(name: str, cfg: TrainConfig, folds: int, csv_name: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Read the training CSV, assign folds and write each fold's ``fold_train.csv``/``fold_valid.csv``.

    Raises:
        UserError: missing data or CSV, labels outside the class map, ids shared with the held-out ``test.csv``,
            bad ``folds``.
    """
    data = require_dir(cfg.data)
    df = read_csv(data / csv_name, require_label=True)
    require_unique_ids(df, data / csv_name)
    classes = read_class_map(data / cfg.class_map)
    unknown = sorted(set(df["label"]) - set(classes))
    if unknown:
        raise UserError(f"{data / csv_name}: label {unknown[0]!r} is not in {cfg.class_map}")
    held_out = data / "test.csv"
    if held_out.is_file() and Path(csv_name).name != held_out.name:
        shared = set(df["image_id"]) & set(read_csv(held_out)["image_id"])
        if shared:
            raise UserError(
                f"{data / csv_name}: {len(shared)} image ids are in the held-out test.csv; k-fold cuts the training "
                f"CSV (default train.csv)"
            )
    elif held_out.is_file():
        raise UserError(f"{held_out}: the held-out set cannot be cut into folds; use the training CSV (train.csv)")
    fold_of = make_folds(df["label"].tolist(), folds, cfg.seed)
    for k in range(folds):
        folder = Path(cfg.artifacts) / fold_name(name, k)
        folder.mkdir(parents=True, exist_ok=True)
        for split, rows in (("fold_train.csv", df[fold_of != k]), ("fold_valid.csv", df[fold_of == k])):
            with atomic_path(folder / split) as tmp:
                rows[["image_id", "label"]].to_csv(tmp, index=False)
    return df, fold_of


def fold_record(cfg: TrainConfig, folds: int, k: int, csv_name: str) -> dict[str, Any]:
    """How fold ``k`` is made: K, fold, seed, the CSV (path and SHA-256), the class map's SHA-256 and a SHA-256
    of the training settings (every config key except where it runs and where outputs go)."""
    csv_path = (Path(cfg.data) / csv_name).resolve()
    class_map = Path(cfg.data) / cfg.class_map
    settings = {key: v for key, v in dataclasses.asdict(cfg).items() if key not in _NOT_SETTINGS}
    return {
        "folds": folds,
        "fold": k,
        "seed": cfg.seed,
        "csv": str(csv_path),
        "csv_sha256": file_sha256(csv_path),
        "class_map_sha256": file_sha256(class_map) if class_map.is_file() else None,
        "config_sha256": hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest(),
    }


def fold_matches(folder: Path, record: dict[str, Any]) -> bool:
    """True when ``folder/fold.json`` exists and equals ``record`` (the fold was made by this same k-fold setup)."""
    try:
        return json.loads((folder / FOLD_RECORD).read_text()) == record
    except (OSError, ValueError):
        return False


def start_fold(folder: Path, record: dict[str, Any]) -> None:
    """Before training a fold from scratch: drop its out-of-fold predictions and resume state of another setup,
    then record the new setup (``best.pt`` is replaced by the training itself)."""
    for stale in ("oof.csv", "last.pt"):
        (folder / stale).unlink(missing_ok=True)
    write_text(folder / FOLD_RECORD, json.dumps(record, indent=2) + "\n")


def fold_config(name: str, cfg: TrainConfig, k: int) -> TrainConfig:
    """``cfg`` training on fold ``k``'s CSVs (absolute paths; images still come from ``<data>/train/``)."""
    folder = (Path(cfg.artifacts) / fold_name(name, k)).resolve()
    return dataclasses.replace(cfg, train_csv=str(folder / "fold_train.csv"), valid_csv=str(folder / "fold_valid.csv"))


def predict_fold(name: str, cfg: TrainConfig, k: int) -> pd.DataFrame:
    """Out-of-fold probabilities of fold ``k`` from its ``best.pt`` (torch engine, eval transform):
    ``image_id,label,<class>...``; also written to ``fold<k>/oof.csv``."""
    folder = Path(cfg.artifacts) / fold_name(name, k)
    rows = read_csv(folder / "fold_valid.csv", require_label=True)
    paths = image_paths(image_dir_for(cfg.data, "fold_valid.csv"), rows["image_id"].tolist())  # as in training
    device = str(pick_device(cfg.device))
    with Predictor([Member(str(folder), "torch")], device=device) as predictor:
        stream = predictor.stream(paths, cfg.batch_size, cfg.workers)
        probs = np.concatenate([p for _, p in stream]).astype(np.float32)
        names = predictor.class_names
    out = pd.concat([rows[["image_id", "label"]].reset_index(drop=True), pd.DataFrame(probs, columns=names)], axis=1)
    with atomic_path(folder / "oof.csv") as tmp:
        out.to_csv(tmp, index=False)
    return out


def summarize_cv(oof: pd.DataFrame, fold_of: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Per-fold and mean +- std (population std over folds) micro-/macro-F1 of the out-of-fold predictions."""
    index = {c: i for i, c in enumerate(class_names)}
    y = oof["label"].map(index).to_numpy()
    pred = oof[class_names].to_numpy().argmax(1)
    per_fold = []
    for k in range(int(fold_of.max()) + 1):
        micro, macro = f1_micro_macro(y[fold_of == k], pred[fold_of == k], len(class_names))
        per_fold.append({"fold": k, "images": int((fold_of == k).sum()), "f1_micro": micro, "f1_macro": macro})
    micro_all, macro_all = f1_micro_macro(y, pred, len(class_names))
    micros, macros = [f["f1_micro"] for f in per_fold], [f["f1_macro"] for f in per_fold]
    return {
        "folds": len(per_fold),
        "per_fold": per_fold,
        "f1_micro_mean": float(np.mean(micros)),
        "f1_micro_std": float(np.std(micros)),
        "f1_macro_mean": float(np.mean(macros)),
        "f1_macro_std": float(np.std(macros)),
        "oof_f1_micro": micro_all,
        "oof_f1_macro": macro_all,
    }


def train_fold(name: str, cfg: TrainConfig, k: int, folds: int, csv_name: str, fold_of: np.ndarray, resume: bool,
               nproc: int, relaunch: list[str] | None) -> pd.DataFrame:  # fmt: skip
    """Train fold ``k`` (in this process, or under ``torchrun`` with ``nproc`` > 1) unless ``resume`` finds it
    done with the same settings; returns its out-of-fold probabilities (:func:`predict_fold`).

    Raises:
        UserError: the fold's training fails.
    """
    folder = Path(cfg.artifacts) / fold_name(name, k)
    record = fold_record(cfg, folds, k, csv_name)
    same = fold_matches(folder, record)
    if resume and same and (folder / "oof.csv").is_file() and (folder / "best.pt").is_file():
        print(f"fold {k}: kept (oof.csv exists)", file=sys.stderr)
        return read_csv(folder / "oof.csv", require_label=True)
    print(f"fold {k + 1}/{folds}: {int((fold_of != k).sum())} train / {int((fold_of == k).sum())} valid images",
          file=sys.stderr)  # fmt: skip
    resume_fold = resume and same and (folder / "last.pt").is_file()
    if resume and not same and (folder / "best.pt").is_file():
        print(f"fold {k}: made with another FOLDS, seed, CSV or config; training it again", file=sys.stderr)
    if not resume_fold:
        start_fold(folder, record)
    if nproc > 1:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd = [*torchrun, "-m", "train", *(relaunch or []), "--fold", str(k), *(["--resume"] if resume_fold else [])]
        if subprocess.run(cmd).returncode != 0:
            raise UserError(f"fold {k} failed under torchrun (see its messages above)")
    else:
        train(fold_name(name, k), fold_config(name, cfg, k), resume=resume_fold)
    return predict_fold(name, cfg, k)


def cross_validate(
    name: str, cfg: TrainConfig, folds: int, csv_name: str = "train.csv", resume: bool = False,
    nproc: int = 1, relaunch: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train every fold, write ``oof.csv`` and ``cv.json``; returns the CV summary (:func:`summarize_cv`).

    Args:
        relaunch: ``python -m train`` arguments that train one fold when ``--fold k`` is appended (used under
            ``torchrun`` when ``nproc`` > 1).

    Raises:
        UserError: bad ``folds`` for the data, or any error of :func:`train.train.train`.
    """
    df, fold_of = prepare_folds(name, cfg, folds, csv_name)
    parts = [train_fold(name, cfg, k, folds, csv_name, fold_of, resume, nproc, relaunch) for k in range(folds)]
    by_id = pd.concat(parts).set_index("image_id")
    class_names = read_class_map(Path(cfg.data) / cfg.class_map)
    oof = by_id.loc[df["image_id"]].reset_index()
    oof["label"] = df["label"].to_numpy()
    # float32 like a fresh prediction, also for folds read back from their oof.csv
    oof = oof[["image_id", "label", *class_names]].astype(dict.fromkeys(class_names, "float32"))
    summary = {"csv": csv_name, "seed": cfg.seed, **summarize_cv(oof, fold_of, class_names)}
    model_dir = Path(cfg.artifacts) / name
    summary["checkpoints_sha256"] = [file_sha256(model_dir / f"fold{k}" / "best.pt") for k in range(folds)]
    extra = sorted(int(p.name[4:]) for p in model_dir.glob("fold*") if is_fold_dir(p) and int(p.name[4:]) >= folds)
    if extra:
        which = f"fold{extra[0]}" if len(extra) == 1 else f"{len(extra)} folders fold{extra[0]} .. fold{extra[-1]}"
        print(f"note: {which} in {model_dir}: from an earlier run with more folds, not part of this one (delete "
              f"if unused)", file=sys.stderr)  # fmt: skip
    with atomic_path(model_dir / "oof.csv") as tmp:
        oof.to_csv(tmp, index=False)
    write_text(model_dir / CV_SUMMARY, json.dumps(summary, indent=2) + "\n")
    print(
        f"{folds}-fold CV micro-F1 {summary['f1_micro_mean']:.4f} +- {summary['f1_micro_std']:.4f}, macro-F1 "
        f"{summary['f1_macro_mean']:.4f} +- {summary['f1_macro_std']:.4f} -> {model_dir / 'oof.csv'}, "
        f"{model_dir / 'cv.json'}",
        file=sys.stderr,
    )
    return summary
