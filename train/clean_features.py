"""Reading feature folders written by ``runtime.features`` and combining several sets of the same images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from runtime.dataset import read_csv, require_dir, require_unique_ids
from runtime.errors import UserError, short_reason
from train.outliers import concat_normalized


def load_features(folder: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """(features float32 N x D, index with ``image_id``, ``label``) from a ``runtime.features`` folder.

    Raises:
        UserError: missing files, or features and index of different lengths.
    """
    folder = require_dir(folder, "features folder")
    path = folder / "features.npy"
    if not path.is_file():
        raise UserError(f"{path}: not found; run `python -m runtime.features ... --out {folder}` first")
    try:
        features = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: not a numeric .npy array ({short_reason(exc)})") from None
    index = read_csv(folder / "index.csv", require_label=True)
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
        raise UserError(f"{path}: expected a 2-D numeric array (N images x D), got shape {features.shape}")
    if len(features) != len(index):
        raise UserError(f"{folder}: features.npy has {len(features)} rows but index.csv {len(index)}: not aligned")
    if not np.isfinite(features).all():
        raise UserError(f"{path}: contains NaN or infinite values; recompute the features")
    require_unique_ids(index, folder / "index.csv")
    return features.astype(np.float32), index


def combine_features(sets: list[tuple[np.ndarray, pd.DataFrame]], names: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """One feature matrix from several sets of the same images: each set L2-normalised (rows), its rows put in
    the first set's ``image_id`` order, concatenated and scaled by 1/sqrt(number of sets) (unit rows again).

    Args:
        sets: (features float N x D_i, index with ``image_id``, ``label``) per set, e.g. from :func:`load_features`.
        names: the sets' names (folders) for messages.

    Returns:
        (float32 N x sum(D_i), the first set's index).

    Raises:
        UserError: the sets do not hold the same image ids (names the first id missing from a set).
    """
    first = sets[0][1]
    parts = []
    for (features, index), name in zip(sets, names, strict=True):
        position = pd.Series(np.arange(len(index)), index=index["image_id"])
        missing = first["image_id"][~first["image_id"].isin(position.index)]
        extra = index["image_id"][~index["image_id"].isin(first["image_id"])]
        if len(missing) or len(extra):
            image_id, where = (missing.iloc[0], "missing from") if len(missing) else (extra.iloc[0], "only in")
            raise UserError(f"feature sets {', '.join(names)} hold different images: {image_id!r} is {where} {name}")
        parts.append(features[position.loc[first["image_id"]].to_numpy()])
    return concat_normalized(parts), first
