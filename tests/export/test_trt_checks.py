"""TensorRT logic that runs without a GPU: build plans, profiles, compatibility and the precision check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.engines.trt_checks import (
    BuildPlan,
    build_plan,
    check_built_precision,
    check_engine_compat,
    layer_precisions,
    profile_shapes,
    trt_major,
)
from runtime.errors import UserError
from runtime.metadata import ModelMeta


def test_build_plan_by_version() -> None:
    assert build_plan(11, "fp16") == BuildPlan("fp16")
    assert build_plan(11, "int8") == BuildPlan("int8-qdq")
    assert build_plan(11, "fp32") == BuildPlan("fp32")
    assert build_plan(10, "fp16") == BuildPlan("fp32", ("FP16",))
    assert build_plan(10, "int8") == BuildPlan("fp32", ("INT8", "FP16"), calibrator=True)
    assert trt_major("11.0.1.3") == 11 and trt_major("10.13.0") == 10
    with pytest.raises(UserError, match="not supported"):
        build_plan(8, "fp16")
    with pytest.raises(UserError, match="precision"):
        build_plan(11, "fp8")


def test_profile_shapes() -> None:
    shapes = profile_shapes((3, 224, 224), [1, 32, 64])
    assert shapes == {"min": (1, 3, 224, 224), "opt": (32, 3, 224, 224), "max": (64, 3, 224, 224)}
    for bad in ([0, 1, 2], [4, 2, 8], [1, 2]):
        with pytest.raises(UserError, match="trt_batch"):
            profile_shapes((3, 8, 8), bad)


def _sidecar(**export: str) -> ModelMeta:
    meta = ModelMeta("resnet18", ["a", "b"], (3, 64, 64), (0.5,) * 3, (0.5,) * 3)
    meta.export = {
        "format": "tensorrt",
        "tensorrt": "11.0.1",
        "gpu": "NVIDIA L4",
        "compute_capability": "8.9",
        **export,
    }
    return meta


def test_engine_compat_refuses_other_gpu_or_version() -> None:
    check_engine_compat(_sidecar(), "11.0.1", "NVIDIA L4", "8.9", "m.engine.json")
    with pytest.raises(UserError, match=r"TensorRT 11\.0\.1, this machine has 10\.13\.0.*make export"):
        check_engine_compat(_sidecar(), "10.13.0", "NVIDIA L4", "8.9", "m.engine.json")
    with pytest.raises(UserError, match=r"built for NVIDIA L4 \(sm 8\.9\).*NVIDIA A100 \(sm 8\.0\)"):
        check_engine_compat(_sidecar(), "11.0.1", "NVIDIA A100", "8.0", "m.engine.json")
    with pytest.raises(UserError, match="not describe a TensorRT engine"):
        check_engine_compat(_sidecar(format="onnx"), "11.0.1", "NVIDIA L4", "8.9", "m.engine.json")


TRT10_FP16 = {
    "Layers": [
        {"Name": "conv1", "LayerType": "CaskConvolution", "Outputs": [{"Name": "a", "Format/Datatype": "Half"}]},
        {"Name": "copy", "LayerType": "Reformat", "Outputs": [{"Name": "b", "Format/Datatype": "Float"}]},
        {"Name": "fc", "LayerType": "Gemm", "Outputs": [{"Name": "c", "Format/Datatype": "Row major linear FP32"}]},
    ]
}
TRT11_FP32_ONLY = {
    "I/O Tensors": [{"Name": "input", "DataType": "Float"}],
    "Layers": [
        {
            "Name": "conv1",
            "LayerType": "Convolution",
            "Outputs": [{"Name": "a", "DataType": "Float", "Format": "kLINEAR"}],
        },
        {"Name": "fc", "LayerType": "Gemm", "Outputs": [{"Name": "c", "DataType": "Float", "Format": "kLINEAR"}]},
    ],
}
TRT11_INT8 = {
    "Layers": [
        {"Name": "q", "LayerType": "Scale", "Outputs": [{"Name": "a", "DataType": "Int8", "Format": "kCHW32"}]},
        {"Name": "fc", "LayerType": "Gemm", "Outputs": [{"Name": "c", "DataType": "Float", "Format": "kLINEAR"}]},
    ],
}


def test_layer_precisions_and_silent_fp32_fallback() -> None:
    assert layer_precisions(json.dumps(TRT10_FP16)) == {"fp16": 1, "fp32": 1}
    check_built_precision(layer_precisions(json.dumps(TRT10_FP16)), "fp16", "m.engine")
    check_built_precision(layer_precisions(json.dumps(TRT11_INT8)), "int8", "m.engine")
    counts = layer_precisions(json.dumps(TRT11_FP32_ONLY))
    assert counts == {"fp32": 2}
    with pytest.raises(UserError, match="fp16 was requested but no layer runs in fp16"):
        check_built_precision(counts, "fp16", "m.engine")
    check_built_precision(counts, "fp32", "m.engine")
    with pytest.raises(UserError, match="DETAILED"):
        layer_precisions(json.dumps({"Layers": ["conv1", "fc"]}))


def test_a_tensorrt_sidecar_records_its_verification(tmp_path: Path) -> None:
    from export.tensorrt import record_verification
    from runtime.engines.trt_checks import read_sidecar

    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"plan")
    meta = {"architecture": "resnet18", "class_names": ["a", "b"], "input_size": [3, 64, 64],
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "export": {"precision": "fp16"}}  # fmt: skip
    Path(f"{engine}.json").write_text(json.dumps(meta))
    record_verification(engine, {"passed": False, "gate": "micro-F1 >= 99% of FP32 (0.7000)"})
    export = read_sidecar(engine).export
    assert export["precision"] == "fp16" and export["verification"]["passed"] is False  # predict warns on it
