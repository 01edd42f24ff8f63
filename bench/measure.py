"""Timing of an engine's forward pass on pre-decoded tensors: warm-up, then repeats for a minimum duration."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from runtime.engines.base import Engine


def engine_throughput(
    engine: Engine, batch: np.ndarray, min_seconds: float = 2.0, warmup: int = 2, min_repeats: int = 3
) -> dict[str, Any]:
    """Throughput of ``engine.run(batch)`` alone (no decoding).

    Args:
        batch: float32 (N, 3, H, W), already preprocessed.
        min_seconds: keep repeating until this much time has passed (and ``min_repeats`` runs).
        warmup: untimed runs first (allocations, kernel selection).

    Returns:
        ``img_per_s`` (N / median seconds per run), ``latency_ms_p50`` (median ms per batch), ``repeats``,
        ``cv`` (coefficient of variation of the run times).
    """
    for _ in range(warmup):
        engine.run(batch)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        engine.run(batch)
        times.append(time.perf_counter() - t0)
    arr = np.asarray(times)
    median = float(np.median(arr))
    return {
        "img_per_s": len(batch) / median,
        "latency_ms_p50": median * 1e3,
        "repeats": len(times),
        "cv": float(arr.std() / arr.mean()) if arr.mean() > 0 else 0.0,
    }
