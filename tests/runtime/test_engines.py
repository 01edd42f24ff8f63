"""Engine lifecycle: ``close()`` releases what a backend holds."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from runtime.engines import create_engine


@pytest.mark.parametrize(("engine", "attribute"), [("onnx", "session"), ("openvino", "compiled")])
def test_close_releases_the_backend(tiny_model: dict[str, Path], engine: str, attribute: str) -> None:
    """After ``close()`` the backend object (ONNX Runtime session, OpenVINO compiled model) is freed, although
    the engine object itself is still referenced (as a caller holding it would)."""
    with create_engine(engine, tiny_model["artifacts"]) as opened:
        held = weakref.ref(getattr(opened, attribute))
        assert held() is not None
    gc.collect()
    assert opened is not None
    assert held() is None, f"{engine} engine kept its {attribute} after close()"


def test_openvino_keeps_the_batch_order_over_its_infer_requests(tiny_model: dict[str, Path]) -> None:
    """A batch split over several infer requests comes back in input order: row i equals image i run alone."""
    import numpy as np

    from runtime.pipeline import iter_batches

    paths = sorted((tiny_model["data"] / "train").iterdir())[:7]
    with create_engine("openvino", tiny_model["artifacts"]) as engine:
        assert engine.requests >= 2, "the CPU plugin should keep several requests in flight"
        batch = next(iter_batches(paths, engine.meta, len(paths)))
        together = engine.run(batch)
        alone = np.concatenate([engine.run(batch[i : i + 1]) for i in range(len(paths))])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-4)
    assert len({tuple(row.round(4)) for row in together}) > 1, "distinct images should give distinct logits"


def test_openvino_stream_keeps_batches_in_order_over_its_infer_requests(tiny_model: dict[str, Path]) -> None:
    """``run_stream`` keeps one whole batch per infer request in flight; the logits still come back batch by batch
    in input order, each equal to ``run`` of that batch alone, whatever the batch sizes."""
    import numpy as np

    from runtime.pipeline import iter_batches

    paths = sorted((tiny_model["data"] / "train").iterdir())[:13]
    with create_engine("openvino", tiny_model["artifacts"]) as engine:
        assert engine.requests >= 2, "the CPU plugin should keep several requests in flight"
        batches = [b.copy() for b in iter_batches(paths, engine.meta, 3)]  # sizes 3, 3, 3, 3, 1
        streamed = list(engine.run_stream(iter(batches)))
        alone = [engine.run(b) for b in batches]
    assert [len(s) for s in streamed] == [len(b) for b in batches]
    for got, want in zip(streamed, alone, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert len({tuple(s[0].round(4)) for s in streamed}) > 1, "distinct batches should give distinct logits"
