"""Reduced-precision ONNX: static INT8 (QDQ) with ONNX Runtime's quantizer, and FP16 with float32 I/O.

INT8 follows ONNX Runtime's recipe: ``quant_pre_process`` (shape inference + graph optimisation), then
``quantize_static`` in QDQ format with per-channel weights, calibrated on real training images preprocessed by
the runtime's own eval transform. On x86 the types decide the speed: unsigned activations with signed weights
(U8S8) use the VNNI kernels, while the library default S8S8 gave no gain over FP32 in the field notes' run;
TensorRT needs symmetric signed activations (S8S8), so the TensorRT target asks for those.

Calibration streams (``export.calibrate``): ONNX Runtime's calibrator runs ``stride`` images at a time on a
session that frees each activation after its reductions, merges them into its ranges (MinMax) or histograms
(entropy, percentile) and drops them; ``quantize_static`` then reads the ranges from ONNX Runtime's calibration
cache. Memory does not grow with the number of calibration images; ``export.budget`` chooses the stride.

Transformers stay transformers: LayerNormalization, Softmax, GELU and Erf are kept in float (they are left out of
``op_types_to_quantize``), and MatMuls whose two inputs are both activations (attention ``q @ k^T`` and
``attn @ v``) are excluded by node name and run in float. Quantizing them would put asymmetric u8 scales on both
operands, where the softmax output (in [0, 1], most mass near 0) and the keys lose most of their resolution, and
ONNX Runtime's CPU kernels have no fast u8 x u8 path for them, so the INT8 model would be less accurate and not
faster. Weight MatMuls (QKV, projections, MLP) and every Conv/Gemm are quantized as before.

FP16 uses ``onnxruntime.transformers.float16.convert_float_to_float16`` (the onnxconverter-common algorithm
bundled with ONNX Runtime) with ``keep_io_types=True`` and LayerNormalization / Softmax (and their reductions)
kept in FP32, where FP16 overflows in ViT/Swin (TensorRT#2709, #4355).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.registry import QDQRegistry
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from export.calibrate import CALIBRATION_METHODS, ImageCalibrationReader, calibrate
from runtime.errors import UserError
from runtime.metadata import ModelMeta

QUANT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
#: ops kept in FP32 by :func:`convert_fp16` besides ONNX Runtime's default block list
FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf")
#: ops the INT8 model keeps in float (besides every op ONNX Runtime's QDQ quantizer does not handle)
INT8_FLOAT_OPS = ("LayerNormalization", "Softmax", "Gelu", "Erf")
#: op types quantized to INT8
INT8_OPS = tuple(sorted(set(QDQRegistry) - set(INT8_FLOAT_OPS)))


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes of ``model`` whose two inputs are both activations (neither an initializer nor a
    Constant's output): attention ``q @ k^T`` and ``attn @ v``. Unnamed nodes are named first (in place)."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    names = []
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
        if node.op_type == "MatMul" and not any(x in constants for x in node.input):
            names.append(node.name)
    return names


def _untyped(model: onnx.ModelProto) -> list[str]:
    """Node outputs of ``model`` with no type from shape inference (the calibrator needs every type)."""
    typed = {v.name for v in [*model.graph.value_info, *model.graph.output]}
    return [o for n in model.graph.node for o in n.output if o and o not in typed]


def pre_process(src: str | os.PathLike, dst: str | os.PathLike) -> onnx.ModelProto:
    """ONNX Runtime's ``quant_pre_process`` of ``src`` into ``dst`` (graph optimisation + shape inference), and
    the result loaded. ONNX's own shape inference first; ONNX Runtime's symbolic shape inference only where that
    leaves a tensor without a type: it is the costliest step of the INT8 build (swin_base: 2.29 GiB peak with it,
    1.44 GiB without, same graph and every tensor typed either way)."""
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    model = onnx.load(str(dst))
    if _untyped(model):
        del model
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        model = onnx.load(str(dst))
    return model


def _check_int8_args(method: str, activation_type: str, weight_type: str, images: int, stride: int | None) -> None:
    if method not in CALIBRATION_METHODS:
        raise UserError(f"unknown calibration method {method!r} (choose from {', '.join(CALIBRATION_METHODS)})")
    for name, value in (("activation_type", activation_type), ("weight_type", weight_type)):
        if value not in QUANT_TYPES:
            raise UserError(f"{name} must be one of {', '.join(QUANT_TYPES)}, got {value!r}")
    if not images:
        raise UserError("INT8 calibration needs at least one image")
    if stride is not None and (stride < 1 or images % stride):
        raise UserError(f"calibration stride {stride} must divide the {images} calibration images")


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
    stride: int | None = None,
    batch_size: int = 16,
) -> dict[str, object]:
    """Write a static-INT8 QDQ model of ``fp32_onnx`` to ``out``; returns the settings used (for metadata).

    Args:
        stride: calibration images run and reduced at a time (``export.calibrate``; must divide their number);
            ``None``: all at once (histogram methods then hold every activation of every image).
        batch_size: images per calibration forward pass (at most ``stride``).

    Raises:
        UserError: unknown method or type, no calibration images, or a stride that does not divide their count.
    """
    _check_int8_args(method, activation_type, weight_type, len(calibration_paths), stride)
    stride = stride or len(calibration_paths)
    with tempfile.TemporaryDirectory(prefix="quant-") as tmp:
        prepared, cache = Path(tmp) / "prepared.onnx", Path(tmp) / "calibration.json"
        model = pre_process(fp32_onnx, prepared)
        float_matmuls = activation_matmuls(model)
        onnx.save_model(model, str(prepared))
        del model
        reader = ImageCalibrationReader(calibration_paths, meta, "input", min(batch_size, stride))
        calibrate(prepared, reader, method, INT8_OPS, stride, cache)
        quantize_static(
            str(prepared),
            str(out),
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QUANT_TYPES[activation_type],
            weight_type=QUANT_TYPES[weight_type],
            calibrate_method=CALIBRATION_METHODS[method],
            op_types_to_quantize=list(INT8_OPS),
            nodes_to_exclude=float_matmuls,
            extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True},
            calibration_cache_path=cache,
        )
    return {
        "calibration_method": method,
        "calibration_images": len(calibration_paths),
        "calibration_stride": stride,
        "activation_type": activation_type,
        "weight_type": weight_type,
        "per_channel": per_channel,
        "format": "QDQ",
        "float_ops": list(INT8_FLOAT_OPS),
        "float_activation_matmuls": len(float_matmuls),
    }


def convert_fp16(fp32_onnx: str | os.PathLike, out: str | os.PathLike) -> dict[str, object]:
    """Write an FP16 copy of ``fp32_onnx`` to ``out`` with float32 inputs/outputs; returns the settings."""
    model = onnx.load(str(fp32_onnx))
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    onnx.save_model(half, str(out))
    return {"keep_io_types": True, "fp32_ops": list(FP32_OPS)}
