"""ELPV in the contest layout, and the seeded stratified split."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from runtime.errors import UserError
from train.prepare_elpv import LEVEL_NAMES, elpv_table, prepare
from train.split import SplitConfig, split


def test_elpv_table_has_published_counts() -> None:
    table, _ = elpv_table()
    assert len(table) == 2624
    assert table["label"].value_counts()[list(LEVEL_NAMES)].tolist() == [1508, 295, 106, 715]
    assert table["cell_type"].value_counts().to_dict() == {"poly": 1550, "mono": 1074}


def test_prepare_writes_contest_layout(elpv_small: Path) -> None:
    train = pd.read_csv(elpv_small / "train.csv")
    test = pd.read_csv(elpv_small / "test.csv")
    held_out = pd.read_csv(elpv_small / "test_labels.csv")
    assert list(train.columns) == ["image_id", "label"]
    assert list(test.columns) == ["image_id"]
    assert held_out["image_id"].tolist() == test["image_id"].tolist()
    assert len(train) + len(test) == 48 and len(test) == 12
    assert set(train["image_id"]).isdisjoint(test["image_id"])
    assert sorted(set(train["label"]) | set(held_out["label"])) == list(LEVEL_NAMES)
    assert all((elpv_small / "train" / i).is_file() for i in train["image_id"])
    assert all((elpv_small / "test" / i).is_file() for i in test["image_id"])


def test_prepare_is_seeded_and_skips_when_complete(tmp_path: Path) -> None:
    a = prepare(tmp_path / "a", per_class=8, seed=3)
    b = prepare(tmp_path / "b", per_class=8, seed=3)
    assert (a / "test.csv").read_text() == (b / "test.csv").read_text()
    stamp = (a / "train.csv").stat().st_mtime_ns
    prepare(a, per_class=8, seed=3)
    assert (a / "train.csv").stat().st_mtime_ns == stamp


def test_split_is_seeded_stratified_and_writes_sorted_class_map(elpv_small: Path, tmp_path: Path) -> None:
    train = pd.read_csv(elpv_small / "train_.csv")
    valid = pd.read_csv(elpv_small / "valid_.csv")
    whole = pd.read_csv(elpv_small / "train.csv")
    assert sorted(train["image_id"].tolist() + valid["image_id"].tolist()) == sorted(whole["image_id"])
    assert set(valid["label"]) == set(whole["label"])  # every class in valid
    mapping = json.loads((elpv_small / "encode_classes.json").read_text())
    assert mapping == {name: i for i, name in enumerate(sorted(LEVEL_NAMES))}
    before = (elpv_small / "valid_.csv").read_text()
    split(SplitConfig(dataset=str(elpv_small), valid_fraction=0.25, seed=0))
    assert (elpv_small / "valid_.csv").read_text() == before


def test_split_errors(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("image_id,label\na,x\nb,x\nc,y\n")
    with pytest.raises(UserError, match="'y' has only 1 image"):
        split(SplitConfig(dataset=str(tmp_path)))
    with pytest.raises(UserError, match="not found"):
        split(SplitConfig(dataset=str(tmp_path / "missing")))
    with pytest.raises(UserError, match="valid_fraction"):
        SplitConfig(valid_fraction=1.5).validate("split.yaml")
