"""What the bench ran on: CPU model and flags, GPU and driver, library versions, commit and date."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from runtime.cpu import BF16_UNITS, INT8_UNITS, cpu_model_and_flags, units, usable_cpus

#: CPU flags that decide which kernels the engines can use (SIMD width, INT8 dot products, bf16, AMX)
CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "sve",
)

#: distributions whose versions are reported (the first installed name of each tuple)
LIBRARIES = {
    "torch": ("torch",),
    "timm": ("timm",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "openvino": ("openvino",),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
    "numpy": ("numpy",),
}


def cpu_info() -> dict[str, Any]:
    """CPU model name, the relevant :data:`CPU_FLAGS` present, its INT8 and BF16 dot-product units
    (:mod:`runtime.cpu`; they decide the INT8/BF16 ratios), logical cores and cores this process may use."""
    name, flags = cpu_model_and_flags()
    return {
        "cpu": name,
        "cpu_flags": " ".join(f for f in CPU_FLAGS if f in flags),
        "cpu_int8_units": ", ".join(units(INT8_UNITS, flags)) or "none (no VNNI/AMX: INT8 gains little)",
        "cpu_bf16_units": ", ".join(units(BF16_UNITS, flags)) or "none",
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable_cpus(),
    }


def nvidia_smi(*query: str) -> str | None:
    """stdout of ``nvidia-smi <query> --format=csv,noheader,nounits``; ``None`` without nvidia-smi or on failure."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        return subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits"], capture_output=True,
                              text=True, timeout=20, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_info() -> str:
    """``"<name> (driver <version>, <memory> MiB)"`` per GPU from ``nvidia-smi``, or ``"none"``."""
    out = nvidia_smi("--query-gpu=name,driver_version,memory.total")
    gpus = [[f.strip() for f in line.split(",")] for line in (out or "").strip().splitlines() if line.strip()]
    return "; ".join(f"{g[0]} (driver {g[1]}, {g[2]} MiB)" for g in gpus if len(g) >= 3) or "none"


def torch_cuda_info() -> str:
    """``"CUDA <v>, cuDNN <v>: <GPU name> (sm_<major><minor>, <memory> MiB)"`` per device as torch sees it (the
    GPU even where ``nvidia-smi`` is missing), ``"none"`` without CUDA, ``"torch not installed"`` without torch."""
    try:
        import torch
    except ImportError:
        return "torch not installed"
    if not torch.cuda.is_available():
        return "none"
    devices = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        devices.append(f"{p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**20:.0f} MiB)")
    return f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}: {'; '.join(devices)}"


def library_versions() -> dict[str, str]:
    """Installed version of each of :data:`LIBRARIES` (``"not installed"`` otherwise)."""
    versions = {}
    for key, names in LIBRARIES.items():
        versions[key] = "not installed"
        for name in names:
            try:
                versions[key] = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def git_commit(cwd: str | Path = ".") -> str:
    """Short commit hash of ``cwd`` with ``-dirty`` when files are modified, or ``"unknown"``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
    """Everything above plus OS, Python and the local date and time (ISO 8601)."""
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": git_commit(),
        **cpu_info(),
        "gpu": gpu_info(),
        "torch_cuda": torch_cuda_info(),
        "os": platform.platform(),
        "python": platform.python_version(),
        **library_versions(),
    }
