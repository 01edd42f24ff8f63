"""Decode speed of the exact and fast paths (``python -m bench.decode``): the per-image table and the decode rate.

* :func:`per_image_ms`: milliseconds per image on one thread, page-cached file -> float32 (3, H, W) at the
  model's input size, exact and fast interleaved round by round (median over rounds), for the input kinds of
  issue 19: ELPV 300x300 greyscale PNG -> 128 px and generated 500x375 / 800x600 / 1600x1200 RGB JPEGs -> 224.
* :func:`decode_rate`: images per second of files -> preprocessed batches with the run's decode pool
  (:func:`runtime.pipeline.stream_batches`, ``workers`` threads), no engine: the bench's decode-only rate.

The JPEGs are :func:`bench.contest_data.class_image` patterns (colour, stripes, noise; noise makes them larger
files than photos of the same size, so their decoding is, if anything, slower than a photo's).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.contest_data import class_image
from runtime.decode import DECODE_MODES, loader_for
from runtime.errors import ArgumentParser, UserError, description, positive_int, run_cli
from runtime.metadata import ModelMeta
from runtime.pipeline import stream_batches

#: the issue's JPEG kinds: (width, height) -> model input side
JPEG_KINDS = {(500, 375): 224, (800, 600): 224, (1600, 1200): 224}
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def eval_meta(side: int, crop_pct: float) -> ModelMeta:
    """Metadata of a square ``side`` px bicubic center-crop model (timm's defaults otherwise)."""
    return ModelMeta("bench", ["a", "b"], (3, side, side), _MEAN, _STD, "bicubic", crop_pct, "center")


def write_jpegs(folder: Path, width: int, height: int, count: int, seed: int = 0) -> list[Path]:
    """``count`` RGB JPEGs (quality 90) of ``width`` x ``height`` in ``folder``; returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{width}x{height}-{i}.jpg"
        class_image(rng, i, height, width).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def per_image_ms(paths: Sequence[Path], meta: ModelMeta, rounds: int = 5) -> dict[str, float]:
    """Median over ``rounds`` of the mean milliseconds per image of each decode mode on this thread; the modes
    are interleaved within every round, so a change of load hits both.

    Raises:
        UserError: the fast path's libraries are missing, or an image cannot be read.
    """
    loaders = {mode: loader_for(mode) for mode in DECODE_MODES}
    times: dict[str, list[float]] = {mode: [] for mode in DECODE_MODES}
    for load in loaders.values():  # warm-up: imports, tables, file cache
        load(paths[0], meta)
    for _ in range(rounds):
        for mode, load in loaders.items():
            start = time.perf_counter()
            for path in paths:
                load(path, meta)
            times[mode].append((time.perf_counter() - start) / len(paths) * 1e3)
    return {mode: float(np.median(t)) for mode, t in times.items()}


def decode_rate(paths: Sequence[Path], meta: ModelMeta, mode: str, workers: int, batch_size: int = 32) -> float:
    """Images per second of ``paths`` -> float32 batches through the prediction pipeline's decode pool
    (``workers`` threads, no engine).

    Raises:
        UserError: an unknown mode, the fast path's libraries missing, or an unreadable image.
    """
    loader = loader_for(mode)
    start = time.perf_counter()
    count = sum(b.count for b in stream_batches(list(paths), meta, batch_size, workers, loader=loader))
    return count / (time.perf_counter() - start)


def table(elpv: Path | None, images: int, rounds: int, workers: int) -> list[str]:
    """Markdown rows of the per-image table (input kind, exact and fast ms per image on one thread and speed-up;
    decode-only rate of both with ``workers`` threads)."""
    rows = [f"| input | exact (Pillow) ms/image | fast ms/image | speed-up | exact img/s ({workers} threads) | "
            f"fast img/s ({workers} threads) |", "|---|---|---|---|---|---|"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        kinds: list[tuple[str, list[Path], ModelMeta]] = []
        if elpv is not None:
            pngs = sorted(elpv.glob("*.png"))[:images]
            if not pngs:
                raise UserError(f"{elpv}: no .png images")
            kinds.append((f"ELPV 300x300 greyscale PNG -> 128 ({len(pngs)} files)", pngs, eval_meta(128, 1.0)))
        for (w, h), side in JPEG_KINDS.items():
            paths = write_jpegs(Path(tmp), w, h, images)
            kinds.append((f"{w}x{h} RGB JPEG -> {side} ({len(paths)} files)", paths, eval_meta(side, 0.875)))
        for name, paths, meta in kinds:
            ms = per_image_ms(paths, meta, rounds)
            rate = {m: float(np.median([decode_rate(paths * 4, meta, m, workers) for _ in range(rounds)]))
                    for m in DECODE_MODES}  # fmt: skip
            rows.append(f"| {name} | {ms['exact']:.2f} | {ms['fast']:.2f} | {ms['exact'] / ms['fast']:.2f}x | "
                        f"{rate['exact']:.0f} | {rate['fast']:.0f} |")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.decode``: print the per-image decode table and the decode-only rates
    (markdown) with the CPU and the load average."""
    p = ArgumentParser(prog="python -m bench.decode", description=description(__doc__))
    p.add_argument("--elpv", help="folder of ELPV PNGs (e.g. data/elpv/train); left out when not given")
    p.add_argument("--images", type=positive_int, default=20, help="images per kind (default 20)")
    p.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds, median reported (default 5)")
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                   help="decode threads of the decode-only rate (default: one per core)")  # fmt: skip
    args = p.parse_args(argv)
    rows = table(Path(args.elpv) if args.elpv else None, args.images, args.rounds, args.workers)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"CPU {_cpu_name()} ({os.cpu_count()} cores), one thread, load average {load}, "
          f"median of {args.rounds} rounds")  # fmt: skip
    print("\n".join(rows))
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(run_cli(main))
