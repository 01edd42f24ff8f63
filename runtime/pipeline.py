"""Batched prediction: decode and preprocess images in a thread pool, ahead of the engine, in input order."""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from runtime.engines.base import Engine
from runtime.metadata import ModelMeta
from runtime.preprocess import preprocess_image


def iter_batches(
    paths: Sequence[str | os.PathLike],
    meta: ModelMeta,
    batch_size: int,
    workers: int = 2,
    prefetch: int = 2,
) -> Iterator[np.ndarray]:
    """Yield preprocessed batches (float32, (n, 3, H, W), n <= batch_size) of ``paths`` in order.

    At most ``prefetch`` batches beyond the one being consumed are decoded ahead, so memory does not grow with
    the number of paths.

    Raises:
        runtime.preprocess.ImageError: an image cannot be read (the first bad one, in input order).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    with cf.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: collections.deque[list[cf.Future[np.ndarray]]] = collections.deque()
        starts = iter(range(0, len(paths), batch_size))

        def submit_next() -> None:
            start = next(starts, None)
            if start is not None:
                chunk = paths[start : start + batch_size]
                pending.append([pool.submit(preprocess_image, p, meta) for p in chunk])

        for _ in range(prefetch + 1):
            submit_next()
        try:
            while pending:
                futures = pending.popleft()
                submit_next()
                yield np.stack([f.result() for f in futures])
        finally:
            for futures in pending:
                for f in futures:
                    f.cancel()


def predict_logits(
    engine: Engine,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 32,
    workers: int = 2,
    progress: bool = True,
    desc: str = "predict",
) -> np.ndarray:
    """Logits for every path, in order: float32 (len(paths), num_classes).

    Raises:
        runtime.preprocess.ImageError: an image cannot be read.
    """
    out = np.empty((len(paths), engine.meta.num_classes), dtype=np.float32)
    done = 0
    with tqdm(total=len(paths), desc=desc, unit="img", disable=None if progress else True, leave=False) as bar:
        for batch in iter_batches(paths, engine.meta, batch_size, workers):
            out[done : done + len(batch)] = engine.run(batch)
            done += len(batch)
            bar.update(len(batch))
    return out


def write_submission(path: str | os.PathLike, ids: Sequence[str], labels: Sequence[str]) -> Path:
    """Write ``image_id,label`` rows atomically (never half-written); returns the path."""
    import pandas as pd

    from runtime.atomic import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".csv") as tmp:
        pd.DataFrame({"image_id": list(ids), "label": list(labels)}).to_csv(tmp, index=False)
    return path
