"""OpenVINO backend (CPU): reads an IR (``model.xml``) or an ONNX file and compiles it for throughput."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import openvino as ov

from runtime.engines.base import Engine
from runtime.errors import UserError, short_reason
from runtime.metadata import ONNX_META_KEY, ModelMeta

#: rt_info path of the artifact contract inside an OpenVINO IR
IR_META_PATH = ["imgcls", "meta"]


def read_meta(model: ov.Model, source: str) -> ModelMeta:
    """The artifact contract from an IR's rt_info, or from an ONNX file's metadata_props (which OpenVINO exposes
    under rt_info ``framework``).

    Raises:
        UserError: no metadata.
    """
    for path in (IR_META_PATH, ["framework", ONNX_META_KEY]):
        if model.has_rt_info(path):
            return ModelMeta.from_json(model.get_rt_info(path).astype(str), source)
    raise UserError(f"{source}: no imgcls metadata; export it with `make export`")


class OpenVINOEngine(Engine):
    """OpenVINO inference on the CPU with the THROUGHPUT performance hint.

    The THROUGHPUT hint compiles the model into several streams (each a share of the cores), one per infer
    request (``OPTIMAL_NUMBER_OF_INFER_REQUESTS``). :meth:`run_stream` keeps every request busy with a whole batch
    of its own, as ``benchmark_app -hint throughput`` does, and returns the logits in order; :meth:`run` (one batch
    on its own) splits the batch over the requests, so that a lone batch still uses every stream.

    Raises:
        UserError: a device other than CPU, or an unreadable model.
    """

    name = "openvino"

    def __init__(
        self, artifact: str | os.PathLike, device: str = "cpu", threads: int | None = None, **options: Any
    ) -> None:
        super().__init__(artifact, device, threads, **options)
        if device != "cpu":
            raise UserError(f"engine 'openvino': only the cpu device is supported here, not {device!r}")
        core = ov.Core()
        try:
            model = core.read_model(str(self.artifact))
        except RuntimeError as exc:
            raise UserError(f"{self.artifact}: cannot read model ({short_reason(exc)})") from None
        self.meta = read_meta(model, str(self.artifact))
        # FP32 artifacts run in FP32: on CPUs with bf16/AMX units OpenVINO would otherwise compute in bf16
        config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, "CPU", config)
        self.outputs = {o.get_any_name(): o for o in self.compiled.outputs}
        self.requests = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        # plain infer requests, not an AsyncInferQueue with a callback: the callback (a bound method) ties the
        # queue to the engine, and dropping that queue in close() deadlocked OpenVINO 2025 within a few engines
        self.infer_requests = [self.compiled.create_infer_request() for _ in range(self.requests)]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """See :meth:`Engine.run`."""
        return self._infer(batch, "logits")

    def run_features(self, batch: np.ndarray) -> np.ndarray:
        """See :meth:`Engine.run_features`."""
        if "features" not in self.outputs:
            raise UserError(f"{self.artifact}: no 'features' output; re-export with `make export`")
        return self._infer(batch, "features")

    @property
    def in_flight(self) -> int:
        """One batch per infer request (see :meth:`run_stream`)."""
        return len(self.infer_requests)

    def run_stream(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """See :meth:`Engine.run_stream`: each batch whole on its own infer request, up to one batch per request
        in flight; inputs are copied into the request (a caller may reuse its array)."""
        port = self.outputs["logits"]
        free, busy = list(self.infer_requests), deque()
        try:
            for batch in batches:
                if not free:
                    request = busy.popleft()
                    request.wait()
                    yield request.get_tensor(port).data.astype(np.float32, copy=True)
                    free.append(request)
                request = free.pop()
                request.start_async({0: np.ascontiguousarray(batch, np.float32)}, share_inputs=False)
                busy.append(request)
            while busy:
                request = busy.popleft()
                request.wait()
                yield request.get_tensor(port).data.astype(np.float32, copy=True)
        finally:  # a consumer that stops early: no request may still write into memory that goes away
            for request in busy:
                request.wait()

    def _infer(self, batch: np.ndarray, output: str) -> np.ndarray:
        port = self.outputs[output]
        batch = np.ascontiguousarray(batch, np.float32)
        chunks = np.array_split(batch, min(self.requests, len(batch)))
        busy = self.infer_requests[: len(chunks)]
        for request, chunk in zip(busy, chunks, strict=True):
            request.start_async({0: chunk})
        for request in busy:
            request.wait()
        return np.concatenate([r.get_tensor(port).data.copy() for r in busy]).astype(np.float32, copy=False)

    def close(self) -> None:
        """Release the infer requests and the compiled model (idempotent); the engine cannot run afterwards."""
        for attr in ("infer_requests", "compiled", "outputs"):
            self.__dict__.pop(attr, None)

    def describe(self) -> dict[str, Any]:
        """See :meth:`Engine.describe`."""
        return {
            "engine": self.name,
            "provider": f"OpenVINO {ov.get_version().split('-')[0]} CPU ({self.requests} requests)",
            "device": self.device,
            "precision": self.meta.export.get("precision", "fp32"),
            "threads": self.threads or int(self.compiled.get_property("INFERENCE_NUM_THREADS")) or None,
        }
