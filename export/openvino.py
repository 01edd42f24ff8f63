"""OpenVINO IR from the exported ONNX (FP32; INT8 in ``export.openvino_int8``), the artifact contract in rt_info."""

from __future__ import annotations

import os
from pathlib import Path

import openvino as ov

from runtime.engines.openvino import IR_META_PATH
from runtime.metadata import ModelMeta


def save_ir(model: ov.Model, out_xml: str | os.PathLike, meta: ModelMeta) -> Path:
    """Write ``model`` to ``out_xml`` (+ ``.bin``), weights as they are (FP32 stays FP32, no FP16 compression),
    with ``meta`` (``meta.export`` filled in by the caller) under rt_info ``imgcls/meta``; returns ``out_xml``."""
    model.set_rt_info(meta.to_json(), IR_META_PATH)
    out_xml = Path(out_xml)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out_xml), compress_to_fp16=False)
    return out_xml
