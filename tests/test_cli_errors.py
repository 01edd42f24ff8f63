"""Bad input gives one `error:` line naming the file or key, a non-zero exit and no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import ROOT, assert_one_line_error, run_module


@pytest.fixture()
def dataset_copy(elpv_small: Path, tmp_path: Path) -> Path:
    """A private copy of the small dataset that a test may damage."""
    return Path(shutil.copytree(elpv_small, tmp_path / "elpv"))


def test_missing_dataset_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dataset"
    proc = run_module("runtime.predict", "--model", "artifacts/x", "--data", str(missing))
    assert_one_line_error(proc, str(missing), "not found")
    proc = run_module("train.split", "--set", f"dataset={missing}")
    assert_one_line_error(proc, str(missing), "not found")


def test_csv_without_image_id(tiny_model: dict[str, Path], dataset_copy: Path) -> None:
    (dataset_copy / "test.csv").write_text("id\ncell0001.png\n")
    proc = run_module("runtime.predict", "--model", str(tiny_model["artifacts"]), "--data", str(dataset_copy))
    assert_one_line_error(proc, "test.csv", "image_id")


def test_unknown_model() -> None:
    proc = run_module("train", "--model", "no_such_backbone")
    assert_one_line_error(proc, "no_such_backbone", "resnet18_cpu")
    proc = run_module("export", "--model", "no_such_backbone")
    assert_one_line_error(proc, "no_such_backbone", "best.pt")


def test_unknown_config_keys(tmp_path: Path) -> None:
    proc = run_module("train.split", "--set", "valid_fractoin=0.3")
    assert_one_line_error(proc, "split.yaml", "'valid_fractoin'")
    bad = tmp_path / "bad_model.yaml"
    bad.write_text("architecture: resnet18\nlearning_rate: 0.1\n")
    proc = run_module("train", "--model", str(bad))
    assert_one_line_error(proc, "bad_model.yaml", "'learning_rate'")
    proc = run_module("bench", "--set", "engines=[torch, tensorflow]")
    assert_one_line_error(proc, "bench.yaml", "'tensorflow'")


def test_unreadable_image_in_predict_keeps_previous_output(tiny_model: dict[str, Path], dataset_copy: Path) -> None:
    first = sorted((dataset_copy / "test").iterdir())[0]
    first.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = dataset_copy / "submission.csv"
    out.write_text("image_id,label\nold,row\n")
    for engine in ("onnx", "torch"):
        proc = run_module(
            "runtime.predict",
            "--engine",
            engine,
            "--model",
            str(tiny_model["artifacts"]),
            "--data",
            str(dataset_copy),
            "--out",
            str(out),
        )
        assert_one_line_error(proc, first.name, "cannot decode")
        assert out.read_text() == "image_id,label\nold,row\n"


def test_unreadable_image_in_training_workers(tiny_model: dict[str, Path], dataset_copy: Path, tmp_path: Path) -> None:
    bad = sorted((dataset_copy / "train").iterdir())[0]
    bad.write_bytes(b"")
    config = tmp_path / "broken.yaml"
    text = tiny_model["config"].read_text().replace(str(tiny_model["data"]), str(dataset_copy))
    text = text.replace("workers: 0", "workers: 2").replace(str(tiny_model["work"]), str(tmp_path))
    config.write_text(text)
    proc = run_module("train", "--model", str(config))
    assert_one_line_error(proc, bad.name, "empty file")
    assert not (tmp_path / "artifacts" / "broken" / "best.pt").exists()


def test_missing_artifact_and_unknown_engine(elpv_small: Path, tmp_path: Path) -> None:
    proc = run_module("runtime.predict", "--engine", "onnx", "--model", str(tmp_path), "--data", str(elpv_small))
    assert_one_line_error(proc, "model.onnx", "not found")
    proc = run_module("runtime.predict", "--engine", "tensorflow", "--model", str(tmp_path), "--data", ".")
    assert proc.returncode != 0 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr


def test_make_unknown_model_fails_with_one_line() -> None:
    import subprocess

    proc = subprocess.run(
        ["make", "--no-print-directory", "train", "MODEL=no_such_backbone"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "error: unknown MODEL 'no_such_backbone'" in proc.stderr
