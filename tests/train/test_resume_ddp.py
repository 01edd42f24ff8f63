"""Exact resume after a kill, 2-process gloo DDP against one process, and training's bad-input checks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, assert_one_line_error, run_module

from train.loop import cpu_has_native_bf16


def _config(tiny_model: dict[str, Path], tmp_path: Path, name: str, extra: str = "") -> Path:
    text = tiny_model["config"].read_text().replace(str(tiny_model["work"]), str(tmp_path))
    path = tmp_path / f"{name}.yaml"
    path.write_text(text + "deterministic: true\n" + extra)
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_killed_and_resumed_run_equals_an_uninterrupted_one(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    extra = "epochs: 4\nauto_augment: rand-m9-mstd0.5\nema: true\nscheduler: cosine\nwarmup_epochs: 1\n"
    whole = _config(tiny_model, tmp_path, "whole", extra)
    assert run_module("train", "--model", str(whole)).returncode == 0
    cut = _config(tiny_model, tmp_path, "cut", extra)
    cmd = [sys.executable, "-m", "train", "--model", str(cut)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    last = tmp_path / "artifacts" / "cut" / "last.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not last.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # killed during epoch 2 (or later): last.pt holds a finished epoch
    proc.wait()
    epoch_at_kill = torch.load(last, weights_only=True)["epoch"]
    assert epoch_at_kill < 4
    resumed = run_module("train", "--model", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "artifacts" / "whole" / "best.pt"), _weights(tmp_path / "artifacts" / "cut" / "best.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma = torch.load(tmp_path / "artifacts" / "whole" / "best.pt", weights_only=True)["meta"]["metrics"]
    mb = torch.load(tmp_path / "artifacts" / "cut" / "best.pt", weights_only=True)["meta"]["metrics"]
    assert ma == mb


def test_two_process_ddp_matches_one_process(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    one = _config(tiny_model, tmp_path, "one", "epochs: 1\n")
    two = _config(tiny_model, tmp_path, "two", "epochs: 1\n")
    assert run_module("train", "--model", str(one)).returncode == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "train", "--model", str(two)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "x 2:" in proc.stderr  # ran as two processes
    m1 = torch.load(tmp_path / "artifacts" / "one" / "best.pt", weights_only=True)["meta"]["metrics"]
    m2 = torch.load(tmp_path / "artifacts" / "two" / "best.pt", weights_only=True)["meta"]["metrics"]
    # Same global batch and data, but per-process BatchNorm statistics and sampler order differ: after one epoch
    # of a tiny model on 9 validation images, micro-F1 may differ by at most 2 images.
    assert abs(m1["f1_micro"] - m2["f1_micro"]) <= 2 / 9 + 1e-9
    assert abs(m1["valid_loss"] - m2["valid_loss"]) < 0.5


@pytest.mark.parametrize(
    ("extra", "needle"),
    [("lr: -0.1\n", "'lr'"), ("batch_size: 0\n", "'batch_size'"), ("learning_rate: 1\n", "unknown key"),
     ("batch_size: 64\n", "cannot fill one batch")],
    ids=["negative-lr", "zero-batch", "unknown-key", "batch-larger-than-data"],
)  # fmt: skip
def test_bad_training_input(tiny_model: dict[str, Path], tmp_path: Path, extra: str, needle: str) -> None:
    cfg = _config(tiny_model, tmp_path, "bad", extra)
    assert_one_line_error(run_module("train", "--model", str(cfg)), needle)


def test_missing_dataset_and_resume_of_another_architecture(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(tiny_model, tmp_path, "other", "architecture: test_efficientnet\n")
    model_dir = tmp_path / "artifacts" / "other"
    model_dir.mkdir(parents=True)
    run = run_module("train", "--model", str(_config(tiny_model, tmp_path, "src", "epochs: 1\n")))
    assert run.returncode == 0
    shutil.copy(tmp_path / "artifacts" / "src" / "last.pt", model_dir / "last.pt")
    assert_one_line_error(run_module("train", "--model", str(cfg), "--resume"), "architecture", "test_resnet")
    assert_one_line_error(run_module("train", "--model", str(cfg), "--data", str(tmp_path / "nope")), "not found")
    nproc = _config(tiny_model, tmp_path, "nproc", "batch_size: 9\n")
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "train", "--model", str(nproc)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode != 0 and "not divisible by the 2 processes" in proc.stderr


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="CPU without native bfloat16")
def test_cpu_bfloat16_training_writes_an_fp32_checkpoint(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(tiny_model, tmp_path, "bf16", "epochs: 1\namp: true\namp_dtype: bfloat16\nglobal_pool: avgmax\n")
    proc = run_module("train", "--model", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "bfloat16" in proc.stderr.splitlines()[0]
    weights = _weights(tmp_path / "artifacts" / "bf16" / "best.pt")
    assert all(w.dtype in (torch.float32, torch.int64) for w in weights.values())
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
