"""``python -m bench`` (``make bench``): F1 x throughput x latency of every backbone x engine x precision x batch.

Each cell runs in its own process (:mod:`bench.worker`) through the runtime's real path: it predicts the
labelled held-out set (decode, eval transform, engine; TTA and ensembles as in ``runtime.predict``), and is
scored (micro-/macro-F1, top-1 agreement and delta-F1 vs torch FP32). Then every cell is timed in interleaved
rounds (cell A, B, C, A, B, C, ...): end to end (files -> probabilities), engine only on a pre-decoded batch
streamed through the engine (an engine that keeps several batches in flight, OpenVINO, does: throughput from the
intervals between results, latency percentiles from hand-over to result), OpenVINO's ``benchmark_app`` on the same
IR for OpenVINO cells (``bench.openvino_ref``), decode only (files -> preprocessed batches, a thread
per core; the pipeline efficiency is end to end over decode and engine one after the other) and latency at
batch 1. A cell that cannot run is
recorded with its reason and the matrix goes on. A reduced-precision cell below ``min_f1_ratio`` of FP32
micro-F1 is marked failed and left out of the ranking (MLPerf's 99% rule).

Writes ``<out>/<run>/``: results.csv, results.json, report.md, report.html (self-contained) and the plots, and
points ``<out>/latest`` at it. With ``--baseline <results.json> --fail-on-regression 5%`` the exit code is 4 when
a cell's engine-only throughput or micro-F1 fell more than 5% below the baseline's (listed in the report).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.cells import TTA_VIEWS, Cell, held_out, plan
from bench.compare import check_same_held_out, held_out_fingerprint, load_baseline, parse_tolerance, regressions
from bench.config import BenchConfig
from bench.cost import model_cost
from bench.environment import environment
from bench.gates import best_cell, compare_to_reference, summary_line
from bench.measure import matmul_peak_gflops, summarize
from bench.openvino_ref import benchmark_app_rate
from bench.report import markdown_table, write_run
from bench.worker import CellFailed, CellProcess
from runtime.config import add_set_argument, load_config, parse_overrides
from runtime.dataset import read_csv
from runtime.errors import ArgumentParser, UserError, description
from runtime.metrics import f1_micro_macro


def _start(cell: Cell, paths: list[Path], targets: list[str], cfg: BenchConfig) -> None:
    """Open the cell's process, predict the held-out set and decode its timing batches; failures -> status."""
    row = cell.row
    row.images = len(paths)
    if cell.error:
        row.status = f"skipped: {cell.error}"
        return
    try:
        trt = any(m.engine == "trt" for m in cell.members)
        device = "cuda" if trt and cfg.device == "cpu" else cfg.device
        cell.process = CellProcess(cell.members, cell.spec.tta, device, cfg.threads, cfg.decode)
        info = cell.process.info
        row.decode = info.get("decode")
        names = info.pop("class_names")
        unknown = sorted(set(targets) - set(names))
        if unknown:
            raise CellFailed(f"held-out label {unknown[0]!r} is not a class of this model")
        row.provider, row.device, row.threads = info.get("provider"), info.get("device"), info.get("threads")
        row.artifact_mib = info["artifact_bytes"] / 2**20
        if cfg.benchmark_app and cell.spec.engine == "openvino" and cell.spec.tta == "none" and len(cell.members) == 1:
            cell.benchmark_app = (info["artifacts"][0], tuple(info["input_size"]))
        cell.probs, _ = cell.process.call("predict", paths, cell.batch_size, cfg.workers)
        row.decode_workers = cell.process.call("decode_workers", paths, cell.batch_size, cfg.workers)
        index = {n: i for i, n in enumerate(names)}
        row.truth, row.pred, row.class_names = np.array([index[t] for t in targets]), cell.probs.argmax(1), names
        row.f1_micro, row.f1_macro = f1_micro_macro(row.truth, row.pred, len(names))
        for bs in {cell.batch_size, cfg.latency_batch} - {0}:
            cell.process.call("prepare", paths, bs)
    except CellFailed as exc:
        row.status = f"skipped: {exc}"
        cell.process = None


def _progress(cell: Cell, what: str) -> None:
    """One stderr line per cell: what it did, with its F1 or the reason it is skipped."""
    row = cell.row
    done = f"micro-F1 {row.f1_micro:.4f}" if row.f1_micro is not None else row.status
    print(f"bench {row.backbone} {row.cell} batch {row.batch_size}: {what}, {done}", file=sys.stderr, flush=True)


def _round(cell: Cell, paths: list[Path], cfg: BenchConfig, first: bool) -> None:
    """One interleaved round of the cell: end to end, engine only at its batch, latency at ``latency_batch``."""
    assert cell.process is not None
    share, warmup = cfg.min_seconds / cfg.rounds, cfg.warmup if first else 1
    try:
        _, seconds = cell.process.call("predict", paths, cell.batch_size, cfg.workers)
        cell.timings.setdefault("e2e", []).append([seconds / len(paths) * cell.batch_size])
        timed = cell.process.call("time", cell.batch_size, share, warmup)  # pipelined: batches kept in flight
        cell.timings.setdefault("engine", []).append(timed["intervals"])
        cell.timings.setdefault("engine_latency", []).append(timed["latencies"])
        if cell.benchmark_app:  # OpenVINO's own rate on the same IR, right after the engine's (others idle)
            xml, size = cell.benchmark_app
            rate, why = benchmark_app_rate(xml, cell.batch_size, size, share, cfg.threads)
            cell.timings.setdefault("benchmark_app", []).append([cell.batch_size / rate] if rate else [])
            if why:
                cell.row.notes, cell.benchmark_app = why, None
        seconds = cell.process.call("decode", paths, cell.batch_size, os.cpu_count() or 1)  # a thread per core
        cell.timings.setdefault("decode", []).append([seconds / len(paths) * cell.batch_size])
        if cfg.latency_batch:
            lone = cell.process.call("time", cfg.latency_batch, share, warmup, 5, False)  # one request at a time
            cell.timings.setdefault("lat1", []).append(lone["latencies"])
    except CellFailed as exc:
        cell.row.status = f"failed: {exc}"
        cell.process = None


def _finish(cell: Cell, cfg: BenchConfig, costs: dict[str, dict[str, Any]]) -> None:
    """Close the cell's process and turn its timings into report columns."""
    if cell.process is None:
        return
    row = cell.row
    try:
        row.peak_rss_mib, row.gpu_mem_mib = cell.process.close()
    except CellFailed as exc:
        row.status = f"failed: {exc}"
        return
    e2e = summarize(cell.timings["e2e"], cell.batch_size)
    engine = summarize(cell.timings["engine"], cell.batch_size, cell.timings["engine_latency"])
    row.img_per_s, row.img_per_s_min, row.img_per_s_max = e2e["img_per_s"], e2e["img_per_s_min"], e2e["img_per_s_max"]
    row.img_per_s_engine, row.img_per_s_engine_min = engine["img_per_s"], engine["img_per_s_min"]
    row.img_per_s_engine_max, row.cv, row.runs = engine["img_per_s_max"], engine["cv"], engine["runs"]
    row.p50_ms, row.p90_ms, row.p99_ms = engine["p50_ms"], engine["p90_ms"], engine["p99_ms"]
    row.e2e_ratio = row.img_per_s / row.img_per_s_engine
    row.img_per_s_decode = summarize(cell.timings["decode"], cell.batch_size)["img_per_s"]
    row.pipeline_efficiency = row.img_per_s * (1 / row.img_per_s_engine + 1 / row.img_per_s_decode)
    app = [r for r in cell.timings.get("benchmark_app", []) if r]
    if app and cell.benchmark_app:
        row.img_per_s_benchmark_app = summarize(app, cell.batch_size)["img_per_s"]
        row.vs_benchmark_app = row.img_per_s_engine / row.img_per_s_benchmark_app
    if cfg.latency_batch:
        lat = summarize(cell.timings["lat1"], cfg.latency_batch)
        row.lat1_p50_ms, row.lat1_p90_ms, row.lat1_p99_ms = lat["p50_ms"], lat["p90_ms"], lat["p99_ms"]
    member_costs = [costs.get(str(Path(m.model).resolve()), {}) for m in cell.members]
    if all(c.get("gmacs") is not None for c in member_costs):
        row.params_m = sum(c["params"] for c in member_costs) / 1e6
        row.gmacs = sum(c["gmacs"] for c in member_costs) * TTA_VIEWS[cell.spec.tta]
        row.gflops = 2 * row.gmacs * row.img_per_s_engine
    if engine["cv"] > cfg.cv_warn:
        row.notes = "; ".join(filter(None, [row.notes, f"noisy timing: CV {engine['cv']:.1%} > {cfg.cv_warn:.0%}"]))


def run_bench(cfg: BenchConfig, held: tuple[list[Path], list[str]] | None = None) -> dict[str, Any]:
    """Run the whole matrix on the held-out set ``held`` (image paths, labels; default :func:`held_out`).

    Returns:
        ``{"environment", "config", "matmul_peak_gflops", "rows", "summary", "best"}``: ``rows`` are
        :class:`bench.rows.BenchRow` s in report order, ``best`` the best one (or ``None``).

    Raises:
        UserError: missing dataset or label files, no trained model, a broken ensemble file.
    """
    paths, targets = held or held_out(cfg)
    cells = plan(cfg)
    env = environment()
    peaks = [matmul_peak_gflops(threads=cfg.threads)] if cfg.matmul_peak else []
    costs: dict[str, dict[str, Any]] = {}
    for folder in {str(Path(m.model).resolve()) for c in cells for m in c.members}:
        checkpoint = Path(folder) / "best.pt" if Path(folder).is_dir() else Path(folder).with_name("best.pt")
        try:
            costs[folder] = model_cost(checkpoint) if checkpoint.is_file() else {}
        except UserError:  # an unreadable checkpoint: its cells record the reason themselves
            costs[folder] = {}
    for group in dict.fromkeys(c.backbone for c in cells):  # one backbone's cells are alive together
        mine = [c for c in cells if c.backbone == group]
        start = time.perf_counter()
        for cell in mine:
            _start(cell, paths, targets, cfg)
            _progress(cell, "predicted")
        for r in range(cfg.rounds):
            for cell in mine:
                if cell.process is not None:
                    _round(cell, paths, cfg, first=r == 0)
            print(f"bench {group}: timing round {r + 1}/{cfg.rounds} done", file=sys.stderr, flush=True)
        for cell in mine:
            _finish(cell, cfg, costs)
        print(f"bench {group}: {len(mine)} cells in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    if cfg.matmul_peak:  # again at the end: the best of both is the yardstick (load or clock changes lower one)
        peaks.append(matmul_peak_gflops(threads=cfg.threads))
    peak = max((p["peak"] for p in peaks if p), default=None)
    for cell in cells:
        if peak and cell.row.gflops:
            cell.row.peak_fraction = cell.row.gflops / peak
    compare_to_reference(cells, cfg.min_f1_ratio)
    rows = [cell.row for cell in cells]
    best = best_cell(rows, cfg.min_f1_ratio)
    return {
        "environment": env,
        "config": dataclasses.asdict(cfg),
        "matmul_peak_gflops": peak,
        "matmul_peak_runs": peaks,
        "rows": rows,
        "summary": summary_line(best, cfg.min_f1_ratio),
        "best": best,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench``; returns 0, or 4 on a regression against ``--baseline``."""
    p = ArgumentParser(prog="python -m bench", description=description(__doc__))
    p.add_argument("--config", default="configs/bench.yaml", help="YAML config (default: configs/bench.yaml)")
    add_set_argument(p)
    p.add_argument("--run", help="name of the report folder under out (default: date and time)")
    p.add_argument("--baseline", help="results.json of an earlier run to compare with")
    p.add_argument(
        "--fail-on-regression",
        metavar="PCT",
        help="with --baseline: exit 4 when engine-only img/s or micro-F1 drops more than this (default 5%%)",
    )
    args = p.parse_args(argv)
    cfg = load_config(BenchConfig, args.config, parse_overrides(args.set))
    if args.fail_on_regression is not None and not args.baseline:
        raise UserError("--fail-on-regression needs --baseline <results.json> (make bench BASELINE=...)")
    tolerance = parse_tolerance(args.fail_on_regression or "5%")
    baseline = load_baseline(args.baseline) if args.baseline else None
    run_name = args.run or time.strftime("%Y%m%d-%H%M%S")
    if not run_name.replace("-", "").replace("_", "").replace(".", "").isalnum() or run_name.startswith("."):
        raise UserError(f"--run {run_name!r}: use letters, digits, '-', '_' and '.' (not first)")
    if run_name == "latest":
        raise UserError("--run latest: that name is the link to the newest report; choose another name")
    paths, targets = held_out(cfg)
    fingerprint = held_out_fingerprint(read_csv(Path(cfg.data) / cfg.csv)["image_id"].tolist(), targets)
    if baseline is not None:
        check_same_held_out(baseline, fingerprint, len(paths), args.baseline)
    results = run_bench(cfg, (paths, targets))
    results["held_out"] = {"images": len(paths), "sha256": fingerprint}
    rows = results["rows"]
    if all(r.status.startswith(("skipped", "failed:")) for r in rows):
        raise UserError(f"no bench cell could run, no report written (first reason: {rows[0].status})")
    results["regressions"] = regressions(rows, baseline["rows"], tolerance) if baseline is not None else []
    results["baseline"] = args.baseline
    run_dir = write_run(results, Path(cfg.out) / run_name)
    print(markdown_table(rows), end="")
    print(results["summary"])
    for line in results["regressions"]:
        print(f"REGRESSION: {line}")
    if baseline is not None and not results["regressions"]:
        print(f"baseline {args.baseline}: no regression beyond {tolerance:.0%}")
    print(f"report: {run_dir / 'report.html'} (also report.md, results.csv, results.json)", file=sys.stderr)
    return 4 if results["regressions"] else 0
