"""TensorRT logic that needs no GPU: version-aware build plans, optimisation profiles, engine/GPU compatibility
and the check that the requested precision was really built. Used by ``export.tensorrt`` (build) and
``runtime.engines.tensorrt`` (run); unit-tested on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from runtime.artifacts import PRECISIONS
from runtime.errors import UserError
from runtime.metadata import ModelMeta


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``model.fp16.engine`` -> ``model.fp16.engine.json`` (the artifact contract beside an engine)."""
    return Path(f"{engine_path}.json")


def read_sidecar(engine_path: str | os.PathLike) -> ModelMeta:
    """The artifact contract stored beside an engine.

    Raises:
        UserError: the sidecar is missing or invalid.
    """
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise UserError(f"{path}: sidecar not found; an engine is only usable with its sidecar (re-export it)")
    return ModelMeta.from_json(path.read_text(encoding="utf-8"), str(path))


def trt_major(version: str) -> int:
    """Major version of a TensorRT version string (``"11.0.1"`` -> 11).

    Raises:
        UserError: not a version string.
    """
    try:
        return int(version.split(".")[0])
    except ValueError:
        raise UserError(f"cannot read the TensorRT version {version!r}") from None


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    """How to build an engine of one precision with one TensorRT major version.

    Attributes:
        source: ONNX to parse: ``fp32`` (model.onnx), ``fp16`` (model.fp16.onnx) or ``int8-qdq`` (a symmetric
            S8S8 QDQ model).
        flags: ``trt.BuilderFlag`` names to set (TensorRT 10 only; TensorRT 11 has none: always strongly typed).
        calibrator: attach an INT8 entropy calibrator (TensorRT 10 implicit quantization).
    """

    source: str
    flags: tuple[str, ...] = ()
    calibrator: bool = False


def build_plan(major: int, precision: str) -> BuildPlan:
    """The :class:`BuildPlan` for ``precision`` on TensorRT ``major``.

    TensorRT 11 removed weak typing (BuilderFlag.FP16/INT8, int8_calibrator): FP16 must come from an FP16 ONNX
    and INT8 from Q/DQ nodes (TensorRT 10.x -> 11.x migration guide). TensorRT 10 builds the FP32 ONNX with
    precision flags and, for INT8, an entropy calibrator (with FP16 allowed for layers INT8 cannot run).

    Raises:
        UserError: unknown precision or a TensorRT older than 10.
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown TensorRT precision {precision!r} (fp32, fp16 or int8)")
    if major < 10:
        raise UserError(f"TensorRT {major}.x is not supported: install TensorRT 10 or 11 (the 'gpu' extra)")
    if major >= 11:
        return BuildPlan(source={"fp32": "fp32", "fp16": "fp16", "int8": "int8-qdq"}[precision])
    return {
        "fp32": BuildPlan("fp32"),
        "fp16": BuildPlan("fp32", ("FP16",)),
        "int8": BuildPlan("fp32", ("INT8", "FP16"), calibrator=True),
    }[precision]


def profile_shapes(input_size: Sequence[int], batch: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Optimisation-profile shapes ``{"min", "opt", "max"}`` for a (C, H, W) input and batch (min, opt, max).

    Raises:
        UserError: not three batch sizes with 1 <= min <= opt <= max.
    """
    if len(batch) != 3 or not 1 <= batch[0] <= batch[1] <= batch[2]:
        raise UserError(f"trt_batch must be [min, opt, max] with 1 <= min <= opt <= max, got {list(batch)}")
    return {name: (int(b), *map(int, input_size)) for name, b in zip(("min", "opt", "max"), batch, strict=True)}


def check_engine_compat(meta: ModelMeta, trt_version: str, gpu_name: str, compute_capability: str, source: str) -> None:
    """Refuse an engine built with another TensorRT version or for another GPU, before deserialising it
    (engines are tied to both: TensorRT#2176, #2041).

    Raises:
        UserError: naming what differs and how to rebuild.
    """
    built = meta.export
    rebuild = "rebuild it on this machine: `make export MODEL=<model> TARGETS=trt`"
    if built.get("format") != "tensorrt":
        raise UserError(f"{source}: sidecar does not describe a TensorRT engine; {rebuild}")
    if built.get("tensorrt") != trt_version:
        raise UserError(
            f"{source}: built with TensorRT {built.get('tensorrt')}, this machine has {trt_version}; {rebuild}"
        )
    if built.get("compute_capability") != compute_capability or built.get("gpu") != gpu_name:
        raise UserError(
            f"{source}: built for {built.get('gpu')} (sm {built.get('compute_capability')}), this machine has "
            f"{gpu_name} (sm {compute_capability}); {rebuild}"
        )


_TYPE_WORDS = (("int8", ("int8",)), ("fp16", ("half", "fp16")), ("fp32", ("float", "fp32")))


def _dtype(entry: dict) -> str | None:
    text = " ".join(str(entry.get(k, "")) for k in ("DataType", "Format/Datatype", "Format")).lower()
    for name, words in _TYPE_WORDS:
        if any(w in text for w in words):
            return name
    return None


def layer_precisions(inspector_json: str) -> Counter[str]:
    """Count engine layers by the precision of their outputs, from ``IEngineInspector`` JSON.

    Understands TensorRT 10's ``Format/Datatype`` and TensorRT 11's separate ``DataType`` fields. Reformat
    (copy) layers are not counted: they only convert between precisions.

    Raises:
        UserError: the engine was built without ``ProfilingVerbosity.DETAILED`` (layers are bare names).
    """
    try:
        layers = json.loads(inspector_json).get("Layers", [])
    except (json.JSONDecodeError, AttributeError):
        raise UserError("engine inspector returned no JSON layer information") from None
    if not layers or not all(isinstance(layer, dict) for layer in layers):
        raise UserError("engine inspector has no layer details: build with ProfilingVerbosity.DETAILED")
    counts: Counter[str] = Counter()
    for layer in layers:
        if "reformat" in str(layer.get("LayerType", "")).lower():
            continue
        types = {_dtype(out) for out in layer.get("Outputs", [])} - {None}
        counts.update(types)
    return counts


def check_built_precision(counts: Counter[str], requested: str, source: str) -> None:
    """Fail when ``requested`` (fp16/int8) appears in no layer: the build silently fell back to FP32
    (roboflow/rf-detr#1453; TensorRT 11 without casts or Q/DQ nodes).

    Raises:
        UserError: the requested precision was not built.
    """
    if requested != "fp32" and counts.get(requested, 0) == 0:
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
        raise UserError(
            f"{source}: {requested} was requested but no layer runs in {requested} (layers by output type: {summary})"
        )
