"""Bounded export memory: the memory plan, early refusal, streamed calibration, and a killed export's leftovers."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ROOT, run_module

from export.budget import GIB, WEIGHT_COPIES, ActivationSize, activation_size, plan_memory
from export.calibrate import ImageCalibrationReader
from export.quantize import INT8_OPS, quantize_int8
from export.workdir import LOCK, PREFIX, remove_stale
from runtime.errors import UserError
from runtime.metadata import ONNX_META_KEY, ModelMeta


def test_plan_fits_the_budget_and_strides_divide_the_images() -> None:
    acts = ActivationSize(total=800 * 2**20, largest=4 * 2**20)  # forward working set: a quarter, 200 MiB per image
    plan = plan_memory(200 * 2**20, acts, budget_gib=2.0, max_batch=32, calibration_images=256)
    room = 2 * GIB - WEIGHT_COPIES * 200 * 2**20
    assert plan.batch_size == room // acts.forward < 32
    assert plan.calibration_images % plan.stride == 0 and plan.stride <= plan.batch_size
    assert plan.calibration_images >= 256 - plan.stride
    small = plan_memory(2**20, ActivationSize(2**20, 2**16), budget_gib=5.0, max_batch=32, calibration_images=100)
    assert small.batch_size == 32 and small.calibration_images == 100 and 100 % small.stride == 0


def test_histogram_methods_stream_or_are_refused_in_one_line() -> None:
    acts = ActivationSize(total=3 * GIB, largest=2**20)
    minmax = plan_memory(2**20, acts, budget_gib=13.0, max_batch=32, calibration_images=256)
    assert minmax.batch_size > 1 and minmax.calibration_refusal is None
    # MinMax reduces each tensor at once (export.calibrate): a forward pass per image, 13 GiB / 0.75 GiB -> batch 17
    assert minmax.batch_size == 17 and minmax.stride == 16  # the largest divisor of 256 up to the batch
    entropy = plan_memory(2**20, ActivationSize(GIB // 4, 2**20), 4.0, 32, 256, method="entropy")
    assert entropy.stride <= 7 and entropy.calibration_images % entropy.stride == 0  # <= 4 GiB held per stride
    refused = plan_memory(2**20, acts, budget_gib=2.0, max_batch=32, calibration_images=256, method="entropy")
    assert refused.calibration_refusal is not None and "\n" not in refused.calibration_refusal
    assert "entropy calibration keeps every activation" in refused.calibration_refusal
    assert refused.batch_size >= 1  # the other targets still build


def test_too_big_for_the_budget_is_refused_before_starting() -> None:
    with pytest.raises(UserError, match="refused before starting"):
        plan_memory(2 * GIB, ActivationSize(0, 0), budget_gib=5.0, max_batch=32, calibration_images=256)
    with pytest.raises(UserError, match="memory available"):
        plan_memory(2**20, ActivationSize(GIB, GIB // 4), 50.0, 32, 256, available=GIB)


def test_activation_size_counts_the_graph_tensors(tiny_model: dict[str, Path]) -> None:
    acts = activation_size(tiny_model["artifacts"] / "model.onnx")
    # at least the 3x64x64 float input's first conv output and the 4 logits; far below a GiB for this toy
    assert 4 * 4 < acts.largest <= acts.total < GIB
    assert acts.total > 3 * 64 * 64 * 4


def _scales(path: Path) -> dict[str, np.ndarray]:
    proto = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    return {n.input[1]: inits[n.input[1]] for n in proto.graph.node if n.op_type == "QuantizeLinear"}


def test_strided_minmax_calibration_gives_the_ranges_of_one_pass(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    fp32 = tiny_model["artifacts"] / "model.onnx"
    meta = ModelMeta.from_json({p.key: p.value for p in onnx.load(str(fp32)).metadata_props}[ONNX_META_KEY], "x")
    images = sorted((tiny_model["data"] / "train").iterdir())[:8]
    whole = quantize_int8(fp32, tmp_path / "whole.onnx", images, meta)
    strided = quantize_int8(fp32, tmp_path / "strided.onnx", images, meta, stride=2, batch_size=2)
    assert whole["calibration_stride"] == 8 and strided["calibration_stride"] == 2
    a, b = _scales(tmp_path / "whole.onnx"), _scales(tmp_path / "strided.onnx")
    assert a.keys() == b.keys() and a
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6)
    with pytest.raises(UserError, match="must divide"):
        quantize_int8(fp32, tmp_path / "x.onnx", images, meta, stride=3)


def test_streamed_calibration_gives_onnx_runtimes_own_ranges(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    """Our stride-by-stride calibration on its own session equals quantize_static calibrating the same graph and
    images itself (the library's session, one pass): same QuantizeLinear scales."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = tiny_model["artifacts"] / "model.onnx"
    meta = ModelMeta.from_json({p.key: p.value for p in onnx.load(str(fp32)).metadata_props}[ONNX_META_KEY], "x")
    images = sorted((tiny_model["data"] / "train").iterdir())[:8]
    quantize_int8(fp32, tmp_path / "ours.onnx", images, meta, stride=4, batch_size=2)
    prepared = tmp_path / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=False)
    quantize_static(
        str(prepared), str(tmp_path / "library.onnx"), ImageCalibrationReader(images, meta, "input", 8),
        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, op_types_to_quantize=list(INT8_OPS),
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )  # fmt: skip
    ours, library = _scales(tmp_path / "ours.onnx"), _scales(tmp_path / "library.onnx")
    assert ours.keys() == library.keys() and len(ours) > 3
    for name in ours:
        np.testing.assert_allclose(ours[name], library[name], rtol=1e-6)


def _killed_export_folder(model_dir: Path) -> None:
    """A child process opens an export work folder, writes into it, and is killed with SIGKILL."""
    code = (
        "import os, sys; from pathlib import Path; from export.workdir import work_folder\n"
        "with work_folder(Path(sys.argv[1])) as w:\n"
        "    (w / 'fp32.onnx').write_bytes(b'0' * 4096)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(model_dir)], cwd=ROOT, capture_output=True)
    assert proc.returncode == -9


def test_a_live_export_folder_is_kept_and_a_killed_ones_removed(tmp_path: Path) -> None:
    _killed_export_folder(tmp_path)
    live = tmp_path / f"{PREFIX}live"
    live.mkdir()
    with open(live / LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        removed = remove_stale(tmp_path)
    assert len(removed) == 1 and not removed[0].exists() and live.is_dir()


def test_next_export_removes_a_killed_exports_leftovers_in_one_line(tiny_model: dict[str, Path]) -> None:
    model_dir = tiny_model["artifacts"]
    installed = {p: p.stat().st_mtime_ns for p in model_dir.glob("model*.onnx")}
    _killed_export_folder(model_dir)
    assert list(model_dir.glob(f"{PREFIX}*"))
    assert {p: p.stat().st_mtime_ns for p in model_dir.glob("model*.onnx")} == installed
    proc = run_module(
        "export", "--model", "tiny", "--data", str(tiny_model["data"]), "--targets", "onnx",
        "--set", f"artifacts={model_dir.parent}", "--set", "verify_images=36",
        "--memory-report", str(model_dir.parent / "memory.json"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "leftover" in ln]
    assert len(lines) == 1 and "killed export" in lines[0], proc.stderr
    assert not list(model_dir.glob(f"{PREFIX}*"))
    assert (model_dir / "model.int8.onnx").stat().st_mtime_ns == installed[model_dir / "model.int8.onnx"]
    import json

    report = json.loads((model_dir.parent / "memory.json").read_text())
    steps = [s["step"] for s in report["steps"]]
    assert steps[:3] == ["load checkpoint", "torch.onnx export", "reference logits (torch)"]
    assert "verify model.onnx" in steps and all(s["peak_rss_mib"] > 0 for s in report["steps"])
