"""The transformer path: a tiny ViT trained for one epoch, exported to FP32 and INT8 ONNX and verified; the INT8
graph keeps LayerNormalization, Softmax, GELU/Erf and the attention (activation x activation) MatMuls in float."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from conftest import ROOT

from export.cli import main as export_main
from export.quantize import INT8_FLOAT_OPS
from runtime.errors import run_cli
from runtime.metadata import ONNX_META_KEY
from train.cli import main as train_main


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def test_tiny_vit_exports_to_int8_with_transformer_ops_in_float(elpv_small: Path, tmp_path: Path) -> None:
    config = tmp_path / "tinyvit.yaml"
    config.write_text(
        "architecture: test_vit\nimg_size: 64\ncrop_pct: 1.0\nepochs: 1\nbatch_size: 8\nworkers: 0\namp: false\n"
        f"data: {elpv_small}\nartifacts: {tmp_path / 'artifacts'}\nruns: {tmp_path / 'runs'}\n"
    )
    assert run_cli(train_main, ["--model", str(config)]) == 0
    args = ["--model", "tinyvit", "--data", str(elpv_small), "--config", str(ROOT / "configs/export.yaml")]
    sets = [f"artifacts={tmp_path / 'artifacts'}", "verify_images=36", "calibration_images=20", "min_f1_ratio=0.5"]
    assert run_cli(export_main, [*args, "--targets", "onnx,onnx-int8", *[x for s in sets for x in ("--set", s)]]) == 0

    model_dir = tmp_path / "artifacts" / "tinyvit"
    record = json.loads((model_dir / "verify.json").read_text())
    assert record["model.onnx"]["passed"] and record["model.int8.onnx"]["passed"]
    graph = onnx.load(str(model_dir / "model.int8.onnx")).graph
    made_by = _producers(graph)

    def dequantized(name: str) -> bool:
        return name in made_by and made_by[name].op_type == "DequantizeLinear"

    ops = {n.op_type for n in graph.node}
    assert {"LayerNormalization", "Softmax", "QuantizeLinear"} <= ops
    for node in graph.node:
        if node.op_type in INT8_FLOAT_OPS:
            assert not any(dequantized(x) for x in node.input), f"{node.op_type} {node.name} reads INT8 data"
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    weight_matmuls = [n for n in matmuls if dequantized(n.input[1]) and made_by[n.input[1]].input[0] in
                      {i.name for i in graph.initializer}]  # fmt: skip
    act_matmuls = [n for n in matmuls if n not in weight_matmuls]
    assert weight_matmuls, "no weight MatMul was quantized"
    assert act_matmuls and all(not dequantized(x) for n in act_matmuls for x in n.input)  # q@k^T, attn@v in float
    meta = json.loads(
        {p.key: p.value for p in onnx.load(str(model_dir / "model.int8.onnx")).metadata_props}[ONNX_META_KEY]
    )
    quant = meta["export"]["quantization"]
    assert quant["float_activation_matmuls"] == len(act_matmuls) and 20 % quant["calibration_stride"] == 0
