"""Native TensorRT backend: deserialises ``model.<precision>.engine`` after checking its JSON sidecar, runs
dynamic batches within the optimisation profile on a CUDA stream. Needs the 'gpu' extra (tensorrt,
cuda-python); no torch.

Not exercised on this project's CPU-only CI: the GPU tests are marked ``gpu``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorrt as trt

from runtime.engines import cuda
from runtime.engines.base import Engine
from runtime.engines.trt_checks import check_engine_compat, read_sidecar, sidecar_path
from runtime.errors import UserError


class TensorRTEngine(Engine):
    """TensorRT execution: ``set_input_shape`` per batch, ``set_tensor_address`` for every I/O tensor,
    ``execute_async_v3`` on a private CUDA stream. Batches above the profile's max are split.

    Raises:
        UserError: not a CUDA device, sidecar mismatch (other GPU or TensorRT version), or a failed
            deserialisation.
    """

    name = "trt"

    def __init__(
        self, artifact: str | os.PathLike, device: str = "cuda", threads: int | None = None, **options: Any
    ) -> None:
        if device == "cpu":
            device = "cuda"  # TensorRT only runs on the GPU; "cpu" is the CLI default
        super().__init__(artifact, device, threads, **options)
        index = int(device.split(":")[1]) if ":" in device else 0
        cuda.check(cuda.cudart.cudaSetDevice(index))
        self.meta = read_sidecar(self.artifact)
        gpu, capability = cuda.device_info(index)
        check_engine_compat(self.meta, trt.__version__, gpu, capability, str(sidecar_path(self.artifact)))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.artifact.read_bytes())
        if self.engine is None:
            raise UserError(f"{self.artifact}: TensorRT could not deserialise the engine")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.create_stream()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.max_batch = int(self.engine.get_tensor_profile_shape("input", 0)[2][0])
        self.buffers: dict[str, cuda.DeviceBuffer] = {}
        self.out_shapes: dict[str, tuple[int, ...]] = {}
        for name in self.names:
            dtype = self.engine.get_tensor_dtype(name)
            if dtype != trt.DataType.FLOAT:
                raise UserError(f"{self.artifact}: I/O tensor {name!r} is {dtype}, expected float32 I/O")
            shape = list(self.engine.get_tensor_shape(name))
            shape[0] = self.max_batch
            self.buffers[name] = cuda.DeviceBuffer(int(np.prod(shape)) * 4)
            self.context.set_tensor_address(name, self.buffers[name].ptr)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                self.out_shapes[name] = tuple(shape[1:])

    def _run_chunk(self, chunk: np.ndarray, output: str = "logits") -> np.ndarray:
        n = len(chunk)
        self.context.set_input_shape("input", chunk.shape)
        self.buffers["input"].copy_from(chunk, self.stream)
        if not self.context.execute_async_v3(self.stream):
            raise UserError(f"{self.artifact}: TensorRT execution failed")
        result = np.empty((n, *self.out_shapes[output]), np.float32)
        self.buffers[output].copy_to(result, self.stream)
        cuda.synchronize(self.stream)
        return result

    def run(self, batch: np.ndarray, output: str = "logits") -> np.ndarray:
        """See :meth:`Engine.run` (``output="features"``: see :meth:`run_features`)."""
        batch = np.ascontiguousarray(batch, np.float32)
        step = self.max_batch
        return np.concatenate([self._run_chunk(batch[i : i + step], output) for i in range(0, len(batch), step)])

    def run_features(self, batch: np.ndarray) -> np.ndarray:
        """See :meth:`Engine.run_features`."""
        if "features" not in self.out_shapes:
            raise UserError(f"{self.artifact}: no 'features' output; re-export with `make export`")
        return self.run(batch, "features")

    def describe(self) -> dict[str, Any]:
        """See :meth:`Engine.describe`."""
        return {
            "engine": self.name,
            "provider": f"TensorRT {trt.__version__}",
            "device": self.device,
            "precision": self.meta.export.get("precision"),
            "threads": None,
        }

    def close(self) -> None:
        """Free device buffers."""
        for buffer in getattr(self, "buffers", {}).values():
            buffer.free()
