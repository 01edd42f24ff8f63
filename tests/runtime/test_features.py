"""runtime.features: rows aligned with ids whatever the input order, and equal across engines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from runtime.errors import run_cli
from runtime.features import main as features_main


def _features(tiny_model: dict[str, Path], out: Path, *extra: str) -> tuple[np.ndarray, pd.DataFrame]:
    args = ["--model", str(tiny_model["artifacts"]), "--out", str(out), "--no-progress", *extra]
    assert run_cli(features_main, args) == 0
    return np.load(out / "features.npy"), pd.read_csv(out / "index.csv")


def test_same_id_same_row_whatever_the_order(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    data = tiny_model["data"]
    train = pd.read_csv(data / "train.csv")
    shuffled = train.sample(frac=1.0, random_state=3)
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    images = ["--images", str(data / "train")]
    f1, idx1 = _features(tiny_model, tmp_path / "a", "--csv", str(data / "train.csv"), *images)
    f2, idx2 = _features(tiny_model, tmp_path / "b", "--csv", str(tmp_path / "shuffled.csv"), *images)
    assert f1.dtype == np.float32 and f1.shape[0] == len(train) and f1.shape[1] > 0
    assert idx1["image_id"].tolist() == train["image_id"].tolist()
    assert idx1["label"].tolist() == train["label"].tolist()
    by_id = dict(zip(idx2["image_id"], f2, strict=True))
    for image_id, row in zip(idx1["image_id"], f1, strict=True):
        np.testing.assert_allclose(by_id[image_id], row, rtol=1e-5, atol=1e-5)


def test_features_agree_across_engines(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    data = ["--data", str(tiny_model["data"])]
    onnx_f, _ = _features(tiny_model, tmp_path / "onnx", *data)
    torch_f, _ = _features(tiny_model, tmp_path / "torch", *data, "--engine", "torch")
    ov_f, _ = _features(tiny_model, tmp_path / "ov", *data, "--engine", "openvino")
    np.testing.assert_allclose(torch_f, onnx_f, atol=1e-4)
    np.testing.assert_allclose(ov_f, onnx_f, atol=1e-4)
