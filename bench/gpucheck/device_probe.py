"""``python -m bench.gpucheck.device_probe``: what this machine's GPU stack is, and whether its kernels run.

Prints one JSON line: torch / CUDA / cuDNN / NCCL versions, the GPU (name, compute capability, memory), the
result of a 1024 x 1024 matrix product in float16 and bfloat16 on the GPU against float32 on the CPU (largest
relative error), ONNX Runtime's execution providers and whether TensorRT is importable. Exit 1 without CUDA.
:func:`check_env` is the kit's side: it runs this program and judges its answer.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.gpucheck.checks import Kit
    from bench.gpucheck.summary import CheckResult

#: largest relative error of the GPU's matrix product per dtype (float32 without TF32; 8 / 11 mantissa bits)
MATMUL_LIMITS = {"float32": 1e-3, "float16": 1e-2, "bfloat16": 5e-2}


def gpu_matmul_errors() -> dict[str, float]:
    """Max |GPU result - CPU float32 result| / max |CPU result| of ``a @ b`` (1024 x 1024, seeded) per dtype."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(1024, 1024, generator=gen), torch.randn(1024, 1024, generator=gen)
    ref = a @ b
    errors = {}
    for name in ("float32", "float16", "bfloat16"):
        dtype = getattr(torch, name)
        got = (a.cuda().to(dtype) @ b.cuda().to(dtype)).float().cpu()
        errors[name] = float((got - ref).abs().max() / ref.abs().max())
    return errors


def probe() -> dict[str, Any]:
    """The facts listed in the module docstring (CUDA parts only when torch sees a GPU)."""
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime"] = "not installed"
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["tensorrt"] = "not installed"
    if not info["cuda_available"]:
        return info
    p = torch.cuda.get_device_properties(0)
    info.update(
        gpu=p.name,
        capability=f"{p.major}.{p.minor}",
        memory_mib=round(p.total_memory / 2**20),
        devices=torch.cuda.device_count(),
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
        bf16_supported=torch.cuda.is_bf16_supported(),
    )
    try:
        version = torch.cuda.nccl.version()  # a tuple in current torch, an int in old releases
        info["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    except Exception as exc:  # a build without NCCL
        info["nccl"] = f"unavailable ({type(exc).__name__})"
    info["matmul_rel_error"] = gpu_matmul_errors()
    return info


def check_env(kit: Kit) -> CheckResult:
    """Run this program on ``kit.device``'s machine; its facts go to ``kit.facts``. Passed when torch sees the GPU
    and its matrix products agree with the CPU's within :data:`MATMUL_LIMITS`."""
    from bench.gpucheck.summary import failed, passed

    done = kit.runner.run(kit.runner.python("-m", "bench.gpucheck.device_probe"), timeout=90)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return failed("env", f"python -m bench.gpucheck.device_probe failed: {done.error_line()}")
    f = json.loads(lines[-1])
    kit.facts.update(f)
    if not f.get("cuda_available"):
        return failed("env", f"torch {f.get('torch')} sees no GPU in a subprocess")
    errors = f["matmul_rel_error"]
    ok = all(errors[k] < v for k, v in MATMUL_LIMITS.items())
    seen = (
        f"{f['gpu']} (sm {f['capability']}, {f['memory_mib']} MiB) x {f['devices']}, torch {f['torch']}, CUDA "
        f"{f['cuda']}, cuDNN {f['cudnn']}, NCCL {f['nccl']}; matmul relative error "
        + ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
    )
    return (passed if ok else failed)("env", seen, **f)


def main() -> int:
    """Print :func:`probe` as one JSON line; 1 when no GPU is visible."""
    info = probe()
    print(json.dumps(info))
    return 0 if info["cuda_available"] else 1


if __name__ == "__main__":
    sys.exit(main())
