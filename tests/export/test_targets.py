"""Every CPU export target is built, structurally right, verified on real images, and gated."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
from conftest import ROOT, assert_one_line_error, run_module

from export.onnx import export_onnx
from export.quantize import convert_fp16, quantize_int8
from export.verify import Gates, judge
from runtime.engines import create_engine
from runtime.errors import UserError
from runtime.metadata import ONNX_META_KEY, ModelMeta


def _meta_of(path: Path) -> ModelMeta:
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return ModelMeta.from_json(props[ONNX_META_KEY], str(path))


def _io_types(proto: onnx.ModelProto) -> set[int]:
    return {v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]}


def test_int8_is_per_channel_qdq_with_float_io(tiny_model: dict[str, Path]) -> None:
    path = tiny_model["artifacts"] / "model.int8.onnx"
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    assert _io_types(proto) == {onnx.TensorProto.FLOAT}
    inits = {i.name: i for i in proto.graph.initializer}
    scales = [inits[n.input[1]] for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits]
    assert any(len(s.dims) == 1 and s.dims[0] > 1 for s in scales), "no per-channel weight scales"
    meta = _meta_of(path)
    assert meta.export["precision"] == "int8"
    assert meta.export["quantization"]["activation_type"] == "uint8" and meta.export["quantization"]["per_channel"]
    assert meta.export["verification"]["passed"] is True


def test_fp16_keeps_float_io_and_runs(tiny_model: dict[str, Path]) -> None:
    path = tiny_model["artifacts"] / "model.fp16.onnx"
    proto = onnx.load(str(path))
    assert _io_types(proto) == {onnx.TensorProto.FLOAT}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    dtypes = {i.data_type for i in proto.graph.initializer if len(i.dims) > 1 and i.data_type in floats}
    assert dtypes == {onnx.TensorProto.FLOAT16}  # every weight tensor converted
    assert _meta_of(path).export["precision"] == "fp16"


def test_fp16_keeps_layernorm_and_softmax_in_fp32(tmp_path: Path) -> None:
    model = timm.create_model("test_vit", num_classes=3).eval()
    meta = ModelMeta("test_vit", ["a", "b", "c"], (3, 160, 160), (0.5,) * 3, (0.5,) * 3)
    fp32 = export_onnx(model, meta, tmp_path / "vit.onnx")
    convert_fp16(fp32, tmp_path / "vit.fp16.onnx")
    proto = onnx.load(str(tmp_path / "vit.fp16.onnx"))
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    assert {i.data_type for i in proto.graph.initializer if len(i.dims) > 1 and i.data_type in floats} == {10}
    producer = {out: node for node in proto.graph.node for out in node.output}
    inits = {i.name: i.data_type for i in proto.graph.initializer}
    guarded = [n for n in proto.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert guarded

    def is_fp32(name: str) -> bool:
        if name in inits:
            return inits[name] == onnx.TensorProto.FLOAT
        node = producer.get(name)
        if node is None or node.op_type != "Cast":
            return True  # produced by another FP32-kept op, or a graph input (float32 I/O)
        return next(a.i for a in node.attribute if a.name == "to") == onnx.TensorProto.FLOAT

    for node in guarded:
        assert all(is_fp32(name) for name in node.input if name), node.name
    x = np.random.default_rng(0).standard_normal((2, 3, 160, 160)).astype(np.float32)
    half = ort.InferenceSession(str(tmp_path / "vit.fp16.onnx"), providers=["CPUExecutionProvider"])
    full = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(half.run(["logits"], {"input": x})[0], full.run(["logits"], {"input": x})[0], atol=0.05)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_calibration_methods(tiny_model: dict[str, Path], tmp_path: Path, method: str) -> None:
    images = sorted((tiny_model["data"] / "train").iterdir())[:8]
    meta = _meta_of(tiny_model["artifacts"] / "model.onnx")
    info = quantize_int8(tiny_model["artifacts"] / "model.onnx", tmp_path / "q.onnx", images, meta, method=method)
    assert info["calibration_method"] == method and info["calibration_images"] == 8
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(tmp_path / "q.onnx")).graph.node)
    with pytest.raises(UserError, match="calibration method"):
        quantize_int8(tiny_model["artifacts"] / "model.onnx", tmp_path / "x.onnx", images, meta, method="magic")


def test_openvino_ir_matches_onnx(tiny_model: dict[str, Path]) -> None:
    ir = tiny_model["artifacts"] / "openvino"
    assert (ir / "model.xml").is_file() and (ir / "model.bin").is_file()
    x = np.random.default_rng(1).standard_normal((5, 3, 64, 64)).astype(np.float32)
    with (
        create_engine("openvino", tiny_model["artifacts"]) as ov_engine,
        create_engine("onnx", tiny_model["artifacts"]) as o,
    ):
        assert ov_engine.meta.architecture == "test_resnet" and ov_engine.meta.export["format"] == "openvino"
        np.testing.assert_allclose(ov_engine.run(x), o.run(x), atol=1e-4)
    with pytest.raises(UserError, match="holds a int8 model but fp32 was requested"):
        create_engine("onnx", tiny_model["artifacts"] / "model.int8.onnx", precision="fp32")


def test_gates() -> None:
    ref = np.eye(4, dtype=np.float32)[[0, 1, 2, 3] * 25]  # 100 rows, perfectly classified
    y = [0, 1, 2, 3] * 25
    cand = ref.copy()
    cand[0] = [0, 1, 0, 0]  # one flipped prediction: 99% agreement, F1 0.99
    assert not judge(ref, cand, y, "fp32", Gates())["passed"]
    assert judge(ref, cand, y, "int8", Gates())["passed"]
    cand[1] = [1, 0, 0, 0]
    out = judge(ref, cand, y, "int8", Gates())
    assert not out["passed"] and out["candidate_f1_micro"] == pytest.approx(0.98) and out["f1_delta"] < 0


def test_corrupted_artifact_is_rejected_by_verify(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(tiny_model["artifacts"], artifacts / "tiny")
    path = artifacts / "tiny" / "model.onnx"
    proto = onnx.load(str(path))
    rng = np.random.default_rng(0)
    for init in proto.graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.ndim == 4:
            init.CopyFrom(
                onnx.numpy_helper.from_array(arr + rng.standard_normal(arr.shape).astype(np.float32), init.name)
            )
    onnx.save_model(proto, str(path))
    sets = ["--set", f"artifacts={artifacts}", "--set", "verify_csv=train_.csv"]
    proc = run_module("export.verify", "--model", "tiny", "--data", str(tiny_model["data"]), *sets)
    assert_one_line_error(proc, "model.onnx", "failed verification")
    record = __import__("json").loads((artifacts / "tiny" / "verify.json").read_text())
    assert record["model.onnx"]["passed"] is False and record["model.onnx"]["top1_agreement"] < 0.999
    assert "FAIL model.onnx" in proc.stderr and "PASS openvino/model.xml" in proc.stderr


def test_trt_target_without_gpu_fails_in_one_line_and_others_build(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    (artifacts / "tiny").mkdir(parents=True)
    shutil.copy(tiny_model["artifacts"] / "best.pt", artifacts / "tiny" / "best.pt")
    proc = run_module(
        "export", "--model", "tiny", "--data", str(tiny_model["data"]), "--targets", "onnx,trt",
        "--config", str(ROOT / "configs/export.yaml"), "--set", f"artifacts={artifacts}",
    )  # fmt: skip
    assert_one_line_error(proc, "trt:", "gpu")
    assert (artifacts / "tiny" / "model.onnx").is_file()
    assert not list((artifacts / "tiny").glob(".export-*")) and not list((artifacts / "tiny").glob("*.engine"))


def test_dynamic_hw_refused_for_fixed_size_models_and_allowed_for_cnns(tmp_path: Path) -> None:
    vit = timm.create_model("test_vit", num_classes=2).eval()
    meta = ModelMeta("test_vit", ["a", "b"], (3, 160, 160), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(UserError, match="fixed input size"):
        export_onnx(vit, meta, tmp_path / "vit.onnx", dynamic_hw=True)
    cnn = timm.create_model("test_resnet", num_classes=2).eval()
    meta = ModelMeta("test_resnet", ["a", "b"], (3, 64, 64), (0.5,) * 3, (0.5,) * 3)
    path = export_onnx(cnn, meta, tmp_path / "cnn.onnx", dynamic_hw=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        expected = cnn(x).numpy()
    np.testing.assert_allclose(session.run(["logits"], {"input": x.numpy()})[0], expected, atol=1e-4)


@pytest.mark.gpu
def test_tensorrt_engine_builds_runs_and_verifies(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    (artifacts / "tiny").mkdir(parents=True)
    shutil.copy(tiny_model["artifacts"] / "best.pt", artifacts / "tiny" / "best.pt")
    proc = run_module(
        "export", "--model", "tiny", "--data", str(tiny_model["data"]), "--targets", "trt", "--precision", "fp16",
        "--config", str(ROOT / "configs/export.yaml"), "--set", f"artifacts={artifacts}",
        "--set", f"trt_timing_cache={tmp_path / 'timing.cache'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    engine_path = artifacts / "tiny" / "model.fp16.engine"
    assert engine_path.is_file() and Path(f"{engine_path}.json").is_file()
    with create_engine("trt", artifacts / "tiny", device="cuda", precision="fp16") as trt_engine:
        assert trt_engine.meta.export["layer_precisions"].get("fp16", 0) > 0
        with create_engine("onnx", tiny_model["artifacts"]) as o:
            x = np.random.default_rng(2).standard_normal((3, 3, 64, 64)).astype(np.float32)
            assert (trt_engine.run(x).argmax(1) == o.run(x).argmax(1)).all()


def test_verify_fails_a_truncated_artifact_and_records_engines_apart(
    tiny_model: dict[str, Path], tmp_path: Path
) -> None:
    import json

    artifacts = tmp_path / "artifacts"
    shutil.copytree(tiny_model["artifacts"], artifacts / "tiny")
    fp16 = artifacts / "tiny" / "model.fp16.onnx"
    fp16.write_bytes(fp16.read_bytes()[:1000])
    sets = ["--set", f"artifacts={artifacts}"]
    proc = run_module("export.verify", "--model", "tiny", "--data", str(tiny_model["data"]), *sets)
    assert_one_line_error(proc, "model.fp16.onnx", "failed verification")
    record = json.loads((artifacts / "tiny" / "verify.json").read_text())
    assert record["model.fp16.onnx"]["passed"] is False and "cannot load" in record["model.fp16.onnx"]["error"]
    assert "model.int8.onnx" in record and "model.int8.onnx (openvino)" in record


def test_channels_last_model_exports_without_a_shape_dependent_gather(tmp_path: Path) -> None:
    """A channels_last model (the torch engine's default) once exported its global pool as an identity Gather
    indexed from Shape(input), which OpenVINO then mis-compiled in INT8; the export traces NCHW and restores."""
    cnn = timm.create_model("test_resnet", num_classes=2).eval().to(memory_format=torch.channels_last)
    meta = ModelMeta("test_resnet", ["a", "b"], (3, 64, 64), (0.5,) * 3, (0.5,) * 3)
    path = export_onnx(cnn, meta, tmp_path / "cnn.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"Gather", "Shape", "Range"}, ops
    convs = [p for p in cnn.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)  # the caller's model as it was
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = cnn(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["logits"], {"input": x.numpy()})[0], expected, atol=1e-4)
