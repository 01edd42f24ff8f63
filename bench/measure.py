"""Statistics of timed runs (throughput over interleaved rounds, latency percentiles) and the matmul peak."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def summarize(
    rounds: Sequence[Sequence[float]], batch_size: int, latency_rounds: Sequence[Sequence[float]] | None = None
) -> dict[str, Any]:
    """Throughput and latency from the wall seconds of each run, grouped by round.

    Each round's throughput is ``batch_size x runs / sum(run seconds)`` (images over the round's wall time, as
    ``benchmark_app`` computes FPS): with several batches in flight the results come in bursts (two requests
    finishing together give one interval near 0 and one near twice the batch time), so a median interval would
    overstate the rate many times over. The reported throughput is the median over rounds with its min and max,
    and ``cv`` is the rounds' coefficient of variation (std / mean, 0 for one round). Latencies pool every run of
    every round.

    Args:
        rounds: per round, the seconds of each forward pass of one batch (at least one run per round); for
            pipelined runs, the seconds between consecutive results.
        batch_size: images per run.
        latency_rounds: per round, each batch's seconds from submission to result, when they differ from
            ``rounds`` (several batches in flight); ``None``: the latencies are ``rounds``.

    Returns:
        ``img_per_s``, ``img_per_s_min``, ``img_per_s_max``, ``cv``, ``p50_ms``, ``p90_ms``, ``p99_ms``, ``runs``.

    Raises:
        ValueError: no rounds or an empty round.
    """
    if not rounds or any(len(r) == 0 for r in rounds):
        raise ValueError("every round needs at least one timed run")
    per_round = np.array([batch_size * len(r) / float(np.sum(r)) for r in rounds])
    pooled = np.concatenate([np.asarray(r, dtype=np.float64) for r in latency_rounds or rounds]) * 1e3
    p50, p90, p99 = np.percentile(pooled, [50, 90, 99])
    return {
        "img_per_s": float(np.median(per_round)),
        "img_per_s_min": float(per_round.min()),
        "img_per_s_max": float(per_round.max()),
        "cv": float(per_round.std() / per_round.mean()) if len(per_round) > 1 else 0.0,
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "runs": int(sum(len(r) for r in rounds)),
    }


def matmul_peak_gflops(
    seconds: float = 2.0, n: int = 1024, threads: int | None = None, timeout: float = 180.0
) -> dict[str, float] | None:
    """This machine's FP32 matrix-multiply rate in GFLOP/s, the yardstick for the fraction of peak a cell reaches.

    The best of repeated ``n x n`` float32 products (2 n^3 FLOPs each) for about ``seconds`` per library, through
    NumPy's BLAS and through ONNX Runtime's MLAS sgemm (the kernels its FP32 convolutions use; OpenBLAS may not use
    every vector unit of the CPU), on ``threads`` threads (``None``: every core), in a fresh (spawned) process so
    that no thread pool of the caller interferes. INT8 or FP16 units can exceed it.

    Returns:
        ``{"numpy": GFLOP/s, "onnxruntime": GFLOP/s, "peak": max of both}`` (a library that is missing or fails is
        left out), or ``None`` if nothing could be measured within ``timeout`` seconds.
    """
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    if threads:
        env.update({v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    try:
        proc = subprocess.run([sys.executable, "-c", _MATMUL_PEAK, str(seconds), str(n), str(threads or 0)],
                              capture_output=True, text=True, timeout=timeout, env=env)  # fmt: skip
        rates = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {}
    except (subprocess.TimeoutExpired, OSError, ValueError, IndexError):
        return None
    rates = {k: float(v) for k, v in rates.items() if v}
    return {**rates, "peak": max(rates.values())} if rates else None


_MATMUL_PEAK = """
import json, sys, time
import numpy as np
seconds, n, threads = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)

def best_rate(run):
    run()  # warm-up: threads and buffers
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        run()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best

rates = {"numpy": best_rate(lambda: a @ b)}
try:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rates["onnxruntime"] = best_rate(lambda: session.run(None, {"a": a}))
except Exception:  # a missing or failing ONNX Runtime: NumPy alone
    pass
print(json.dumps(rates))
"""
