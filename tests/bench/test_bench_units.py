"""Bench measurement and report writing, and a failing cell that is recorded instead of stopping the matrix."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.measure import engine_throughput
from bench.report import markdown_table, write_reports
from bench.run import BenchConfig, run_bench
from runtime.engines.base import Engine


class _CountingEngine(Engine):
    """Returns zeros and counts calls."""

    name = "fake"

    def __init__(self) -> None:
        super().__init__("none")
        self.calls = 0

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.zeros((len(batch), 2), np.float32)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name}


def test_engine_throughput_warms_up_and_repeats() -> None:
    engine = _CountingEngine()
    out = engine_throughput(engine, np.zeros((8, 3, 4, 4), np.float32), min_seconds=0.01, warmup=2, min_repeats=5)
    assert out["repeats"] >= 5 and engine.calls == out["repeats"] + 2
    assert out["img_per_s"] == 8 / (out["latency_ms_p50"] / 1e3)
    assert out["cv"] >= 0


def test_reports_hold_every_cell_and_failed_reasons(tmp_path: Path) -> None:
    rows = [
        dict(
            backbone="m", engine="torch", precision="fp32", batch_size=8, f1_micro=0.5, f1_macro=0.25, img_per_s=10.0,
            img_per_s_engine=20.0, status="ok",
        ),
        dict(backbone="m", engine="onnx", precision="int8", batch_size=8, status="skipped: model.onnx not found"),
    ]  # fmt: skip
    csv_path, md_path = write_reports(rows, tmp_path, "# header")
    table = pd.read_csv(csv_path)
    assert table["engine"].tolist() == ["torch", "onnx"]
    assert table["status"].tolist() == ["ok", "skipped: model.onnx not found"]
    md = md_path.read_text()
    assert md.startswith("# header") and "| m | torch | fp32 | 8 | 0.5000 | 0.2500 | 10.0 | 20.0 | ok |" in md
    assert "| m | onnx | int8 | 8 | - | - | - | - | skipped: model.onnx not found |" in markdown_table(rows)


def test_missing_artifact_is_a_recorded_skip(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(tiny_model["artifacts"], artifacts / "tiny")
    (artifacts / "tiny" / "model.onnx").unlink()
    cfg = BenchConfig(
        data=str(tiny_model["data"]),
        artifacts=str(artifacts),
        min_seconds=0.1,
        batch_sizes=[4],
        engines=["torch", "onnx", "trt:fp16"],
    )
    rows = run_bench(cfg)
    assert [r["engine"] for r in rows] == ["torch", "onnx", "trt"]
    assert rows[0]["status"] == "ok" and 0 <= rows[0]["f1_micro"] <= 1
    assert rows[1]["status"].startswith("skipped:") and "model.onnx" in rows[1]["status"]
    assert rows[2]["status"].startswith("skipped:") and "gpu" in rows[2]["status"]
