"""OpenVINO's own yardstick: ``benchmark_app`` (installed with the ``openvino`` wheel) on the IR a bench cell runs.

The bench times its OpenVINO cells through the engine (``runtime.engines.openvino``); this module times the same
IR with ``benchmark_app`` at the same batch, performance hint and inference precision, so the report shows the
fraction of OpenVINO's own throughput the engine reaches (``vs_benchmark_app``). ``benchmark_app`` feeds random
input of the model's shape; throughput is independent of the pixel values.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: the line ``benchmark_app`` prints its result on, e.g. ``[ INFO ] Throughput:   2825.14 FPS``
_THROUGHPUT = re.compile(r"Throughput:\s*([0-9.]+)\s*FPS")


def benchmark_app_path() -> str | None:
    """The ``benchmark_app`` executable beside this Python (a virtual environment's ``bin/``) or on ``PATH``."""
    local = Path(sys.executable).with_name("benchmark_app")
    return str(local) if local.is_file() else shutil.which("benchmark_app")


def benchmark_app_command(
    xml: str | os.PathLike, batch_size: int, input_size: tuple[int, int], seconds: float, threads: int | None = None
) -> list[str]:
    """The ``benchmark_app`` command the engine is compared with: CPU, ``-hint throughput`` (the engine's
    ``PERFORMANCE_HINT``), ``-infer_precision f32`` (its ``INFERENCE_PRECISION_HINT``), input ``[batch, 3, H, W]``
    for ``seconds``, ``-nthreads`` when the bench pins threads."""
    h, w = input_size
    cmd = [benchmark_app_path() or "benchmark_app", "-m", str(xml), "-d", "CPU", "-hint", "throughput",
           "-infer_precision", "f32", "-shape", f"input[{batch_size},3,{h},{w}]",
           "-t", str(max(1, round(seconds)))]  # fmt: skip
    return cmd + (["-nthreads", str(threads)] if threads else [])


def parse_throughput(output: str) -> float | None:
    """Images per second from ``benchmark_app``'s output (its FPS counts images: batch x iterations / s), or
    ``None`` when the line is missing."""
    match = _THROUGHPUT.search(output)
    return float(match.group(1)) if match else None


def benchmark_app_rate(
    xml: str | os.PathLike, batch_size: int, input_size: tuple[int, int], seconds: float, threads: int | None = None
) -> tuple[float | None, str]:
    """(``benchmark_app``'s throughput in img/s on ``xml``, ``""``) or (``None``, one-line reason: not installed,
    failed, timed out or printed no throughput)."""
    if benchmark_app_path() is None:
        return None, "benchmark_app not found (it comes with pip install openvino)"
    cmd = benchmark_app_command(xml, batch_size, input_size, seconds, threads)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 180)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"benchmark_app did not finish ({type(exc).__name__})"
    rate = parse_throughput(proc.stdout)
    if rate is None:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "ERROR" in ln or "rror" in ln]
        return None, f"benchmark_app exited {proc.returncode}: {(lines or ['no throughput line'])[-1].strip()[:160]}"
    return rate, ""
