"""Statistics of timed runs (throughput over interleaved rounds, latency percentiles) and the matmul peak."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def summarize(rounds: Sequence[Sequence[float]], batch_size: int) -> dict[str, Any]:
    """Throughput and latency from the wall seconds of each run, grouped by round.

    Each round's throughput is ``batch_size / median(run seconds)``; the reported throughput is the median over
    rounds with its min and max, and ``cv`` is the rounds' coefficient of variation (std / mean, 0 for one
    round). Latencies pool every run of every round.

    Args:
        rounds: per round, the seconds of each forward pass of one batch (at least one run per round).
        batch_size: images per run.

    Returns:
        ``img_per_s``, ``img_per_s_min``, ``img_per_s_max``, ``cv``, ``p50_ms``, ``p90_ms``, ``p99_ms``, ``runs``.

    Raises:
        ValueError: no rounds or an empty round.
    """
    if not rounds or any(len(r) == 0 for r in rounds):
        raise ValueError("every round needs at least one timed run")
    per_round = np.array([batch_size / float(np.median(r)) for r in rounds])
    pooled = np.concatenate([np.asarray(r, dtype=np.float64) for r in rounds]) * 1e3
    p50, p90, p99 = np.percentile(pooled, [50, 90, 99])
    return {
        "img_per_s": float(np.median(per_round)),
        "img_per_s_min": float(per_round.min()),
        "img_per_s_max": float(per_round.max()),
        "cv": float(per_round.std() / per_round.mean()) if len(per_round) > 1 else 0.0,
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "runs": int(pooled.size),
    }


def matmul_peak_gflops(seconds: float = 2.0, n: int = 1024, timeout: float = 120.0) -> float | None:
    """This machine's FP32 matrix-multiply rate in GFLOP/s: the best of repeated ``n x n`` float32 products
    through NumPy's BLAS on every core (2 n^3 FLOPs each), for about ``seconds``, in a fresh (spawned) process so
    that no thread pool of the caller interferes. It is the yardstick for the fraction of peak a cell achieves;
    INT8 or FP16 units can exceed it. ``None`` if the measurement failed or took longer than ``timeout``."""
    import subprocess
    import sys

    try:
        proc = subprocess.run([sys.executable, "-c", _MATMUL_PEAK, str(seconds), str(n)], capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip
        return float(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (subprocess.TimeoutExpired, OSError, ValueError, IndexError):
        return None


_MATMUL_PEAK = """
import sys, time
import numpy as np
seconds, n = float(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
a @ b  # warm-up: BLAS threads and buffers
best, start = 0.0, time.perf_counter()
while time.perf_counter() - start < seconds:
    t0 = time.perf_counter()
    a @ b
    best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
print(best)
"""
