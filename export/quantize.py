"""Reduced-precision ONNX: static INT8 (QDQ) with ONNX Runtime's quantizer, and FP16 with float32 I/O.

INT8 follows ONNX Runtime's recipe: ``quant_pre_process`` (shape inference + graph optimisation), then
``quantize_static`` in QDQ format with per-channel weights, calibrated on real training images preprocessed by
the runtime's own eval transform. On x86 the types decide the speed: unsigned activations with signed weights
(U8S8) use the VNNI kernels, while the library default S8S8 gave no gain over FP32 in the field notes' run;
TensorRT needs symmetric signed activations (S8S8), so the TensorRT target asks for those.

FP16 uses ``onnxruntime.transformers.float16.convert_float_to_float16`` (the onnxconverter-common algorithm
bundled with ONNX Runtime) with ``keep_io_types=True`` and LayerNormalization / Softmax (and their reductions)
kept in FP32, where FP16 overflows in ViT/Swin (TensorRT#2709, #4355).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from runtime.errors import UserError
from runtime.metadata import ModelMeta
from runtime.pipeline import iter_batches

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
QUANT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
#: ops kept in FP32 by :func:`convert_fp16` besides ONNX Runtime's default block list
FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf")


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds preprocessed real images to ONNX Runtime's calibrator, ``batch_size`` at a time.

    Args:
        paths: image files (e.g. the first N training images).
        meta: artifact metadata: the eval transform's size, mean/std, interpolation and crop.
        input_name: the graph input (``"input"``).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], meta: ModelMeta, input_name: str, batch_size: int = 16):
        self.paths, self.meta, self.input_name, self.batch_size = list(paths), meta, input_name, batch_size
        self._batches: Iterator[np.ndarray] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next ``{input_name: float32 (n, 3, H, W)}`` or ``None`` when the images are exhausted."""
        if self._batches is None:
            self._batches = iter_batches(self.paths, self.meta, self.batch_size)
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        """Start again from the first image."""
        self._batches = None


def quantize_int8(
    fp32_onnx: str | os.PathLike,
    out: str | os.PathLike,
    calibration_paths: Sequence[str | os.PathLike],
    meta: ModelMeta,
    method: str = "minmax",
    activation_type: str = "uint8",
    weight_type: str = "int8",
    per_channel: bool = True,
    symmetric_activations: bool = False,
) -> dict[str, object]:
    """Write a static-INT8 QDQ model of ``fp32_onnx`` to ``out``; returns the settings used (for metadata).

    Raises:
        UserError: unknown method or type, or no calibration images.
    """
    if method not in CALIBRATION_METHODS:
        raise UserError(f"unknown calibration method {method!r} (choose from {', '.join(CALIBRATION_METHODS)})")
    for name, value in (("activation_type", activation_type), ("weight_type", weight_type)):
        if value not in QUANT_TYPES:
            raise UserError(f"{name} must be one of {', '.join(QUANT_TYPES)}, got {value!r}")
    if not calibration_paths:
        raise UserError("INT8 calibration needs at least one image")
    with tempfile.TemporaryDirectory(prefix="quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=False)
        quantize_static(
            str(prepared),
            str(out),
            ImageCalibrationReader(calibration_paths, meta, "input"),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QUANT_TYPES[activation_type],
            weight_type=QUANT_TYPES[weight_type],
            calibrate_method=CALIBRATION_METHODS[method],
            extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True},
        )
    return {
        "calibration_method": method,
        "calibration_images": len(calibration_paths),
        "activation_type": activation_type,
        "weight_type": weight_type,
        "per_channel": per_channel,
        "format": "QDQ",
    }


def convert_fp16(fp32_onnx: str | os.PathLike, out: str | os.PathLike) -> dict[str, object]:
    """Write an FP16 copy of ``fp32_onnx`` to ``out`` with float32 inputs/outputs; returns the settings."""
    model = onnx.load(str(fp32_onnx))
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    onnx.save_model(half, str(out))
    return {"keep_io_types": True, "fp32_ops": list(FP32_OPS)}
