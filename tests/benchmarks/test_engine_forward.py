"""pytest-benchmark micro-benchmarks of each CPU engine's forward pass on one real, preprocessed batch.

In ``make test`` they run once as plain tests (``--benchmark-disable`` in pyproject); ``make microbench`` times
them. The numbers are for comparing engines on one machine, not targets: targets live in ``make bench``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import CPU_CELLS

from runtime.engines import create_engine
from runtime.pipeline import iter_batches


@pytest.mark.parametrize(("engine_name", "precision"), CPU_CELLS, ids=[f"{e}-{p}" for e, p in CPU_CELLS])
def test_forward(benchmark, tiny_model: dict[str, Path], engine_name: str, precision: str) -> None:
    images = sorted((tiny_model["data"] / "test").iterdir())[:8]
    with create_engine(engine_name, tiny_model["artifacts"], precision=precision) as engine:
        batch = next(iter_batches(images, engine.meta, 8))
        logits = benchmark(engine.run, batch)
    assert logits.shape == (8, 4) and np.isfinite(logits).all()
