"""``python -m bench`` (``make bench``): F1 and throughput of every trained backbone x engine x batch size.

Each cell predicts the labelled held-out set through the runtime's own path (decode, eval transform, engine),
scores micro-/macro-F1 against the held-out labels, and reports end-to-end img/s (files -> logits) and
engine-only img/s (pre-decoded tensors, warm-up then repeats for ``min_seconds``). A cell that cannot run is
recorded with its reason and the matrix goes on. Writes ``<out>/bench.csv`` and ``<out>/bench.md``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.measure import engine_throughput
from bench.report import markdown_table, write_reports
from runtime.artifacts import PRECISIONS
from runtime.config import load_config, parse_overrides
from runtime.dataset import encode_labels, image_dir_for, image_paths, read_csv, require_dir
from runtime.engines import ENGINE_NAMES, create_engine
from runtime.errors import ArgumentParser, UserError, description, one_line
from runtime.pipeline import iter_batches, predict_logits
from train.loop import f1_micro_macro


@dataclasses.dataclass
class BenchConfig:
    """Keys of ``configs/bench.yaml``."""

    data: str = "data/elpv"
    csv: str = "test.csv"
    labels: str = "test_labels.csv"
    models: list[str] = dataclasses.field(default_factory=list)
    engines: list[str] = dataclasses.field(default_factory=lambda: ["torch", "onnx"])  # engine[:precision]
    batch_sizes: list[int] = dataclasses.field(default_factory=lambda: [32])
    threads: int | None = None
    workers: int = 2
    min_seconds: float = 3.0
    min_f1_ratio: float = 0.99
    artifacts: str = "artifacts"
    out: str = "reports"

    def validate(self, source: str) -> None:
        """Raises UserError naming a bad key."""
        for spec in self.engines:
            engine, precision = parse_engine_spec(spec)
            if engine not in ENGINE_NAMES or precision not in PRECISIONS:
                raise UserError(
                    f"{source}: key 'engines': {spec!r} is not engine[:precision] with engine in {ENGINE_NAMES} "
                    f"and precision in {PRECISIONS}"
                )
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserError(f"{source}: key 'batch_sizes' must list sizes >= 1")
        if self.min_seconds <= 0:
            raise UserError(f"{source}: key 'min_seconds' must be > 0")


def parse_engine_spec(spec: str) -> tuple[str, str]:
    """``"onnx:int8"`` -> ``("onnx", "int8")``; ``"torch"`` -> ``("torch", "fp32")``."""
    engine, _, precision = spec.partition(":")
    return engine.strip(), (precision.strip() or "fp32")


def trained_models(cfg: BenchConfig) -> list[str]:
    """``cfg.models``, or every ``artifacts/<name>/`` holding a checkpoint."""
    if cfg.models:
        return list(cfg.models)
    return sorted(p.parent.name for p in Path(cfg.artifacts).glob("*/best.pt"))


def bench_cell(
    model: str, spec: str, batch_size: int, paths: list[Path], labels: list[str], cfg: BenchConfig
) -> dict[str, Any]:
    """Measure one backbone x engine[:precision] x batch size cell; a failure is recorded in ``status``."""
    engine_name, precision = parse_engine_spec(spec)
    row: dict[str, Any] = {
        "backbone": model,
        "engine": engine_name,
        "precision": precision,
        "batch_size": batch_size,
        "status": "ok",
    }
    try:
        with create_engine(
            engine_name, Path(cfg.artifacts) / model, threads=cfg.threads, precision=precision
        ) as engine:
            targets = encode_labels(labels, engine.meta.class_names, cfg.labels)
            start = time.perf_counter()
            logits = predict_logits(engine, paths, batch_size, cfg.workers, desc=f"{model}/{spec}")
            seconds = time.perf_counter() - start
            micro, macro = f1_micro_macro(np.asarray(targets), logits.argmax(1), engine.meta.num_classes)
            first = next(iter_batches(paths[:batch_size], engine.meta, batch_size))
            speed = engine_throughput(engine, first, cfg.min_seconds)
            row.update(engine.describe())
            row.update(
                f1_micro=micro,
                f1_macro=macro,
                img_per_s=len(paths) / seconds,
                img_per_s_engine=speed["img_per_s"],
                images=len(paths),
                backbone_arch=engine.meta.architecture,
            )
    except UserError as exc:
        row["status"] = f"skipped: {one_line(exc)}"
    return row


def run_bench(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Run the whole matrix; returns one dict per cell (see :data:`bench.report.COLUMNS`).

    Raises:
        UserError: missing dataset or label files, or no trained model.
    """
    data = require_dir(cfg.data)
    ids = read_csv(data / cfg.csv)["image_id"].tolist()
    truth = read_csv(data / cfg.labels, require_label=True).set_index("image_id")["label"]
    missing = [i for i in ids if i not in truth.index]
    if missing:
        raise UserError(f"{data / cfg.labels}: no label for image {missing[0]!r} of {cfg.csv}")
    labels = truth.loc[ids].tolist()
    paths = image_paths(require_dir(image_dir_for(data, cfg.csv), "image folder"), ids)
    models = trained_models(cfg)
    if not models:
        raise UserError(f"{cfg.artifacts}: no trained model (artifacts/<name>/best.pt); run `make train` first")
    rows = []
    for model in models:
        cells = [bench_cell(model, spec, bs, paths, labels, cfg) for spec in cfg.engines for bs in cfg.batch_sizes]
        rows.extend(apply_gate(cells, cfg.min_f1_ratio))
    return rows


def apply_gate(cells: list[dict[str, Any]], min_f1_ratio: float) -> list[dict[str, Any]]:
    """Mark reduced-precision cells below ``min_f1_ratio`` of the backbone's FP32 micro-F1 as failed (MLPerf's
    rule: a low-precision result counts only at >= 99% of the FP32 accuracy)."""
    fp32 = [c["f1_micro"] for c in cells if c["status"] == "ok" and c["precision"] == "fp32"]
    if not fp32:
        return cells
    reference = max(fp32)
    for c in cells:
        if c["status"] == "ok" and c["precision"] != "fp32" and c["f1_micro"] < min_f1_ratio * reference:
            c["status"] = f"failed gate: micro-F1 {c['f1_micro']:.4f} < {min_f1_ratio:.0%} of FP32 {reference:.4f}"
    return cells


def cpu_name() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else :func:`platform.processor` or the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench``."""
    p = ArgumentParser(prog="python -m bench", description=description(__doc__))
    p.add_argument("--config", default="configs/bench.yaml", help="YAML config (default: configs/bench.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    args = p.parse_args(argv)
    cfg = load_config(BenchConfig, args.config, parse_overrides(args.set))
    rows = run_bench(cfg)
    if all(r["status"].startswith("skipped") for r in rows):
        raise UserError(f"no bench cell could run, reports left as they were (first reason: {rows[0]['status']})")
    header = (
        f"# Bench: {Path(cfg.data).name} held-out set ({cfg.csv})\n\n"
        f"{time.strftime('%Y-%m-%d %H:%M')} | {cpu_name()} ({os.cpu_count()} cores) | "
        f"Python {platform.python_version()}"
    )
    csv_path, md_path = write_reports(rows, cfg.out, header)
    print(markdown_table(rows), end="")
    print(f"reports: {md_path}, {csv_path}", file=sys.stderr)
    return 0
