"""OpenVINO IR (FP32) from the exported ONNX, with the artifact contract in the IR's rt_info."""

from __future__ import annotations

import os
from pathlib import Path

import openvino as ov

from runtime.engines.openvino import IR_META_PATH
from runtime.metadata import ModelMeta


def export_openvino(fp32_onnx: str | os.PathLike, out_xml: str | os.PathLike, meta: ModelMeta) -> Path:
    """Convert ``fp32_onnx`` to ``out_xml`` (+ ``.bin`` beside it), weights kept in FP32.

    ``meta`` (with ``meta.export`` filled in by the caller) is stored under rt_info ``imgcls/meta``.
    """
    model = ov.convert_model(str(fp32_onnx))
    model.set_rt_info(meta.to_json(), IR_META_PATH)
    out_xml = Path(out_xml)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out_xml), compress_to_fp16=False)
    return out_xml
