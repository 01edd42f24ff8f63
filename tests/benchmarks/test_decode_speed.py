"""pytest-benchmark micro-benchmarks of the exact and fast decode paths per input kind (issue 19's table):
ELPV 300x300 greyscale PNG -> 128 px and generated 500x375 / 800x600 / 1600x1200 RGB JPEGs -> 224 px, one image
file -> float32 (3, H, W) on one thread.

In ``make test`` they run once as plain tests (``--benchmark-disable``); ``make microbench`` times them
(``python -m bench.decode`` prints the same comparison as a table, exact and fast interleaved).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.decode import JPEG_KINDS, eval_meta, write_jpegs
from runtime.decode import DECODE_MODES, loader_for

KINDS = ["elpv-png", *(f"jpeg-{w}x{h}" for w, h in JPEG_KINDS)]


@pytest.fixture(scope="module")
def inputs(elpv_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    """kind -> (one image file, the metadata of its model input)."""
    folder = tmp_path_factory.mktemp("decode")
    found = {"elpv-png": (sorted((elpv_small / "train").glob("*.png"))[0], eval_meta(128, 1.0))}
    for (w, h), side in JPEG_KINDS.items():
        found[f"jpeg-{w}x{h}"] = (write_jpegs(folder, w, h, 1)[0], eval_meta(side, 0.875))
    return found


@pytest.mark.parametrize("mode", DECODE_MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_decode(benchmark, inputs: dict, kind: str, mode: str) -> None:
    path, meta = inputs[kind]
    array = benchmark(loader_for(mode), path, meta)
    assert array.dtype == np.float32 and array.shape == meta.input_size
