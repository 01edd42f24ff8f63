"""Streaming batches: decode and preprocess in a thread pool, overlapped with inference, in input order.

A bounded window of ``prefetch`` batches is decoded ahead of the one the engine is running, so memory does not
grow with the number of inputs. PIL decoding/resizing and NumPy release the GIL for most of their work, so
threads overlap with the engine (which runs its own native threads).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from runtime.errors import UserError
from runtime.metadata import ModelMeta
from runtime.preprocess import preprocess_image

#: an input item: an image path, or a :class:`UserError` saying why there is none (e.g. an id leaving the folder)
Item = Path | str | os.PathLike | UserError


@dataclasses.dataclass
class Batch:
    """One decoded batch.

    Attributes:
        start: position of its first item in the input sequence.
        count: number of items it covers (decoded + failed).
        ok: positions (absolute) of the decoded items, in order.
        array: float32 (len(ok), 3, H, W), or ``None`` when every item failed.
        errors: (position, reason) of the items that could not be read.
    """

    start: int
    count: int
    ok: list[int]
    array: np.ndarray | None
    errors: list[tuple[int, str]]


def _load(item: Item, meta: ModelMeta, loader: Callable[..., np.ndarray]) -> np.ndarray:
    if isinstance(item, UserError):
        raise item
    return loader(item, meta)


def stream_batches(
    items: Sequence[Item],
    meta: ModelMeta,
    batch_size: int,
    workers: int = 2,
    prefetch: int = 2,
    skip_errors: bool = False,
    offset: int = 0,
    loader: Callable[..., np.ndarray] = preprocess_image,
) -> Iterator[Batch]:
    """Yield :class:`Batch` es of ``items`` in order (positions start at ``offset``).

    Args:
        skip_errors: record unreadable items in ``Batch.errors`` and go on; otherwise raise on the first one.
        loader: ``(path, meta) -> array`` for one item (default: the eval transform, (3, H, W)).

    Raises:
        runtime.errors.UserError: an unreadable item when ``skip_errors`` is false.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    with cf.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: collections.deque[tuple[int, list[cf.Future[np.ndarray]]]] = collections.deque()
        starts = iter(range(0, len(items), batch_size))

        def submit_next() -> None:
            start = next(starts, None)
            if start is not None:
                chunk = items[start : start + batch_size]
                pending.append((start, [pool.submit(_load, item, meta, loader) for item in chunk]))

        for _ in range(prefetch + 1):
            submit_next()
        try:
            while pending:
                start, futures = pending.popleft()
                submit_next()
                ok, arrays, errors = [], [], []
                for i, future in enumerate(futures):
                    try:
                        arrays.append(future.result())
                        ok.append(offset + start + i)
                    except UserError as exc:
                        if not skip_errors:
                            raise
                        errors.append((offset + start + i, str(exc)))
                array = np.stack(arrays) if arrays else None
                yield Batch(offset + start, len(futures), ok, array, errors)
        finally:
            for _, futures in pending:
                for f in futures:
                    f.cancel()


def iter_batches(
    paths: Sequence[str | os.PathLike],
    meta: ModelMeta,
    batch_size: int,
    workers: int = 2,
    loader: Callable[..., np.ndarray] = preprocess_image,
) -> Iterator[np.ndarray]:
    """Preprocessed arrays (float32, (n, 3, H, W), n <= batch_size) of ``paths`` in order (``loader``: the
    per-image transform, default the exact one; ``runtime.decode.loader_for`` gives the fast one).

    Raises:
        runtime.preprocess.ImageError: an image cannot be read (the first bad one).
    """
    for batch in stream_batches(paths, meta, batch_size, workers, loader=loader):
        assert batch.array is not None
        yield batch.array


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float logits (N, K) -> probabilities (N, K), float32."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
