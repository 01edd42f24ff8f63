"""``python -m bench.memory``: peak resident memory of ``runtime.predict`` as the number of images grows.

Runs the real prediction command in a child process on CSVs of N ids (real images, repeated to reach N) and
reads each child's peak RSS (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``; Linux, KiB). A streaming
pipeline keeps the peak flat: the report gives the growth between the smallest and the largest N.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from runtime.dataset import read_csv, require_dir
from runtime.errors import ArgumentParser, UserError, description, positive_int, run_cli


def peak_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` in a fresh child (via a tiny wrapper so that only that child is measured); returns
    (peak RSS in MiB, wall seconds).

    Raises:
        UserError: the command failed.
    """
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 3):
        raise UserError(
            f"predict failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
        )
    return int(proc.stdout.strip().splitlines()[-1]) / 1024, seconds


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.memory``."""
    p = ArgumentParser(prog="python -m bench.memory", description=description(__doc__))
    p.add_argument("--engine", default="onnx", help="engine (default: onnx)")
    p.add_argument("--model", required=True, help="artifact or model folder")
    p.add_argument("--data", default="data/elpv", help="dataset whose test images are repeated")
    p.add_argument("--sizes", default="2000,20000", help="comma-separated image counts (default: 2000,20000)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    args = p.parse_args(argv)
    data = require_dir(args.data)
    ids = read_csv(data / "test.csv")["image_id"].tolist()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            csv = Path(tmp) / f"ids_{n}.csv"
            pd.DataFrame({"image_id": (ids * (n // len(ids) + 1))[:n]}).to_csv(csv, index=False)
            cmd = [
                sys.executable,
                "-m",
                "runtime.predict",
                "--engine",
                args.engine,
                "--model",
                args.model,
                "--csv",
                str(csv),
                "--images",
                str(data / "test"),
                "--out",
                str(Path(tmp) / "out.csv"),
                "--batch-size",
                str(args.batch_size),
                "--no-progress",
            ]
            rss, seconds = peak_rss_mib(cmd)
            rows.append((n, rss, n / seconds))
            print(f"{n:>8} images: peak RSS {rss:8.1f} MiB, {n / seconds:7.1f} img/s (incl. start-up)", file=sys.stderr)
    growth = rows[-1][1] / rows[0][1] - 1
    print(f"peak RSS growth from {rows[0][0]} to {rows[-1][0]} images: {growth:+.1%}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run_cli(main))
