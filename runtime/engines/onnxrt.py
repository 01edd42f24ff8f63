"""ONNX Runtime backend: explicit execution providers, checked after the session is created."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort

from runtime.engines.base import Engine
from runtime.errors import UserError, short_reason
from runtime.metadata import ONNX_META_KEY, ModelMeta

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OnnxEngine(Engine):
    """ONNX Runtime session over ``model.onnx``.

    ``device`` picks the execution provider: ``cpu``, ``cuda[:N]`` (CUDA EP) or ``tensorrt[:N]`` (TensorRT EP,
    with CUDA then CPU behind it for unsupported nodes). The provider is passed explicitly and checked: a request
    that ONNX Runtime silently serves on the CPU (onnxruntime#23372) raises instead. Option ``provider_options``
    (dict) goes to the requested provider as documented by ONNX Runtime (e.g. ``{"trt_fp16_enable": True}``).
    Reads the artifact contract from ``metadata_props``.

    Raises:
        UserError: the file is not a loadable ONNX model, lacks the metadata, or the provider is unavailable.
    """

    name = "onnx"
    default_options: ClassVar[dict[str, Any]] = {"provider_options": {}}

    def __init__(
        self, artifact: str | os.PathLike, device: str = "cpu", threads: int | None = None, **options: Any
    ) -> None:
        super().__init__(artifact, device, threads, **options)
        kind = device.split(":")[0]
        if kind not in _PROVIDERS:
            raise UserError(f"engine 'onnx': unknown device {device!r} (use cpu, cuda[:N] or tensorrt[:N])")
        provider = _PROVIDERS[kind]
        if provider not in ort.get_available_providers():
            raise UserError(
                f"engine 'onnx': {provider} is not available in this onnxruntime build "
                "(for GPUs install the 'gpu' extra instead of 'cpu')"
            )
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        provider_opts: dict[str, Any] = {str(k): v for k, v in dict(self.options["provider_options"]).items()}
        if kind != "cpu" and ":" in device:
            provider_opts["device_id"] = int(device.split(":")[1])
        providers: list[Any] = [(provider, provider_opts)]
        if kind == "tensorrt":  # nodes TensorRT cannot take fall back to CUDA, then CPU, by ONNX Runtime's design
            providers += [("CUDAExecutionProvider", {"device_id": provider_opts.get("device_id", 0)})]
        try:
            self.session = ort.InferenceSession(str(self.artifact), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises several untyped errors for bad files
            raise UserError(f"{self.artifact}: cannot load ONNX model ({short_reason(exc)})") from None
        active = self.session.get_providers()
        if not active or active[0] != provider:
            raise UserError(f"engine 'onnx': asked for {provider} but ONNX Runtime runs {active}")
        props = self.session.get_modelmeta().custom_metadata_map
        if ONNX_META_KEY not in props:
            raise UserError(f"{self.artifact}: no {ONNX_META_KEY!r} metadata; export it with `make export`")
        self.meta = ModelMeta.from_json(props[ONNX_META_KEY], str(self.artifact))
        self.input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "logits" if "logits" in outputs else outputs[0]
        self.provider = active[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """See :meth:`Engine.run`."""
        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return np.asarray(out[0], dtype=np.float32)

    def run_features(self, batch: np.ndarray) -> np.ndarray:
        """See :meth:`Engine.run_features` (the ``features`` output of the exported graph)."""
        if "features" not in [o.name for o in self.session.get_outputs()]:
            raise UserError(f"{self.artifact}: no 'features' output; re-export with `make export`")
        out = self.session.run(["features"], {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return np.asarray(out[0], dtype=np.float32)

    def close(self) -> None:
        """Release the ONNX Runtime session (idempotent); the engine cannot run afterwards."""
        self.__dict__.pop("session", None)

    def describe(self) -> dict[str, Any]:
        """See :meth:`Engine.describe`."""
        return {
            "engine": self.name,
            "provider": self.provider,
            "device": self.device,
            "precision": self.meta.export.get("precision", "fp32"),
            "threads": self.threads or physical_cores(),
        }


def physical_cores() -> int:
    """Physical cores this process may run on (Linux sysfs topology; else ``os.cpu_count()``): the intra-op thread
    count ONNX Runtime picks when none is set (ONNX Runtime docs, "Thread management")."""
    try:
        cpus = os.sched_getaffinity(0)
        topology = [Path(f"/sys/devices/system/cpu/cpu{c}/topology") for c in cpus]
        cores = {((t / "physical_package_id").read_text(), (t / "core_id").read_text()) for t in topology}
        return len(cores) or len(cpus)
    except (OSError, AttributeError):
        return os.cpu_count() or 1
