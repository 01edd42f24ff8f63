"""Classification metrics and the one accuracy gate shared by verification (``export.verify``) and the bench.

scikit-learn is imported when a metric is computed, so ``runtime`` stays importable without it.
"""

from __future__ import annotations

import numpy as np

from runtime.errors import UserError


def f1_micro_macro(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> tuple[float, float]:
    """Micro- and macro-F1 (scikit-learn ``f1_score``) over all classes ``0..num_classes-1``.

    Args:
        targets, preds: int arrays (N,) of class indices.

    A class absent from both targets and predictions counts as F1 = 0 in the macro mean (``zero_division=0``).
    For single-label data micro-F1 equals accuracy.

    Raises:
        UserError: scikit-learn is not installed (names the pip extra).
    """
    try:
        from sklearn.metrics import f1_score
    except ImportError:
        raise UserError("F1 needs scikit-learn: pip install '.[bench]' (or '.[train]')") from None
    labels = list(range(num_classes))
    micro = f1_score(targets, preds, labels=labels, average="micro", zero_division=0)
    macro = f1_score(targets, preds, labels=labels, average="macro", zero_division=0)
    return float(micro), float(macro)


def f1_ratio(candidate: float, reference: float) -> float:
    """``candidate / reference`` micro-F1; 1.0 when the reference is 0 (nothing to lose)."""
    return candidate / reference if reference else 1.0


def passes_f1_gate(candidate: float, reference: float, min_ratio: float) -> bool:
    """The reduced-precision gate: the candidate keeps at least ``min_ratio`` of the FP32 reference micro-F1
    (MLPerf Inference's "99% of FP32 accuracy" rule, applied to micro-F1)."""
    return f1_ratio(candidate, reference) >= min_ratio


def f1_gate_text(reference: float, min_ratio: float) -> str:
    """How the gate reads in reports: ``micro-F1 >= 99% of FP32 (0.7030)``."""
    return f"micro-F1 >= {min_ratio:.0%} of FP32 ({min_ratio * reference:.4f})"
