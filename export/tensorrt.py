"""TensorRT engine from the exported ONNX, version-aware (TensorRT 10 and 11), with a JSON sidecar.

TensorRT 11 is always strongly typed: FP16 is built from ``model.fp16.onnx`` and INT8 from a symmetric S8S8 QDQ
ONNX. TensorRT 10 builds the FP32 ONNX with BuilderFlag.FP16 / INT8 and an entropy calibrator over real
training images. Either way the layers' real precisions are read back with the engine inspector and the build
fails if the requested precision is absent (:func:`runtime.engines.trt_checks.check_built_precision`).

Not exercised on this project's CPU-only CI (no CUDA here); the logic around it is unit-tested on CPU and the
GPU tests are marked ``gpu``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.atomic import atomic_path, write_text
from runtime.engines.trt_checks import (
    build_plan,
    check_built_precision,
    layer_precisions,
    profile_shapes,
    sidecar_path,
    trt_major,
)
from runtime.errors import UserError
from runtime.metadata import ModelMeta
from runtime.pipeline import iter_batches


def require_tensorrt() -> object:
    """Import TensorRT and check a CUDA device is visible.

    Raises:
        UserError: one line saying what is missing and how to install the 'gpu' extra.
    """
    try:
        import tensorrt as trt

        from runtime.engines import cuda
    except ImportError as exc:
        raise UserError(
            f"the trt target needs TensorRT and cuda-python ({exc.name or exc} is missing) and a CUDA GPU: "
            "on a GPU box, pip install '.[train,gpu]'"
        ) from None
    count = cuda.check(cuda.cudart.cudaGetDeviceCount())
    if not count:
        raise UserError("the trt target needs a CUDA GPU; none is visible")
    return trt


def _entropy_calibrator(trt: object, paths: Sequence[Path], meta: ModelMeta, batch: int, cache: Path) -> object:
    """TensorRT 10 ``IInt8EntropyCalibrator2`` over real images preprocessed by the runtime's eval transform."""
    import numpy as np

    from runtime.engines import cuda

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[attr-defined, name-defined, misc]
        def __init__(self) -> None:
            super().__init__()
            self.batches = iter_batches(paths, meta, batch)
            self.buffer = cuda.DeviceBuffer(batch * int(np.prod(meta.input_size)) * 4)
            self.stream = cuda.create_stream()

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            data = next(self.batches, None)
            if data is None or len(data) < batch:  # TensorRT needs full batches
                return None
            self.buffer.copy_from(np.ascontiguousarray(data), self.stream)
            cuda.synchronize(self.stream)
            return [self.buffer.ptr]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: bytes) -> None:
            with atomic_path(cache) as tmp:
                tmp.write_bytes(bytes(data))

    return Calibrator()


def _parse(trt: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any, Any]:
    """(builder, network, parser) with ``onnx_path`` parsed into the network.

    Raises:
        UserError: the parser rejects the file (its first error).
    """
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = parser.get_error(0).desc() if parser.num_errors else "unknown error"
        raise UserError(f"{onnx_path}: TensorRT cannot parse the ONNX ({first})")
    return builder, network, parser


def _builder_config(trt: Any, builder: Any, plan: Any, meta: ModelMeta, batch: Sequence[int], workspace_mib: int,
                    cache_file: Path | None, calibration: tuple[Sequence[Path], Path]) -> Any:  # fmt: skip
    """Builder config: workspace limit, detailed profiling (for the layer-precision check), the batch profile,
    the plan's precision flags, the INT8 calibrator where the plan needs one (``calibration``: images and cache
    file) and the timing cache."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    shapes = profile_shapes(meta.input_size, batch)
    profile = builder.create_optimization_profile()
    profile.set_shape("input", shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.calibrator:
        paths, calib_cache = calibration
        config.int8_calibrator = _entropy_calibrator(trt, paths, meta, shapes["opt"][0], calib_cache)
        config.set_calibration_profile(profile)
    if cache_file is not None:
        cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return config


def build_engine(
    sources: dict[str, Path],
    out_engine: str | os.PathLike,
    meta: ModelMeta,
    precision: str,
    batch: Sequence[int],
    workspace_mib: int,
    timing_cache: str | os.PathLike | None,
    calibration_paths: Sequence[Path],
) -> dict[str, object]:
    """Build ``out_engine`` and its sidecar ``<out_engine>.json``; returns the sidecar's export fields.

    Args:
        sources: ONNX files by kind: ``fp32``, ``fp16``, ``int8-qdq`` (only the one the plan needs is read).
        batch: optimisation profile (min, opt, max) batch sizes.
        workspace_mib: workspace memory-pool limit, MiB.
        timing_cache: file reused and updated across builds (None: no cache).

    Raises:
        UserError: TensorRT/GPU missing, parse or build failure, or the requested precision not built.
    """
    trt = require_tensorrt()
    from runtime.engines import cuda

    plan = build_plan(trt_major(trt.__version__), precision)
    onnx_path, out_engine = sources[plan.source], Path(out_engine)
    logger = trt.Logger(trt.Logger.WARNING)
    builder, network, _parser = _parse(trt, logger, onnx_path)  # the parser owns weights the network refers to
    cache_file = Path(timing_cache) if timing_cache else None
    config = _builder_config(trt, builder, plan, meta, batch, workspace_mib, cache_file,
                             (calibration_paths, out_engine.with_suffix(".calib")))  # fmt: skip
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"{onnx_path}: TensorRT build failed (see the log above)")
    if cache_file is not None:
        with atomic_path(cache_file) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    inspector = engine.create_engine_inspector()
    counts = layer_precisions(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    check_built_precision(counts, precision, str(out_engine))
    gpu, capability = cuda.device_info(0)
    export_fields = {
        **meta.export,
        "format": "tensorrt",
        "precision": precision,
        "tensorrt": trt.__version__,
        "gpu": gpu,
        "compute_capability": capability,
        "profile_batch": list(batch),
        "workspace_mib": workspace_mib,
        "source_onnx": onnx_path.name,
        "layer_precisions": dict(counts),
    }
    sidecar = ModelMeta.from_dict({**meta.to_dict(), "export": export_fields}, str(out_engine))
    with atomic_path(out_engine, suffix=".engine") as tmp:
        tmp.write_bytes(bytes(serialized))
    write_text(sidecar_path(out_engine), json.dumps(sidecar.to_dict(), indent=2) + "\n")
    return export_fields


def record_verification(engine_path: Path, result: dict[str, Any]) -> None:
    """Store a verification result in the engine's sidecar (``export.verification``, as ONNX artifacts carry it
    in their metadata), so the runtime warns about an engine installed despite failing its gate."""
    path = sidecar_path(engine_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data.setdefault("export", {})["verification"] = result
    write_text(path, json.dumps(data, indent=2) + "\n")
