"""Compare an exported artifact with the FP32 torch checkpoint on real, labelled images.

Both engines receive the same preprocessed batches (the runtime's eval transform). Reported: top-1
agreement, max absolute logit difference, mean/min cosine similarity of logits, and each engine's micro-F1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from runtime.engines.base import Engine
from runtime.pipeline import iter_batches


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Agreement of two logit arrays of shape (N, K).

    Returns:
        ``top1_agreement`` (fraction of rows with the same argmax), ``max_abs_diff``, ``cosine_mean`` and
        ``cosine_min`` (row-wise cosine similarity).
    """
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = np.sum(ref * cand, axis=1) / np.maximum(norms, 1e-12)
    return {
        "top1_agreement": float(np.mean(ref.argmax(1) == cand.argmax(1))),
        "max_abs_diff": float(np.max(np.abs(ref - cand))),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
    }


def run_pair(
    reference: Engine,
    candidate: Engine,
    paths: Sequence[str | os.PathLike],
    targets: Sequence[int] | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Run both engines on the same preprocessed batches of ``paths`` and compare them.

    Returns:
        :func:`compare_logits`'s keys plus ``images`` and, when ``targets`` are given, ``reference_accuracy``
        and ``candidate_accuracy`` (micro-F1 of single-label data equals accuracy).
    """
    ref_out, cand_out = [], []
    for batch in iter_batches(paths, reference.meta, batch_size):
        ref_out.append(reference.run(batch))
        cand_out.append(candidate.run(batch))
    ref, cand = np.concatenate(ref_out), np.concatenate(cand_out)
    result: dict[str, Any] = {"images": len(paths), **compare_logits(ref, cand)}
    if targets is not None:
        y = np.asarray(targets)
        result["reference_f1_micro"] = float(np.mean(ref.argmax(1) == y))
        result["candidate_f1_micro"] = float(np.mean(cand.argmax(1) == y))
    return result
