"""The one inference path: members (engines) + test-time augmentation -> probabilities, batch by batch.

``runtime.predict``, ``runtime.features`` and the bench worker all run images through a :class:`Predictor`, so an
engine option, a TTA mode or an ensemble weight means the same thing everywhere.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.cpu import usable_cpus
from runtime.decode import loader_for, resolve_mode
from runtime.engines import create_engine, describe_members
from runtime.engines.base import Engine
from runtime.errors import UserError
from runtime.members import Member
from runtime.metadata import ModelMeta
from runtime.pipeline import Batch, DecodePlan, Item, plan_workers, softmax, stream_batches
from runtime.tta import check_mode, five_crop_views, tta_probs


def preprocess_key(meta: ModelMeta) -> tuple:
    """What decides an artifact's eval transform: members with equal keys share decoded batches."""
    return (tuple(meta.input_size), tuple(meta.mean), tuple(meta.std), meta.interpolation, meta.crop_pct,
            meta.crop_mode)  # fmt: skip


class Predictor:
    """Open engines for ``members`` and turn images into weighted-mean probabilities.

    Args:
        members: the models to run (one, or several for an ensemble).
        tta: a :data:`runtime.tta.TTA_MODES` name, applied to every member.
        device, threads: passed to every engine.
        options: engine options for every member (a member's own :attr:`Member.options` override them).
        decode: ``exact``, ``fast`` or ``auto`` (:func:`runtime.decode.resolve_mode`; the mode used is
            :attr:`decode_mode`). Five-crop TTA decodes with the exact path.

    Raises:
        UserError: an engine cannot open its artifact or rejects an option, the members' class lists differ
            (the message names the difference), or ``fast`` is asked for without its libraries or with five-crop
            TTA. Engines opened so far are closed.
    """

    def __init__(
        self,
        members: Sequence[Member],
        tta: str = "none",
        device: str = "cpu",
        threads: int | None = None,
        options: dict[str, Any] | None = None,
        decode: str = "exact",
    ) -> None:
        if not members:
            raise UserError("no model to run")
        self.tta = check_mode(tta)
        if tta == "five-crop" and decode == "fast":
            raise UserError("five-crop TTA decodes with the exact path only; use --decode exact or auto")
        self.members: list[tuple[Engine, float]] = []
        try:
            for m in members:
                engine = create_engine(m.engine, m.model, device=device, threads=threads, precision=m.precision,
                                       options={**(options or {}), **m.options})  # fmt: skip
                self.members.append((engine, m.weight))
                names, first = engine.meta.class_names, self.members[0][0].meta.class_names
                if names != first:
                    diff = sorted(set(names) ^ set(first)) or ["(same names, other order)"]
                    raise UserError(f"ensemble member {m.model} has other classes than the first: {diff[:3]}")
            #: the decode mode used: ``exact`` or ``fast``
            self.decode_mode = (
                "exact" if tta == "five-crop" else resolve_mode(decode, [e.artifact for e in self.engines])
            )
        except BaseException:
            self.close()
            raise
        self.loader = five_crop_views if tta == "five-crop" else loader_for(self.decode_mode)
        keys = list(dict.fromkeys(preprocess_key(e.meta) for e, _ in self.members))
        #: per distinct eval transform: (the meta that defines it, indexes of the members using it)
        self.groups = [
            (next(e.meta for e, _ in self.members if preprocess_key(e.meta) == k),
             [i for i, (e, _) in enumerate(self.members) if preprocess_key(e.meta) == k])
            for k in keys
        ]  # fmt: skip

    @property
    def meta(self) -> ModelMeta:
        """Metadata of the first member (class names are the same for all)."""
        return self.members[0][0].meta

    @property
    def class_names(self) -> list[str]:
        """Class names in probability-column order."""
        return self.meta.class_names

    @property
    def engines(self) -> list[Engine]:
        """The open engines, in member order."""
        return [e for e, _ in self.members]

    def describe(self) -> dict[str, Any]:
        """What runs (:func:`runtime.engines.describe_members`: every member of an ensemble)."""
        return {**describe_members([e.describe() for e, _ in self.members]), "decode": self.decode_mode}

    def decode(self, paths: Sequence[Path]) -> list[np.ndarray]:
        """float32 batches of ``paths``, one per distinct eval transform (:attr:`groups`), for :meth:`forward`.

        Raises:
            runtime.preprocess.ImageError: an unreadable image.
        """
        return [np.stack([self.loader(p, meta) for p in paths]) for meta, _ in self.groups]

    def forward(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Weighted-mean probabilities, float32 (N, K), of pre-decoded batches (one per group, as from
        :meth:`decode`): softmax of each member's logits, or its mean over the TTA views."""
        total = None
        for (_, indexes), array in zip(self.groups, arrays, strict=True):
            for i in indexes:
                engine, weight = self.members[i]
                p = softmax(engine.run(array)) if self.tta == "none" else tta_probs(engine, array, self.tta)
                total = weight * p if total is None else total + weight * p
        assert total is not None
        return total / sum(w for _, w in self.members)

    def forward_stream(self, stream: Iterable[Sequence[np.ndarray]]) -> Iterator[np.ndarray]:
        """:meth:`forward` of each item of ``stream`` (pre-decoded batches, one per group), in order. One model
        without TTA runs through :meth:`Engine.run_stream`, so an engine that keeps several batches in flight
        does; an ensemble or TTA runs batch by batch."""
        if len(self.members) == 1 and self.tta == "none":
            engine = self.members[0][0]
            for logits in engine.run_stream(arrays[0] for arrays in stream):
                yield softmax(logits)
        else:
            for arrays in stream:
                yield self.forward(arrays)

    def features(self, array: np.ndarray) -> np.ndarray:
        """float32 (N, D) pooled pre-logit features of one member (no TTA, no ensemble).

        Raises:
            UserError: an ensemble or TTA was asked for, or the artifact has no features output.
        """
        if len(self.members) != 1 or self.tta != "none":
            raise UserError("features come from one model without TTA")
        return self.members[0][0].run_features(array)

    def plan_decode(self, items: Sequence[Item], batch_size: int, workers: int | None = None) -> DecodePlan:
        """The :class:`runtime.pipeline.DecodePlan` of a run over ``items``: ``workers`` threads when given (the
        ``--workers`` override), else measured here: up to 8 of the first readable ``items`` decoded one by one
        on this thread (every eval transform of the run; the median image, so a first call's imports do not count),
        then :meth:`forward` on a batch of them (repeated to ``min(batch_size, len(items))`` images) once untimed
        and twice timed (the faster counts); :func:`runtime.pipeline.plan_workers` turns the two times into
        threads. Batches ahead: one more than the engine keeps in flight
        (:attr:`Engine.in_flight`), so an engine with several requests never waits on the decoder for its next
        one. Costs three engine batches; an unreadable sample image is passed over (the run reports it).
        """
        ahead = max(e.in_flight for e in self.engines) + 1
        if workers is not None:
            return DecodePlan(workers, ahead)
        cpus, decoded, seconds = usable_cpus(), [], []
        for item in items[: 4 * batch_size]:
            if len(decoded) == 8:
                break
            if isinstance(item, UserError):
                continue
            start = time.perf_counter()
            try:
                decoded.append([self.loader(item, meta) for meta, _ in self.groups])
            except UserError:
                continue
            seconds.append(time.perf_counter() - start)
        if not decoded:
            return DecodePlan(min(2, cpus), ahead, how="no readable sample image")
        n = max(1, min(batch_size, len(items)))
        arrays = [np.stack([decoded[i % len(decoded)][g] for i in range(n)]) for g in range(len(self.groups))]
        self.forward(arrays)  # warm-up: first-run allocations and kernel selection
        runs = []
        for _ in range(2):
            start = time.perf_counter()
            self.forward(arrays)
            runs.append(time.perf_counter() - start)
        engine_s, decode_s = min(runs) / n, float(np.median(seconds))
        return DecodePlan(plan_workers(decode_s, engine_s, cpus), ahead, decode_s * 1e3, engine_s * 1e3, "measured")

    def stream(
        self,
        items: Sequence[Item],
        batch_size: int,
        workers: int | DecodePlan = 2,
        skip_errors: bool = False,
        offset: int = 0,
        features: bool = False,
    ) -> Iterator[tuple[Batch, np.ndarray | None]]:
        """Decode ``items`` (overlapped with inference, :func:`runtime.pipeline.stream_batches`) and yield each
        :class:`Batch` with its float32 (len(ok), K) probabilities (float32 (len(ok), D) features with
        ``features``), or ``None`` when no image of the batch could be read.

        Args:
            workers: decoder threads (2 batches ahead), or a :meth:`plan_decode` plan (its threads and depth).

        Raises:
            UserError: an unreadable item when ``skip_errors`` is false; see :meth:`features`.
        """
        plan = workers if isinstance(workers, DecodePlan) else DecodePlan(workers, 2)
        streams = [stream_batches(items, meta, batch_size, plan.workers, plan.prefetch, skip_errors=skip_errors,
                                  offset=offset, loader=self.loader) for meta, _ in self.groups]  # fmt: skip
        decoded = (_common(batches) for batches in zip(*streams, strict=True))
        if features:
            for batch, _ in decoded:
                yield batch, None if batch.array is None else self.features(batch.array)
            return
        # batches in decode order; the engine sees those with images, maybe several ahead of their results
        pending: deque[Batch] = deque()

        def with_images() -> Iterator[list[np.ndarray]]:
            for batch, arrays in decoded:
                pending.append(batch)
                if batch.array is not None:
                    yield arrays

        for probs in self.forward_stream(with_images()):
            while pending[0].array is None:
                yield pending.popleft(), None
            yield pending.popleft(), probs
        while pending:  # batches without a readable image after the last one with
            yield pending.popleft(), None

    def close(self) -> None:
        """Close every engine (idempotent)."""
        for engine, _ in self.members:
            engine.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _common(batches: Sequence[Batch]) -> tuple[Batch, list[np.ndarray]]:
    """The items every group decoded (an image one transform could not read counts as failed for all)."""
    if len(batches) == 1:
        b = batches[0]
        return b, [] if b.array is None else [b.array]
    ok = sorted(set.intersection(*(set(b.ok) for b in batches)))
    errors = dict(e for b in reversed(batches) for e in b.errors)
    if not ok:
        return Batch(batches[0].start, batches[0].count, [], None, sorted(errors.items())), []
    arrays = []
    for b in batches:
        assert b.array is not None
        keep = [j for j, pos in enumerate(b.ok) if pos in set(ok)]
        arrays.append(b.array[keep])
    return Batch(batches[0].start, batches[0].count, ok, arrays[0], sorted(errors.items())), arrays
