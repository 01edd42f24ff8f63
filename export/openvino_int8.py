"""OpenVINO's own INT8: NNCF post-training quantization of the FP32 IR on real calibration images.

``nncf.quantize`` (NNCF, https://github.com/openvinotoolkit/nncf) inserts FakeQuantize nodes that OpenVINO's CPU
plugin compiles to its INT8 kernels; this is the path OpenVINO's users run, not ONNX Runtime's QDQ file (see the
README, "OpenVINO INT8", for why OpenVINO loses accuracy on that file). The settings follow the backbone:

* CNNs: ``preset=PERFORMANCE`` (symmetric activations and weights), NNCF's default for non-transformers.
* Every model: ``OverflowFix.DISABLE`` (full 8-bit weights) when the exporting CPU has a VNNI/AMX INT8 unit
  (:func:`runtime.cpu.has_int8_dot_product`), else NNCF's default ``FIRST_LAYER`` (7-bit weights in the first
  layer, against u8 x s8 saturation on CPUs without VNNI). Measured on the demo's EfficientNet-Lite0 (256 ELPV
  validation images, FP32 accuracy 0.742): 0.695 with ``FIRST_LAYER``, 0.719 with ``DISABLE``. The choice is
  recorded; the OpenVINO engine warns when such an IR runs on a CPU without VNNI.
* Depthwise nets (an IR with ``GroupConvolution``): ``fast_bias_correction=False``, the full bias correction
  that NNCF's conformance table needs for depthwise nets (mobilenetv3_small_050: top-1 0.422 with the fast one,
  0.567 without, FP32 0.579).
* Transformers (an IR with ``Softmax``; Swin/ViT): ``model_type=TRANSFORMER`` (``preset=MIXED``: asymmetric
  activations; LayerNorm/Softmax/GELU left in float, the Softmax -> MatMul input float, activation x activation
  MatMuls symmetric) with SmoothQuant off (``AdvancedSmoothQuantParameters(matmul=-1)``): on swin_base NNCF's
  conformance table measured top-1 0.8527 FP32, 0.8357 with SmoothQuant, 0.8521 without.

When the result misses its gate, :func:`restore_accuracy` runs ``nncf.quantize_with_accuracy_control``, which
reverts the most sensitive quantized layers to float until the top-1 agreement with the FP32 IR on held-out
images (not the gate's) reaches ``accuracy_control_agreement``; :func:`quantized_layers` names the layers that
stayed in float, and the gate then judges the result as it judged the plain one. NNCF needs no torch; ``runtime``
never imports this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from runtime.cpu import has_int8_dot_product
from runtime.errors import UserError
from runtime.metadata import ModelMeta
from runtime.preprocess import preprocess_image

#: layers whose weights NNCF quantizes: a FakeQuantize on an input of one of these means it runs in INT8
QUANTIZABLE = ("Convolution", "GroupConvolution", "MatMul")


def require_nncf() -> Any:
    """The ``nncf`` module.

    Raises:
        UserError: NNCF is not installed (one line naming the pip extra).
    """
    try:
        logging.getLogger("nncf").setLevel(logging.WARNING)  # NNCF logs every step at INFO
        # NNCF imports torch's cpp_extension, which warns "No CUDA runtime is found" on every CPU machine
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        import nncf
    except ImportError:
        raise UserError("target openvino-int8 needs NNCF: pip install '.[train]' (or pip install nncf)") from None
    return nncf


def model_kind(model: ov.Model) -> str:
    """``"transformer"`` (the IR has a Softmax: attention), ``"depthwise"`` (a GroupConvolution) or ``"cnn"``."""
    ops = {op.get_type_name() for op in model.get_ops()}
    if "Softmax" in ops or "SoftMax" in ops:
        return "transformer"
    return "depthwise" if "GroupConvolution" in ops else "cnn"


def nncf_settings(kind: str, subset_size: int, int8_unit: bool | None = None) -> dict[str, Any]:
    """The ``nncf.quantize`` keyword arguments for a :func:`model_kind` (see the module docstring), JSON-safe
    names only (:func:`nncf_arguments` turns them into NNCF objects).

    Args:
        int8_unit: whether the target CPU has a VNNI/AMX INT8 unit (default: this machine's).
    """
    if int8_unit is None:
        int8_unit = has_int8_dot_product()
    settings: dict[str, Any] = {"subset_size": subset_size, "fast_bias_correction": kind != "depthwise",
                                "overflow_fix": "disable" if int8_unit else "first_layer"}  # fmt: skip
    if kind == "transformer":
        settings.update(model_type="transformer", preset="mixed", smooth_quant="off")
    else:
        settings.update(model_type=None, preset="performance")
    return settings


def nncf_arguments(nncf: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """:func:`nncf_settings` as ``nncf.quantize`` keyword arguments."""
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    advanced: dict[str, Any] = {"overflow_fix": OverflowFix(settings["overflow_fix"])}
    if settings.get("smooth_quant") == "off":
        advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(convolution=-1, matmul=-1)
    args: dict[str, Any] = {
        "subset_size": settings["subset_size"],
        "fast_bias_correction": settings["fast_bias_correction"],
        "preset": nncf.QuantizationPreset(settings["preset"]),
    }
    if settings.get("model_type") == "transformer":
        args["model_type"] = nncf.ModelType.TRANSFORMER
    args["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    return args


def image_dataset(nncf: Any, paths: Sequence[Path], meta: ModelMeta, loader: Callable | None = None) -> Any:
    """An ``nncf.Dataset`` of the images ``paths``, each decoded when NNCF reads it (float32 (1, 3, H, W), the
    exact eval transform): nothing but the paths is held, however many images there are."""
    load = loader or preprocess_image
    return nncf.Dataset(list(paths), lambda path: load(path, meta)[None])


def quantize_ir(
    model: ov.Model, paths: Sequence[Path], meta: ModelMeta, subset_size: int | None = None
) -> tuple[ov.Model, dict[str, Any]]:
    """INT8 ``model`` (an FP32 OpenVINO IR) calibrated on ``paths`` with the settings of its :func:`model_kind`.

    Args:
        paths: real training images (NNCF reads at most ``subset_size``, default all of them, one at a time).

    Returns:
        (the quantized model, the settings as recorded in the artifact: ``tool``, ``nncf`` version, ``kind``,
        the NNCF arguments, ``calibration_images`` and ``int8_layers``).

    Raises:
        UserError: NNCF missing, no calibration images, or NNCF failing (its reason in one line).
    """
    nncf = require_nncf()
    if not paths:
        raise UserError("openvino-int8: no calibration images")
    kind = model_kind(model)
    settings = nncf_settings(kind, subset_size or len(paths))
    try:
        quantized = nncf.quantize(model, image_dataset(nncf, paths, meta), **nncf_arguments(nncf, settings))
    except _nncf_errors(nncf) as exc:
        raise UserError(f"openvino-int8: nncf.quantize failed ({_first_line(exc)})") from None
    int8, total = quantized_layers(quantized)
    record = {"tool": "nncf", "nncf": nncf.__version__, "kind": kind, **settings,
              "calibration_images": min(len(paths), settings["subset_size"]),
              "int8_layers": f"{len(int8)} of {len(total)}"}  # fmt: skip
    return quantized, record


def quantized_layers(model: ov.Model) -> tuple[list[str], list[str]]:
    """(names of the :data:`QUANTIZABLE` layers that run in INT8 — a FakeQuantize feeds one of their inputs,
    directly or through a weight Convert —, names of all of them)."""
    int8, total = [], []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in QUANTIZABLE:
            continue
        total.append(op.get_friendly_name())
        if any(_fed_by_fake_quantize(op.input_value(i).get_node()) for i in range(op.get_input_size())):
            int8.append(op.get_friendly_name())
    return int8, total


def _fed_by_fake_quantize(node: Any, depth: int = 3) -> bool:
    """A FakeQuantize at most ``depth`` Convert/Reshape/Transpose hops above ``node`` (weights are stored
    compressed behind a Convert)."""
    if node.get_type_name() == "FakeQuantize":
        return True
    if depth == 0 or node.get_type_name() not in ("Convert", "Reshape", "Transpose", "Multiply", "Subtract"):
        return False
    return any(_fed_by_fake_quantize(node.input_value(i).get_node(), depth - 1) for i in range(node.get_input_size()))


def restore_accuracy(
    model: ov.Model,
    calibration: Sequence[Path],
    validation: Sequence[Path],
    meta: ModelMeta,
    settings: dict[str, Any],
    min_agreement: float,
    int8_before: Sequence[str],
) -> tuple[ov.Model, dict[str, Any]]:
    """``nncf.quantize_with_accuracy_control`` of the FP32 ``model``: the quantization of :func:`quantize_ir`
    (the same ``settings``), then the layers that cost the most are reverted to float until the INT8 model's
    top-1 agreement with the FP32 ``model`` on ``validation`` is at least ``min_agreement`` (NNCF's metric is
    that agreement, its drop ABSOLUTE ``1 - min_agreement``). Agreement needs no labels, so ``validation`` can be
    images the export gate never sees (it judges micro-F1 on its own verification images afterwards), and it
    moves with every flipped prediction where accuracy nets flips out.

    Args:
        int8_before: the INT8 layers of the plain quantization (:func:`quantized_layers`), to name the reverted.

    Returns:
        (the model, ``{"accuracy_control": {"metric", "min_agreement", "float_layers": [names reverted to float],
        "int8_layers"}}``).

    Raises:
        UserError: NNCF failing (its reason in one line).
    """
    nncf = require_nncf()
    images = np.stack([preprocess_image(p, meta) for p in validation])  # decoded once: NNCF validates many times
    fp32 = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    reference = _top1(fp32, images)
    del fp32
    # NNCF hands validate() the raw items (index, FP32 top-1) of the images it ranks, the model transformed ones
    valid = nncf.Dataset(list(enumerate(int(t) for t in reference)), lambda item: images[item[0]][None])

    def validate(compiled: ov.CompiledModel, items: Any) -> tuple[float, list[float]]:
        pairs = list(items)
        index = np.array([i for i, _ in pairs], dtype=np.int64)
        top1 = np.array([label for _, label in pairs], dtype=np.int64)
        hits = [float(h) for h in _top1(compiled, images[index]) == top1]
        return float(np.mean(hits)) if hits else 0.0, hits

    args = nncf_arguments(nncf, settings)
    advanced = args.pop("advanced_parameters", None)
    try:
        restored = nncf.quantize_with_accuracy_control(
            model, image_dataset(nncf, calibration, meta), valid, validate, max_drop=1 - min_agreement,
            drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=advanced, **args,
        )  # fmt: skip
    except _nncf_errors(nncf) as exc:
        raise UserError(f"openvino-int8: accuracy control failed ({_first_line(exc)})") from None
    after, total = quantized_layers(restored)
    kept = set(after)
    return restored, {
        "accuracy_control": {
            "metric": "top-1 agreement with the FP32 IR",
            "min_agreement": min_agreement,
            "float_layers": [name for name in int8_before if name not in kept],
            "int8_layers": f"{len(after)} of {len(total)}",
        }
    }


def _top1(compiled: ov.CompiledModel, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Top-1 class index (int64, shape (N,)) of ``images`` (float32, (N, C, H, W)), ``batch`` images at a time."""
    port = compiled.output("logits")
    chunks = [compiled(images[i : i + batch])[port].argmax(1) for i in range(0, len(images), batch)]
    return np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, np.int64)


def _nncf_errors(nncf: Any) -> tuple[type[BaseException], ...]:
    """What NNCF raises for a model or dataset it cannot handle."""
    return (RuntimeError, ValueError, TypeError, nncf.InternalError, nncf.ValidationError)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
