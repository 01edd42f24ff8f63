"""Dataset cleaning: each method flags a planted outlier, label issues find a flipped label, outputs are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runtime.errors import UserError, run_cli
from runtime.features import main as features_main
from train.clean import CleanConfig, clean, load_features
from train.outliers import METHODS, run_method

OUTLIER_METHODS = [m for m in METHODS if m != "label_issues"]


@pytest.fixture(scope="module")
def real_features(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Features of the small real training set, with one planted foreign image (random noise)."""
    from PIL import Image

    out = tmp_path_factory.mktemp("features")
    data = tiny_model["data"]
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8))
    noise.save(data / "train" / "planted_noise.png")
    csv = pd.read_csv(data / "train.csv")
    pd.concat([csv, pd.DataFrame({"image_id": ["planted_noise.png"], "label": ["defect_000"]})]).to_csv(
        out / "train_planted.csv", index=False
    )
    args = ["--model", str(tiny_model["artifacts"]), "--csv", str(out / "train_planted.csv"), "--images",
            str(data / "train"), "--out", str(out / "f"), "--no-progress"]  # fmt: skip
    assert run_cli(features_main, args) == 0
    (data / "train" / "planted_noise.png").unlink()
    return out


def _blobs(n_per_class: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.eye(3, 16) * 5
    x = np.concatenate([c + rng.standard_normal((n_per_class, 16)) * 0.5 for c in centers])
    y = np.repeat(np.arange(3), n_per_class)
    return x.astype(np.float32), y


@pytest.mark.parametrize("method", OUTLIER_METHODS)
def test_each_outlier_method_flags_a_planted_outlier(method: str, real_features: Path) -> None:
    x, _index = load_features(real_features / "f")
    planted = -3 * x.mean(axis=0, keepdims=True)  # opposite the direction of every real feature vector
    x = np.concatenate([x, planted])
    y = np.zeros(len(x), dtype=int)
    result = run_method(method, x, y)
    assert result.flags[-1] and result.scores[-1] == result.scores.max()


def test_label_issues_find_a_flipped_label() -> None:
    x, y = _blobs()
    y = y.copy()
    y[5] = 2  # an image of class 0 labelled 2
    result = run_method("label_issues", x, y)
    assert result.flags[5] and result.suggested[5] == 0
    assert result.scores[5] == result.scores.max()
    assert result.flags.sum() <= 3


def test_clean_outputs_on_real_features(real_features: Path, tiny_model: dict[str, Path], tmp_path: Path) -> None:
    data = tiny_model["data"]
    cfg = CleanConfig(
        features=str(real_features / "f"), csv=str(real_features / "train_planted.csv"), images=str(data / "train"),
        out=str(tmp_path / "out"), methods=["knn", "isolation_forest", "lof", "dbscan"],
        remove_by=["isolation_forest"], flag_fraction=0.05, copy_flagged=str(tmp_path / "review"),
    )  # fmt: skip
    # the planted image is not in the folder any more: the gallery must still render (blank thumbnail)
    scores = clean(cfg)
    assert scores["image_id"].tolist() == pd.read_csv(real_features / "train_planted.csv")["image_id"].tolist()
    assert scores["isolation_forest_flag"].sum() == 2  # 5% of 37
    flagged = set(scores.loc[scores["isolation_forest_flag"], "image_id"])
    cleaned = pd.read_csv(tmp_path / "out" / "train_planted.clean.csv")
    source = pd.read_csv(real_features / "train_planted.csv")
    assert cleaned["image_id"].tolist() == [i for i in source["image_id"] if i not in flagged]
    page = (tmp_path / "out" / "gallery.html").read_text()
    assert all(i in page for i in flagged) and "http" not in page
    shown = scores.loc[scores.filter(like="_flag").any(axis=1), "image_id"]  # flagged by any method
    assert len(list((tmp_path / "out" / "thumbs").glob("*.jpg"))) == sum((data / "train" / i).exists() for i in shown)
    listed = pd.read_csv(tmp_path / "out" / "train_planted.flagged.csv", keep_default_na=False)
    assert set(listed["image_id"]) == flagged and set(listed["flagged_by"]) == {"isolation_forest"}
    copied = {p.name for p in (tmp_path / "review").rglob("*.png")}
    assert copied == {Path(i).name for i in flagged if (data / "train" / i).exists()}


def test_outputs_are_replaced_whole_or_not_at_all(
    real_features: Path, tiny_model: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = CleanConfig(features=[str(real_features / "f"), str(real_features / "f")],
                      csv=str(real_features / "train_planted.csv"), images=str(tiny_model["data"] / "train"),
                      out=str(tmp_path / "out"), methods=["knn_wide"], remove_by=["knn_wide"])  # fmt: skip
    clean(cfg)  # the same set twice combines to the same cosine geometry
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert {"scores.csv", "train_planted.clean.csv", "train_planted.flagged.csv", "gallery.html"} <= set(before)

    def half_written(self: pd.DataFrame, path: Path, **kwargs: object) -> None:
        Path(path).write_text("image_id,la")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_written)
    with pytest.raises(OSError, match="No space"):
        clean(cfg)
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert after == before  # no half-written CSV replaced a good one, no temporary file left


def test_bad_clean_inputs(real_features: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "features.npy", np.zeros((3, 4), np.float32))
    pd.DataFrame({"image_id": ["a", "b"], "label": ["x", "y"]}).to_csv(bad / "index.csv", index=False)
    with pytest.raises(UserError, match="not aligned"):
        load_features(bad)
    with pytest.raises(UserError, match="unknown method 'magic'"):
        CleanConfig(methods=["magic"]).validate("clean.yaml")
    assert {"knn", "isolation_forest", "lof", "dbscan", "label_issues"} <= set(METHODS)  # the seed's five kept


def test_evaluate_harness_is_seeded_and_complete(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    from train.clean import main as clean_main

    args = ["--evaluate", "--model", str(tiny_model["artifacts"]), "--data", str(tiny_model["data"]),
            "--flip", "0.1", "--foreign", "0.1", "--seeds", "0,1"]  # fmt: skip
    assert run_cli(clean_main, [*args, "--out", str(tmp_path / "a")]) == 0
    assert run_cli(clean_main, [*args, "--out", str(tmp_path / "b")]) == 0
    a = pd.read_csv(tmp_path / "a" / "report.csv")
    assert a.equals(pd.read_csv(tmp_path / "b" / "report.csv"))
    assert len(a) == len(METHODS) * 3 * 2 and set(a["kind"]) == {"mislabeled", "scattered_foreign", "clustered_foreign"}
    assert set(a["seed"]) == {0, 1}
    assert a[["auroc", "average_precision", "precision_at_k"]].stack().between(0, 1).all()
    summary = pd.read_csv(tmp_path / "a" / "summary.csv")
    row = summary[(summary["method"] == "knn") & (summary["kind"] == "mislabeled")].iloc[0]
    runs = a[(a["method"] == "knn") & (a["kind"] == "mislabeled")]["average_precision"]
    assert row["average_precision_mean"] == pytest.approx(runs.mean())
    assert row["average_precision_std"] == pytest.approx(runs.std())
    report = (tmp_path / "a" / "report.md").read_text()
    assert "| isolation_forest |" in report and "Best outlier score" in report
    for extra in (["--set", "seeds=[0]"], ["--config", "configs/other.yaml"]):  # the harness has its own options
        assert run_cli(clean_main, [*args, "--out", str(tmp_path / "c"), *extra]) == 2
        assert not (tmp_path / "c").exists()


def test_user_folders_are_never_wiped(tiny_model: dict[str, Path], real_features: Path, tmp_path: Path) -> None:
    mine = tmp_path / "my_photos"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious")
    args = ["--model", str(tiny_model["artifacts"]), "--data", str(tiny_model["data"]), "--out", str(mine)]
    assert run_cli(features_main, args) == 2
    cfg = CleanConfig(features=str(real_features / "f"), csv=str(real_features / "train_planted.csv"),
                      images=str(tiny_model["data"] / "train"), out=str(tmp_path / "out"), copy_flagged=str(mine),
                      methods=["isolation_forest"], remove_by=["isolation_forest"])  # fmt: skip
    with pytest.raises(UserError, match="not written by this tool"):
        clean(cfg)
    assert (mine / "keep.txt").read_text() == "precious"
    with pytest.raises(UserError, match="copy_flagged"):
        CleanConfig(out="x", copy_flagged="x").validate("clean.yaml")
    again = tmp_path / "features_again"
    assert run_cli(features_main, [*args[:-1], str(again)]) == 0
    assert run_cli(features_main, [*args[:-1], str(again)]) == 0  # its own output folder is replaced
