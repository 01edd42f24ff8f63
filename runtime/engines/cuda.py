"""Minimal CUDA runtime helpers over cuda-python (``cuda.bindings.runtime``), so TensorRT runs without torch."""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # cuda-python >= 12.6
    from cuda.bindings import runtime as cudart
except ImportError:  # older cuda-python layout
    from cuda import cudart  # type: ignore[no-redef]

from runtime.errors import UserError


def check(result: tuple[Any, ...]) -> Any:
    """Unpack a cuda-python ``(error, *values)`` tuple.

    Raises:
        UserError: the call failed (no GPU, driver mismatch, out of memory), naming the CUDA error.
    """
    err, *values = result
    if int(err) != 0:
        raise UserError(f"CUDA error {err}: is a GPU present and the driver current?")
    return values[0] if len(values) == 1 else tuple(values) if values else None


def device_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability ``"major.minor"``) of ``device``."""
    prop = check(cudart.cudaGetDeviceProperties(device))
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return name.rstrip("\x00").strip(), f"{prop.major}.{prop.minor}"


class DeviceBuffer:
    """``nbytes`` of device memory, freed on :meth:`free`."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = int(check(cudart.cudaMalloc(self.nbytes)))

    def copy_from(self, host: np.ndarray, stream: Any) -> None:
        """Asynchronous host -> device copy of a C-contiguous array (at most ``nbytes``)."""
        assert host.flags.c_contiguous and host.nbytes <= self.nbytes
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(cudart.cudaMemcpyAsync(self.ptr, host.ctypes.data, host.nbytes, kind, stream))

    def copy_to(self, host: np.ndarray, stream: Any) -> None:
        """Asynchronous device -> host copy into a C-contiguous array."""
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(cudart.cudaMemcpyAsync(host.ctypes.data, self.ptr, host.nbytes, kind, stream))

    def free(self) -> None:
        """Release the memory (idempotent)."""
        if self.ptr:
            check(cudart.cudaFree(self.ptr))
            self.ptr = 0


def create_stream() -> Any:
    """A new CUDA stream."""
    return check(cudart.cudaStreamCreate())


def synchronize(stream: Any) -> None:
    """Wait for all work on ``stream``."""
    check(cudart.cudaStreamSynchronize(stream))
