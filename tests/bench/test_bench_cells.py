"""Bench cells in their worker processes: a missing artifact and a dying process are recorded, not fatal."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench.config import BenchConfig
from bench.run import run_bench
from bench.worker import CellFailed, CellProcess, torch_cuda_peak_mib
from runtime.members import Member


def test_missing_artifact_is_a_recorded_skip(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(tiny_model["artifacts"], artifacts / "tiny")
    (artifacts / "tiny" / "model.onnx").unlink()
    cfg = BenchConfig(
        data=str(tiny_model["data"]),
        artifacts=str(artifacts),
        min_seconds=0.1,
        rounds=1,
        batch_sizes=[4],
        engines=["torch", "onnx", "trt:fp16", "torch:fp16"],
        matmul_peak=False,
    )
    rows = run_bench(cfg)["rows"]
    assert [r.cell for r in rows] == ["torch:fp32", "onnx:fp32", "trt:fp16", "torch:fp16"]
    assert rows[0].status == "ok" and 0 <= rows[0].f1_micro <= 1 and rows[0].img_per_s_engine > 0
    assert rows[0].peak_rss_mib > 50 and rows[0].params_m > 0 and rows[0].gmacs > 0
    ok = rows[0]  # decode-only rate beside engine-only and end to end, and the pipeline efficiency from them
    assert ok.decode == "fast" and ok.img_per_s_decode > 0  # auto, as predict: the export's decode check passed
    assert ok.decode_workers is not None and 1 <= ok.decode_workers <= (os.cpu_count() or 1)  # measured (workers null)
    assert ok.pipeline_efficiency == pytest.approx(ok.img_per_s * (1 / ok.img_per_s_engine + 1 / ok.img_per_s_decode))
    assert rows[1].status.startswith("skipped:") and "model.onnx" in rows[1].status
    assert rows[2].status.startswith("skipped:") and "gpu" in rows[2].status
    # torch:fp16 is the FP32 checkpoint under float16 autocast, compared with torch:fp32; no GPU memory on a CPU
    assert rows[3].status == "ok" and "autocast float16" in rows[3].provider and "autocast" not in rows[0].provider
    assert rows[3].reference == "torch:fp32" and rows[3].agreement >= 0.75
    assert rows[0].gpu_mem_mib is None and torch_cuda_peak_mib() is None


def test_a_dying_worker_is_a_recorded_failure(tiny_model: dict[str, Path]) -> None:
    member = Member(str(tiny_model["artifacts"]), "onnx", "fp32")
    cell = CellProcess([member], "none", "cpu", None)
    assert cell.info["provider"] == "CPUExecutionProvider"
    cell.process.kill()  # as the kernel's out-of-memory killer would
    with pytest.raises(CellFailed, match="worker process died with exit code -9 \\(killed: out of memory\\?\\)"):
        cell.call("predict", [], 4, 1)
    cell.stop()
