"""Logit comparison used by export verification."""

from __future__ import annotations

import numpy as np
import pytest

from export.verify import compare_logits


def test_compare_logits_identical_and_perturbed() -> None:
    ref = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 0.5], [0.1, 0.2, 0.3]], dtype=np.float32)
    same = compare_logits(ref, ref.copy())
    assert same["top1_agreement"] == 1.0 and same["max_abs_diff"] == 0.0
    assert same["cosine_min"] == pytest.approx(1.0)
    flipped = ref.copy()
    flipped[0] = [0.0, 1.0, 2.0]  # argmax moves from 0 to 2
    out = compare_logits(ref, flipped)
    assert out["top1_agreement"] == 0.75
    assert out["max_abs_diff"] == pytest.approx(2.0)
    assert out["cosine_min"] < 0.5
    with pytest.raises(ValueError):
        compare_logits(ref, ref[:2])
