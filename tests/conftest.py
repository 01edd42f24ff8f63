"""Shared fixtures: a small real ELPV dataset in the contest layout, and helpers to run entry points."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: every engine x precision that runs on the CPU, in the order the bench and the micro-benchmarks use
CPU_CELLS = [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"), ("onnx", "fp16"), ("openvino", "fp32"),
             ("openvino", "int8")]  # fmt: skip


@pytest.fixture(scope="session")
def elpv_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 real ELPV images (12 per class) in the contest layout, split into train_/valid_ CSVs."""
    from train.prepare_elpv import prepare
    from train.split import SplitConfig, split

    data = prepare(tmp_path_factory.mktemp("data") / "elpv", per_class=12, seed=0)
    split(SplitConfig(dataset=str(data), valid_fraction=0.25, seed=0))
    return data


def run_module(module: str, *args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` from the repository root; returns the finished process (text output)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """The process failed with exactly one ``error:`` line on stderr, containing every needle, no traceback."""
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def assert_self_contained(page: str) -> None:
    """An HTML page references nothing outside itself: no URL, every src/href an inline data: URI or an anchor."""
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", page)
    assert not re.search(r"(?i)(https?:|ftp:|//[a-z0-9.-]+/|@import|url\()", text), text[:300]
    for ref in re.findall(r"(?i)(?:src|href)\s*=\s*['\"]([^'\"]*)", text):
        assert ref.startswith(("data:", "#")), ref


@pytest.fixture(scope="session")
def tiny_model(elpv_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny timm test model trained for one epoch on ``elpv_small`` and exported to ONNX.

    Returns the paths: ``work`` (folder holding ``artifacts/``, ``runs/``), ``artifacts`` (the model folder),
    ``config`` (its YAML) and ``data``.
    """
    from export.cli import main as export_main
    from runtime.errors import run_cli
    from train.cli import main as train_main

    work = tmp_path_factory.mktemp("work")
    config = work / "tiny.yaml"
    config.write_text(
        "architecture: test_resnet\nimg_size: 64\ncrop_pct: 1.0\nepochs: 1\nbatch_size: 8\nworkers: 0\n"
        f"data: {elpv_small}\nartifacts: {work / 'artifacts'}\nruns: {work / 'runs'}\n"
    )
    assert run_cli(train_main, ["--model", str(config)]) == 0
    code = run_cli(
        export_main,
        [
            "--model",
            "tiny",
            "--data",
            str(elpv_small),
            "--config",
            str(ROOT / "configs/export.yaml"),
            "--set",
            f"artifacts={work / 'artifacts'}",
            "--set",
            "verify_images=36",
            "--set",
            "min_f1_ratio=0.5",  # a one-epoch toy model on 9 images: one flipped prediction is 11% of F1
        ],
    )
    assert code == 0
    return {"work": work, "artifacts": work / "artifacts" / "tiny", "config": config, "data": elpv_small}


def _gpu_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when no CUDA GPU is visible."""
    if _gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (and the 'gpu' extra); none here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
