"""CSV reading, image-path resolution and the class map."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.dataset import (
    class_map,
    discover_inputs,
    encode_labels,
    image_dir_for,
    image_paths,
    read_class_map,
    read_csv,
)
from runtime.errors import UserError


def test_read_csv_tolerates_bom_crlf_whitespace_and_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffimage_id , label,extra\r\n a.png , cat ,1\r\nb.png,dog,2\r\n".encode())
    df = read_csv(path, require_label=True)
    assert df["image_id"].tolist() == ["a.png", "b.png"]
    assert df["label"].tolist() == ["cat", "dog"]


@pytest.mark.parametrize(
    "text, needle",
    [("id,label\na,b\n", "no 'image_id' column"), ("image_id,label\n", "no rows"), ("image_id,label\n,x\n", "empty")],
)
def test_read_csv_errors_name_the_file(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=needle) as info:
        read_csv(path, require_label=True)
    assert "bad.csv" in str(info.value)


def test_read_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        read_csv(tmp_path / "nope.csv")


def test_image_paths_refuse_ids_leaving_the_folder(tmp_path: Path) -> None:
    assert image_paths(tmp_path, ["a.png", "sub/b.png"]) == [tmp_path / "a.png", tmp_path / "sub/b.png"]
    for bad in ("../x.png", "/etc/passwd", "sub/../../x.png"):
        with pytest.raises(UserError, match="outside"):
            image_paths(tmp_path, [bad])


def test_image_dir_for_contest_layout(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    assert image_dir_for(tmp_path, "test.csv") == tmp_path / "test"
    assert image_dir_for(tmp_path, "train.csv") == tmp_path / "train"
    assert image_dir_for(tmp_path, "valid_.csv") == tmp_path / "train"


def test_class_map_sorted_and_round_trips(tmp_path: Path) -> None:
    mapping = class_map(["tennis", "archery", "tennis", "golf"])
    assert mapping == {"archery": 0, "golf": 1, "tennis": 2}
    path = tmp_path / "classes.json"
    path.write_text('{"golf": 1, "archery": 0, "tennis": 2}')
    assert read_class_map(path) == ["archery", "golf", "tennis"]
    path.write_text('{"golf": 3, "archery": 0}')
    with pytest.raises(UserError, match="indices"):
        read_class_map(path)


def test_encode_labels_rejects_unknown() -> None:
    assert encode_labels(["b", "a"], ["a", "b"], "x.csv") == [1, 0]
    with pytest.raises(UserError, match="'c'"):
        encode_labels(["c"], ["a", "b"], "x.csv")


def test_labelled_images_from_the_csv_or_a_labels_file(tmp_path: Path) -> None:
    from runtime.dataset import labelled_images

    (tmp_path / "test").mkdir()
    (tmp_path / "train").mkdir()
    (tmp_path / "train.csv").write_text("image_id,label\na.png,cat\nb.png,dog\n")
    (tmp_path / "test.csv").write_text("image_id\nc.png\nd.png\n")
    (tmp_path / "test_labels.csv").write_text("image_id,label\nd.png,dog\nc.png,cat\n")
    paths, labels = labelled_images(tmp_path, "train.csv", limit=1)
    assert paths == [tmp_path / "train" / "a.png"] and labels == ["cat"]
    paths, labels = labelled_images(tmp_path, "test.csv", labels_csv="test_labels.csv")
    assert [p.name for p in paths] == ["c.png", "d.png"] and labels == ["cat", "dog"]
    (tmp_path / "test_labels.csv").write_text("image_id,label\nd.png,dog\n")
    with pytest.raises(UserError, match=r"no label for image 'c\.png' of test\.csv"):
        labelled_images(tmp_path, "test.csv", labels_csv="test_labels.csv")


def test_prediction_notes_blank_lines_and_repeated_ids(tmp_path: Path, capsys) -> None:
    (tmp_path / "images").mkdir()
    csv = tmp_path / "test.csv"
    csv.write_text("image_id\na.png\n\nb.png\na.png\n   \n", encoding="utf-8")
    ids, _ = discover_inputs(None, csv, tmp_path / "images")
    assert ids == ["a.png", "b.png", "a.png"]
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"note: {csv}: 2 blank line(s) skipped",
        f"note: {csv}: 1 repeated image_id row(s) (first 'a.png'), each predicted once per row",
    ]
    csv.write_text("image_id\na.png\nb.png\n", encoding="utf-8")
    discover_inputs(None, csv, tmp_path / "images")
    assert capsys.readouterr().err == ""
