"""``make clean`` removes generated outputs and nothing a user made."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from conftest import ROOT


def test_make_clean_removes_outputs_and_keeps_user_data(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for folder in ("artifacts/m", "runs/m", "reports/r", "features/m", "data/elpv", "data/mine", "configs"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "data/elpv/.imgcls-output").write_text("written by imgcls-deploy\n")  # what `make data` leaves
    (tmp_path / "data/mine/train.csv").write_text("image_id,label\n")
    (tmp_path / "data/weights").mkdir()
    (tmp_path / "data/weights/efficientnet_lite0.pth").write_bytes(b"weights")  # what `make weights` writes
    (tmp_path / "data/weights/my_own.pth").write_bytes(b"mine")  # a user's file beside it
    (tmp_path / "submission.csv").write_text("image_id,label\n")
    (tmp_path / "configs/bench.yaml").write_text("{}\n")
    proc = subprocess.run(["make", "-s", "clean"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for gone in ("artifacts", "runs", "reports", "features", "submission.csv", "data/elpv",
                 "data/weights/efficientnet_lite0.pth"):  # fmt: skip
        assert not (tmp_path / gone).exists(), gone
        assert f"removing {gone}" in proc.stdout
    assert (tmp_path / "data/mine/train.csv").is_file() and (tmp_path / "configs/bench.yaml").is_file()
    assert "kept data/mine/" in proc.stdout and "kept data/weights/" in proc.stdout
    assert (tmp_path / "data/weights/my_own.pth").is_file()


def test_make_demo_runs_both_backbones_and_benches_them_side_by_side(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")  # make -n prints the install and every step, runs nothing
    proc = subprocess.run(["make", "-n", "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    order = [
        "-m train.prepare_elpv --out data/elpv",
        "-m train.pretrained --out data/weights/efficientnet_lite0.pth",
        "-m train --model resnet18_cpu",
        "-m export --model resnet18_cpu",
        "-m train --model efficientnet_lite0 ",
        "-m export --model efficientnet_lite0",
        "-m runtime.predict --engine onnx --model artifacts/resnet18_cpu",
        "-m bench --set data=data/elpv  --set models=[resnet18_cpu,efficientnet_lite0]",
    ]
    at = [next(i for i, ln in enumerate(lines) if step in ln) for step in order]
    assert at == sorted(at), proc.stdout
    assert all("--allow-degraded" in ln for ln in lines if "-m export --model" in ln)
