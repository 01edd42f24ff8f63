"""K-fold training: stratified folds, out-of-fold predictions, CV summary, resume, fold ensembles, bad FOLDS."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_one_line_error, run_module

from runtime.artifacts import export_command, fold_dirs
from runtime.errors import UserError, run_cli
from runtime.predict import main as predict_main
from train.clean import read_pred_probs
from train.cli import main as train_main
from train.config import TrainConfig
from train.kfold import fold_record, make_folds


def test_folds_are_stratified_seeded_and_cover_every_row() -> None:
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 3
    folds = make_folds(labels, 3, seed=0)
    assert sorted(set(folds)) == [0, 1, 2] and len(folds) == len(labels)
    for k in range(3):  # every class in every fold, sizes within one of each other
        in_fold = [lab for lab, f in zip(labels, folds, strict=True) if f == k]
        assert set(in_fold) == {"a", "b", "c"}
    assert (make_folds(labels, 3, seed=0) == folds).all() and not (make_folds(labels, 3, seed=1) == folds).all()


def test_folds_larger_than_the_smallest_class_are_refused() -> None:
    with pytest.raises(
        UserError, match="FOLDS=4 is larger than the smallest class \\('c': 3 images\\); use FOLDS <= 3"
    ):
        make_folds(["a"] * 10 + ["c"] * 3, 4, seed=0)
    with pytest.raises(UserError, match="\\('c': 1 image\\); k-fold needs at least 2 images of every class"):
        make_folds(["a"] * 10 + ["c"], 2, seed=0)
    with pytest.raises(UserError, match="at least 2 folds"):
        make_folds(["a"] * 10, 1, seed=0)


@pytest.fixture(scope="module")
def kfold_run(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """3-fold CV of the tiny test config on ``elpv_small`` (one epoch per fold)."""
    work = tmp_path_factory.mktemp("kfold")
    config = work / "cv.yaml"
    text = tiny_model["config"].read_text().replace(str(tiny_model["work"]), str(work))
    config.write_text(text)
    assert run_cli(train_main, ["--model", str(config), "--folds", "3"]) == 0
    return {"work": work, "config": config, "model": work / "artifacts" / "cv", "data": tiny_model["data"]}


def test_every_training_image_is_in_oof_once(kfold_run: dict[str, Path]) -> None:
    model = kfold_run["model"]
    train = pd.read_csv(kfold_run["data"] / "train.csv")
    oof = pd.read_csv(model / "oof.csv")
    classes = sorted(train["label"].unique())
    assert list(oof.columns) == ["image_id", "label", *classes]
    assert oof["image_id"].tolist() == train["image_id"].tolist()  # every image once, in the CSV's order
    assert oof["label"].tolist() == train["label"].tolist()
    assert np.allclose(oof[classes].sum(axis=1), 1, atol=1e-5)
    for k in range(3):  # each row comes from the model that never trained on it
        fold = model / f"fold{k}"
        assert (fold / "best.pt").is_file()
        seen = set(pd.read_csv(fold / "fold_train.csv")["image_id"])
        held = pd.read_csv(fold / "oof.csv")
        assert not seen & set(held["image_id"])
        merged = oof.set_index("image_id").loc[held["image_id"], classes].to_numpy()
        assert np.allclose(merged, held[classes].to_numpy())
    cv = json.loads((model / "cv.json").read_text())
    assert cv["folds"] == 3 and sum(f["images"] for f in cv["per_fold"]) == len(train)
    assert cv["f1_micro_mean"] == pytest.approx(np.mean([f["f1_micro"] for f in cv["per_fold"]]))
    assert cv["f1_micro_std"] == pytest.approx(np.std([f["f1_micro"] for f in cv["per_fold"]]))
    # the cleaning step reads these probabilities as they are
    probs = read_pred_probs(model / "oof.csv", train, classes)
    assert probs.shape == (len(train), len(classes))


def test_resume_keeps_finished_folds(kfold_run: dict[str, Path]) -> None:
    model = kfold_run["model"]
    before = {k: (model / f"fold{k}" / "best.pt").stat().st_mtime_ns for k in range(3)}
    oof = (model / "oof.csv").read_text()
    (model / "fold2" / "oof.csv").unlink()  # as if the run had stopped before fold 2 finished predicting
    assert run_cli(train_main, ["--model", str(kfold_run["config"]), "--folds", "3", "--resume"]) == 0
    after = {k: (model / f"fold{k}" / "best.pt").stat().st_mtime_ns for k in range(3)}
    assert after[0] == before[0] and after[1] == before[1]
    assert (model / "fold2" / "oof.csv").is_file()
    assert (model / "oof.csv").read_text() == oof  # fold 2 resumed from its finished last.pt: same predictions


def test_fold_ensemble_with_one_flag(kfold_run: dict[str, Path], tmp_path: Path) -> None:
    model, data = kfold_run["model"], kfold_run["data"]
    common = ["--engine", "torch", "--data", str(data), "--probs", "--no-progress"]
    assert run_cli(predict_main, [*common, "--model", str(model), "--folds", "--out", str(tmp_path / "e.csv")]) == 0
    members = []
    for k in range(3):
        out = tmp_path / f"f{k}.csv"
        assert run_cli(predict_main, [*common, "--model", str(model / f"fold{k}"), "--out", str(out)]) == 0
        members.append(pd.read_csv(out))
    ensemble = pd.read_csv(tmp_path / "e.csv")
    classes = sorted(pd.read_csv(data / "train.csv")["label"].unique())
    mean = np.mean([m[classes].to_numpy() for m in members], axis=0)
    assert np.allclose(ensemble[classes].to_numpy(), mean, atol=1e-5)
    assert ensemble["image_id"].tolist() == pd.read_csv(data / "test.csv")["image_id"].tolist()
    empty = tmp_path / "nofolds"
    shutil.copytree(model / "fold0", empty / "single")
    proc = run_module("runtime.predict", *common, "--model", str(empty), "--folds", "--out", str(tmp_path / "x.csv"))
    assert_one_line_error(proc, "no cv.json, so no finished k-fold run")


def test_too_many_folds_is_one_line(kfold_run: dict[str, Path]) -> None:
    proc = run_module("train", "--model", str(kfold_run["config"]), "--folds", "10")
    assert_one_line_error(proc, "FOLDS=10 is larger than the smallest class", "use FOLDS <= 9")


def test_resume_retrains_folds_of_another_setup(kfold_run: dict[str, Path], tmp_path: Path, capfd) -> None:
    shutil.copytree(kfold_run["model"], tmp_path / "artifacts" / "cv")
    config = tmp_path / "cv.yaml"
    config.write_text(kfold_run["config"].read_text().replace(str(kfold_run["work"]), str(tmp_path)))
    model = tmp_path / "artifacts" / "cv"
    before = {k: (model / f"fold{k}" / "best.pt").stat().st_mtime_ns for k in range(3)}
    capfd.readouterr()
    assert run_cli(train_main, ["--model", str(config), "--folds", "2", "--resume"]) == 0  # made with FOLDS=3
    err = capfd.readouterr().err
    assert err.count("made with another FOLDS, seed, CSV or config; training it again") == 2
    assert "fold2 in" in err and "earlier run with more folds" in err
    after = {k: (model / f"fold{k}" / "best.pt").stat().st_mtime_ns for k in range(3)}
    assert after[0] != before[0] and after[1] != before[1] and after[2] == before[2]
    assert json.loads((model / "fold1" / "fold.json").read_text())["folds"] == 2
    assert json.loads((model / "cv.json").read_text())["folds"] == 2
    assert fold_dirs(model) == [model / "fold0", model / "fold1"]  # the stale fold2 is not an ensemble member
    with pytest.raises(UserError, match="has 2 folds, not 3"):
        fold_dirs(model, 3)
    with pytest.raises(UserError, match="one fold model; give the folder holding the folds"):
        fold_dirs(model / "fold0")
    with pytest.raises(UserError, match="no such model folder"):
        fold_dirs(tmp_path / "nosuch")
    # the same setup again: both folds kept
    assert run_cli(train_main, ["--model", str(config), "--folds", "2", "--resume"]) == 0
    assert capfd.readouterr().err.count("kept (oof.csv exists)") == 2
    # a fold retrained after cv.json (an unfinished later run) is refused as an ensemble member
    (model / "fold1" / "best.pt").write_bytes(b"retrained")
    with pytest.raises(UserError, match=r"fold1/best\.pt was retrained after .*FOLDS=2 RESUME=1"):
        fold_dirs(model)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--folds", "1"], "FOLDS=1: k-fold needs at least 2 folds"),
        (["--folds", "0"], "FOLDS=0: k-fold needs at least 2 folds"),
        (["--folds-csv", "train.csv"], "--fold, --folds-csv and --nproc go with --folds"),
        (["--folds", "3", "--folds-csv", "test_labels.csv"], "image ids are in the held-out test.csv"),
        (["--folds", "3", "--fold", "1", "--resume", "--set", "seed=5"], "made with another FOLDS, seed, CSV"),
    ],
)
def test_bad_kfold_arguments_are_one_line(kfold_run: dict[str, Path], args: list[str], message: str, capfd) -> None:
    assert run_cli(train_main, ["--model", str(kfold_run["config"]), *args]) == 2
    err = capfd.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_stale_fold_artifact_hint_names_the_kfold_export(tmp_path: Path) -> None:
    assert export_command(Path("artifacts/m/fold3/best.pt")) == "make export MODEL=m FOLDS=k"  # no cv.json
    (tmp_path / "m" / "fold1").mkdir(parents=True)
    (tmp_path / "m" / "cv.json").write_text('{"folds": 2}')
    assert export_command(tmp_path / "m" / "fold1" / "best.pt") == "make export MODEL=m FOLDS=2"
    assert export_command(Path("artifacts/m/best.pt")) == "make export MODEL=m"


def test_fold_record_changes_with_the_class_map(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("image_id,label\na.png,x\n")
    (tmp_path / "encode_classes.json").write_text('{"x": 0, "y": 1}')
    cfg = TrainConfig(architecture="resnet18", data=str(tmp_path))
    before = fold_record(cfg, 2, 0, "train.csv")
    assert before == fold_record(cfg, 2, 0, "train.csv")
    (tmp_path / "encode_classes.json").write_text('{"x": 0}')
    assert fold_record(cfg, 2, 0, "train.csv")["class_map_sha256"] != before["class_map_sha256"]
