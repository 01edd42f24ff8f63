"""Skip reasons known before a check starts: the kit's data not prepared, the Lite0 config or weights absent, an
ONNX Runtime execution provider, TensorRT or cuda-python not installed. A skipped check is recorded with its
reason, never dropped."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.gpucheck import settings

if TYPE_CHECKING:
    from bench.gpucheck.checks import Kit


def package_facts() -> dict[str, Any]:
    """ONNX Runtime version and providers, and whether TensorRT and cuda-python import, without touching CUDA."""
    facts: dict[str, Any] = {"onnxruntime": "not installed", "onnxruntime_providers": []}
    try:
        import onnxruntime as ort

        facts.update(onnxruntime=ort.__version__, onnxruntime_providers=ort.get_available_providers())
    except ImportError:
        pass
    spec = importlib.util.find_spec
    facts["tensorrt"] = "installed" if spec("tensorrt") else "not installed"
    facts["cuda_python"] = bool(spec("cuda") and (spec("cuda.bindings") or spec("cuda.cudart")))
    return facts


def facts(kit: Kit) -> dict[str, Any]:
    """``kit.facts`` (from the ``env`` check on the GPU), completed by :func:`package_facts` where it is silent."""
    if "onnxruntime_providers" not in kit.facts or "cuda_python" not in kit.facts:
        kit.facts.update({k: v for k, v in package_facts().items() if k not in kit.facts})
    return kit.facts


def no_data(kit: Kit) -> str | None:
    """Why the kit's data cannot be used, or None."""
    if kit.manifest is None:
        return f"{kit.data}/manifest.json not found: run `make gpu-data` on the CPU machine and carry {kit.data}"
    return None


def lite0_skip(kit: Kit) -> str | None:
    """Why the Lite0 runs cannot run: no config on this branch, or no weights in the kit's data folder."""
    cfg = settings.model_config(settings.LITE0_MODEL, kit.models_dir)
    if not cfg.is_file():
        return f"{cfg} not present"
    lite0 = (kit.manifest or {}).get("lite0", {})
    return no_data(kit) or (None if lite0.get("weights") else lite0.get("reason", "no Lite0 weights in the data"))


def provider_skip(provider: str) -> Callable[[Kit], str | None]:
    """Skip reason for an ONNX Runtime execution provider missing from the installed build."""

    def reason(kit: Kit) -> str | None:
        f = facts(kit)
        if provider in f["onnxruntime_providers"]:
            return no_data(kit)
        providers = ", ".join(f["onnxruntime_providers"]) or "none"
        return (
            f"onnxruntime {f['onnxruntime']} has no {provider} (providers: {providers}; the GPU build is "
            "onnxruntime-gpu, the 'gpu' extra)"
        )

    return reason


def tensorrt_skip(kit: Kit) -> str | None:
    """Skip reason for the native TensorRT engine: TensorRT or cuda-python missing."""
    f = facts(kit)
    if f["tensorrt"] == "not installed":
        return "tensorrt is not installed (the 'gpu' extra: tensorrt, cuda-python)"
    return no_data(kit) if f["cuda_python"] else "cuda-python is not installed (the 'gpu' extra)"
