"""``python -m bench`` (``make bench``): F1 x throughput x latency of every backbone x engine x precision x batch.

Each cell runs in its own process (:mod:`bench.worker`) through the runtime's real path: it predicts the
labelled held-out set (decode, eval transform, engine; TTA and ensembles as in ``runtime.predict``), and is
scored (micro-/macro-F1, top-1 agreement and delta-F1 vs torch FP32). Then every cell is timed in interleaved
rounds (cell A, B, C, A, B, C, ...): end to end (files -> probabilities), engine only on a pre-decoded batch
(throughput and latency percentiles at the chosen batch) and latency at batch 1. A cell that cannot run is
recorded with its reason and the matrix goes on. A reduced-precision cell below ``min_f1_ratio`` of FP32
micro-F1 is marked failed and left out of the ranking (MLPerf's 99% rule).

Writes ``<out>/<run>/``: results.csv, results.json, report.md, report.html (self-contained) and the plots, and
points ``<out>/latest`` at it. With ``--baseline <results.json> --fail-on-regression 5%`` the exit code is 4 when
a cell's engine-only throughput or micro-F1 fell more than 5% below the baseline's (listed in the report).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.compare import check_same_held_out, held_out_fingerprint, load_baseline, parse_tolerance, regressions
from bench.config import BenchConfig, CellSpec, parse_fold_entry
from bench.cost import model_cost
from bench.environment import environment
from bench.measure import matmul_peak_gflops, summarize
from bench.report import markdown_table, write_run
from bench.worker import CellFailed, CellProcess
from runtime.artifacts import artifact_file
from runtime.config import add_set_argument, load_config, parse_overrides
from runtime.dataset import image_dir_for, image_paths, read_csv, require_dir
from runtime.errors import ArgumentParser, UserError, description, one_line
from runtime.members import Member, fold_models, read_ensemble
from runtime.metrics import f1_micro_macro, f1_ratio, passes_f1_gate

#: forward passes per image for each TTA mode
TTA_VIEWS = {"none": 1, "hflip": 2, "hflip+vflip": 3, "five-crop": 5}

#: (engine, precision) -> export target that builds its artifact
EXPORT_TARGETS = {
    ("onnx", "fp32"): "onnx",
    ("onnx", "int8"): "onnx-int8",
    ("onnx", "fp16"): "onnx-fp16",
    ("openvino", "fp32"): "openvino",
    ("openvino", "int8"): "onnx-int8",
}


@dataclasses.dataclass
class Cell:
    """One row of the report: a backbone (or ensemble) x cell spec x batch size, and what it measured."""

    backbone: str
    spec: CellSpec
    batch_size: int
    members: list[Member]
    group: str | None = None  # backbone whose torch FP32 cell is the reference (ensembles); default: backbone
    error: str | None = None  # why the cell cannot be set up (recorded as skipped)
    row: dict[str, Any] = dataclasses.field(default_factory=dict)
    probs: np.ndarray | None = None
    process: CellProcess | None = None
    timings: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)


def held_out(cfg: BenchConfig) -> tuple[list[Path], list[str]]:
    """Image paths of ``cfg.csv`` and their labels from ``cfg.labels``.

    Raises:
        UserError: missing dataset, CSV, labels, or an image without a label.
    """
    data = require_dir(cfg.data)
    ids = read_csv(data / cfg.csv)["image_id"].tolist()
    truth = read_csv(data / cfg.labels, require_label=True).set_index("image_id")["label"]
    missing = [i for i in ids if i not in truth.index]
    if missing:
        raise UserError(f"{data / cfg.labels}: no label for image {missing[0]!r} of {cfg.csv}")
    if not ids:
        raise UserError(f"{data / cfg.csv}: no image ids")
    return image_paths(require_dir(image_dir_for(data, cfg.csv), "image folder"), ids), truth.loc[ids].tolist()


def trained_models(cfg: BenchConfig) -> list[str]:
    """``cfg.models``, or every ``artifacts/<name>/`` holding a checkpoint."""
    if cfg.models:
        return list(cfg.models)
    return sorted(p.parent.name for p in Path(cfg.artifacts).glob("*/best.pt"))


def build_missing(cfg: BenchConfig, model: str) -> None:
    """Export the artifacts that ``cfg.engines`` need for ``model`` and that do not exist (``build_missing``).
    A failed export is printed; its cells are then recorded as skipped."""
    folder = Path(cfg.artifacts) / model
    targets = sorted(
        {
            EXPORT_TARGETS[(s.engine, s.precision)]
            for s in cfg.cells
            if (s.engine, s.precision) in EXPORT_TARGETS and not artifact_file(folder, s.engine, s.precision).exists()
        }
    )
    targets += (
        ["trt"]
        if any(s.engine == "trt" and not artifact_file(folder, "trt", s.precision).exists() for s in cfg.cells)
        else []
    )
    if not targets:
        return
    from export.export import ExportConfig, export_model

    print(f"bench: building {', '.join(targets)} for {model}", file=sys.stderr)
    try:
        export_model(model, load_config(ExportConfig, cfg.export_config, {"artifacts": cfg.artifacts}), targets)
    except UserError as exc:
        print(f"bench: export for {model} incomplete: {one_line(exc)}", file=sys.stderr)


def plan(cfg: BenchConfig) -> list[Cell]:
    """Every cell of the matrix, in report order: backbones x engines x batch sizes, then ensembles."""
    models = trained_models(cfg)
    if not models and not cfg.ensembles:
        raise UserError(f"{cfg.artifacts}: no trained model (artifacts/<name>/best.pt); run `make train` first")
    cells = []
    for model in models:
        if cfg.build_missing:
            build_missing(cfg, model)
        for spec in cfg.cells:
            cells += [Cell(model, spec, bs, [spec.member(str(Path(cfg.artifacts) / model))]) for bs in cfg.batch_sizes]
    for entry in cfg.ensembles:
        template = ensemble_cell(cfg, entry)
        cells += [dataclasses.replace(template, batch_size=bs, row={}, timings={}) for bs in cfg.batch_sizes]
    return cells


def ensemble_cell(cfg: BenchConfig, entry: str) -> Cell:
    """The cell of one ``ensembles`` entry (batch size still to set): ``folds:<model>[:engine[:precision]][@tta]``
    (the finished k-fold run of ``<model>``) or ``<ensemble.yaml>[@tta]``. Its backbone is ``ensemble:<name>``;
    its spec names the members' engine and precision (``mixed`` when they differ). An entry whose members cannot
    be listed becomes a skipped cell with the reason."""

    head, _, tta = entry.partition("@")
    tta = tta or "none"
    try:
        if head.startswith("folds:"):
            model, spec = parse_fold_entry(entry, "ensembles")
            members = [Member(m, spec.engine, spec.precision) for m in fold_models(Path(cfg.artifacts) / model)]
            return Cell(f"ensemble:{model}:{len(members)} folds", spec, 0, members, model)
        members = read_ensemble(head, "onnx", "fp32")
    except UserError as exc:
        name = head.split(":")[1] if head.startswith("folds:") else Path(head).stem
        return Cell(f"ensemble:{name}", CellSpec("ensemble", "fp32", tta), 0, [], error=one_line(exc))
    engines = {m.engine for m in members}
    precisions = {m.precision or "fp32" for m in members}
    spec = CellSpec(
        engines.pop() if len(engines) == 1 else "mixed", precisions.pop() if len(precisions) == 1 else "mixed", tta
    )
    first = Path(members[0].model)
    return Cell(f"ensemble:{Path(head).stem}", spec, 0, members, first.name if first.is_dir() else first.parent.name)


def _start(cell: Cell, paths: list[Path], targets: list[str], cfg: BenchConfig) -> None:
    """Open the cell's process, predict the held-out set and decode its timing batches; failures -> status."""
    cell.row = {
        "backbone": cell.backbone,
        "cell": cell.spec.label,
        "engine": cell.spec.engine,
        "precision": cell.spec.precision,
        "tta": cell.spec.tta,
        "batch_size": cell.batch_size,
        "status": "ok",
        "images": len(paths),
    }
    if cell.error:
        cell.row["status"] = f"skipped: {cell.error}"
        return
    try:
        trt = any(m.engine == "trt" for m in cell.members)
        device = "cuda" if trt and cfg.device == "cpu" else cfg.device
        cell.process = CellProcess(cell.members, cell.spec.tta, device, cfg.threads)
        info = cell.process.info
        names = info.pop("class_names")
        unknown = sorted(set(targets) - set(names))
        if unknown:
            raise CellFailed(f"held-out label {unknown[0]!r} is not a class of this model")
        cell.row.update({k: info.get(k) for k in ("provider", "device", "threads")})
        cell.row["artifact_mib"] = info["artifact_bytes"] / 2**20
        cell.probs, _ = cell.process.call("predict", paths, cell.batch_size, cfg.workers)
        index = {n: i for i, n in enumerate(names)}
        y, pred = np.array([index[t] for t in targets]), cell.probs.argmax(1)
        cell.row["f1_micro"], cell.row["f1_macro"] = f1_micro_macro(y, pred, len(names))
        cell.row["_truth"], cell.row["_names"] = y, names
        for bs in {cell.batch_size, cfg.latency_batch} - {0}:
            cell.process.call("prepare", paths, bs)
    except CellFailed as exc:
        cell.row["status"] = f"skipped: {exc}"
        cell.process = None


def _round(cell: Cell, paths: list[Path], cfg: BenchConfig, first: bool) -> None:
    """One interleaved round of the cell: end to end, engine only at its batch, latency at ``latency_batch``."""
    assert cell.process is not None
    share, warmup = cfg.min_seconds / cfg.rounds, cfg.warmup if first else 1
    try:
        _, seconds = cell.process.call("predict", paths, cell.batch_size, cfg.workers)
        cell.timings.setdefault("e2e", []).append([seconds / len(paths) * cell.batch_size])
        cell.timings.setdefault("engine", []).append(cell.process.call("time", cell.batch_size, share, warmup))
        if cfg.latency_batch:
            cell.timings.setdefault("lat1", []).append(cell.process.call("time", cfg.latency_batch, share, warmup))
    except CellFailed as exc:
        cell.row["status"] = f"failed: {exc}"
        cell.process = None


def _finish(cell: Cell, cfg: BenchConfig, costs: dict[str, dict[str, Any]]) -> None:
    """Close the cell's process and turn its timings into report columns."""
    if cell.process is None:
        return
    try:
        cell.row["peak_rss_mib"], cell.row["gpu_mem_mib"] = cell.process.close()
    except CellFailed as exc:
        cell.row["status"] = f"failed: {exc}"
        return
    e2e, engine = summarize(cell.timings["e2e"], cell.batch_size), summarize(cell.timings["engine"], cell.batch_size)
    row = cell.row
    row.update(img_per_s=e2e["img_per_s"], img_per_s_min=e2e["img_per_s_min"], img_per_s_max=e2e["img_per_s_max"])
    row.update(
        img_per_s_engine=engine["img_per_s"],
        img_per_s_engine_min=engine["img_per_s_min"],
        img_per_s_engine_max=engine["img_per_s_max"],
        cv=engine["cv"],
        runs=engine["runs"],
        p50_ms=engine["p50_ms"],
        p90_ms=engine["p90_ms"],
        p99_ms=engine["p99_ms"],
    )
    row["e2e_ratio"] = row["img_per_s"] / row["img_per_s_engine"]
    if cfg.latency_batch:
        lat = summarize(cell.timings["lat1"], cfg.latency_batch)
        row.update(lat1_p50_ms=lat["p50_ms"], lat1_p90_ms=lat["p90_ms"], lat1_p99_ms=lat["p99_ms"])
    member_costs = [costs.get(str(Path(m.model).resolve()), {}) for m in cell.members]
    if all(c.get("gmacs") is not None for c in member_costs):
        row["params_m"] = sum(c["params"] for c in member_costs) / 1e6
        row["gmacs"] = sum(c["gmacs"] for c in member_costs) * TTA_VIEWS[cell.spec.tta]
        row["gflops"] = 2 * row["gmacs"] * row["img_per_s_engine"]
    notes = [f"noisy timing: CV {engine['cv']:.1%} > {cfg.cv_warn:.0%}"] if engine["cv"] > cfg.cv_warn else []
    row["notes"] = "; ".join(notes)


def reference_cell(cell: Cell, done: list[Cell]) -> Cell | None:
    """The FP32 cell (no TTA) that ``cell`` is compared with, among the cells that ran (``None``: there is none).

    A reduced-precision cell compares with its own backbone (or ensemble) at FP32, torch first, else the FP32
    cell with the best micro-F1; an FP32 cell (an engine, TTA, an ensemble) with torch FP32 of its backbone or,
    for an ensemble, of its :attr:`Cell.group` backbone (the single model, so delta-F1 is the ensemble's gain).
    Either falls back to the other rule (torch FP32 itself, or an ensemble with no single-model cell, is its own
    reference: delta 0).
    """
    fp32 = cell.spec.precision == "fp32"
    names = [cell.group or cell.backbone, cell.backbone] if fp32 else [cell.backbone, cell.group or cell.backbone]
    names = list(dict.fromkeys(names))
    plain = {
        n: sorted(
            (c for c in done if c.backbone == n and c.spec.precision == "fp32" and c.spec.tta == "none"),
            key=lambda c: (c.spec.engine != "torch", c.spec.compile, -c.row["f1_micro"]),
        )
        for n in names
    }
    torch_cells = [c for n in names for c in plain[n] if c.spec.engine == "torch"]
    others = [c for n in names for c in plain[n]]
    order = torch_cells + others if fp32 else plain[cell.backbone] + torch_cells + others
    return order[0] if order else None


def compare_to_reference(cells: list[Cell], min_f1_ratio: float) -> None:
    """Against the cell's FP32 reference (:func:`reference_cell`): top-1 agreement, delta micro-F1, speed-up of
    engine-only throughput over the torch FP32 cell of the same backbone (or group) at the same batch size;
    reduced-precision cells under ``min_f1_ratio`` of the reference micro-F1 are marked ``failed gate``. A
    reduced-precision cell without a reference is marked too (its F1 cannot be verified)."""
    done = [c for c in cells if c.row["status"] == "ok"]
    for cell in done:
        ref = reference_cell(cell, done)
        if ref is None:
            if cell.spec.precision != "fp32":
                cell.row["status"] = "failed gate: no FP32 cell of this backbone ran to verify its F1 against"
            continue
        cell.row["reference"] = ref.spec.label if ref.backbone == cell.backbone else f"{ref.backbone} {ref.spec.label}"
        cell.row["agreement"] = float((ref.probs.argmax(1) == cell.probs.argmax(1)).mean())
        cell.row["delta_f1"] = cell.row["f1_micro"] - ref.row["f1_micro"]
        cell.row["f1_ratio"] = f1_ratio(cell.row["f1_micro"], ref.row["f1_micro"])
        same_batch = sorted(
            (
                c
                for c in done
                if c.backbone in (cell.backbone, cell.group or cell.backbone)
                and c.spec == CellSpec("torch")
                and c.batch_size == cell.batch_size
                and "img_per_s_engine" in c.row
            ),
            key=lambda c: c.backbone != (cell.group or cell.backbone),
        )
        if same_batch and "img_per_s_engine" in cell.row:
            cell.row["speedup"] = cell.row["img_per_s_engine"] / same_batch[0].row["img_per_s_engine"]
        if cell.spec.precision != "fp32" and not passes_f1_gate(
            cell.row["f1_micro"], ref.row["f1_micro"], min_f1_ratio
        ):
            cell.row["status"] = (
                f"failed gate: micro-F1 {cell.row['f1_micro']:.4f} < {min_f1_ratio:.0%} of "
                f"{cell.row['reference']} {ref.row['f1_micro']:.4f}"
            )


def best_cell(rows: list[dict[str, Any]], min_f1_ratio: float) -> dict[str, Any] | None:
    """The fastest (engine-only img/s) cell that ran, passed its gate and reached ``min_f1_ratio`` of its
    reference micro-F1; ``None`` if there is none."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("f1_ratio", 0) >= min_f1_ratio and "img_per_s_engine" in r]
    return max(ok, key=lambda r: r["img_per_s_engine"], default=None)


def summary_line(best: dict[str, Any] | None, min_f1_ratio: float) -> str:
    """The report's one-line verdict."""
    if best is None:
        return f"fastest at >= {min_f1_ratio:.0%} of FP32 F1: no cell qualified"
    speed = f" ({best['speedup']:.2f}x torch eager FP32)" if best.get("speedup") else ""
    return (
        f"fastest at >= {min_f1_ratio:.0%} of FP32 F1: {best['backbone']} {best['cell']} batch {best['batch_size']}: "
        f"{best['img_per_s_engine']:.1f} img/s engine-only{speed}, {best['img_per_s']:.1f} img/s end to end "
        f"({best['e2e_ratio']:.2f}x engine-only), micro-F1 {best['f1_micro']:.4f} "
        f"({best['f1_ratio']:.1%} of {best['reference']})"
    )


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run the whole matrix.

    Returns:
        ``{"environment", "config", "matmul_peak_gflops", "rows", "summary", "best"}`` where each row is a dict
        of :data:`bench.report.COLUMNS` (plus private ``_truth``/``_names``/``_pred`` arrays for the plots).

    Raises:
        UserError: missing dataset or label files, no trained model, a broken ensemble file.
    """
    paths, targets = held_out(cfg)
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
        for cell in mine:
            _start(cell, paths, targets, cfg)
        for r in range(cfg.rounds):
            for cell in mine:
                if cell.process is not None:
                    _round(cell, paths, cfg, first=r == 0)
        for cell in mine:
            _finish(cell, cfg, costs)
    if cfg.matmul_peak:  # again at the end: the best of both is the yardstick (load or clock changes lower one)
        peaks.append(matmul_peak_gflops(threads=cfg.threads))
    peak = max((p["peak"] for p in peaks if p), default=None)
    for cell in cells:
        if peak and cell.row.get("gflops"):
            cell.row["peak_fraction"] = cell.row["gflops"] / peak
    compare_to_reference(cells, cfg.min_f1_ratio)
    rows = []
    for cell in cells:
        if cell.probs is not None:
            cell.row["_pred"] = cell.probs.argmax(1)
        rows.append(cell.row)
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
    results = run_bench(cfg)
    results["held_out"] = {"images": len(paths), "sha256": fingerprint}
    rows = results["rows"]
    if all(r["status"].startswith(("skipped", "failed:")) for r in rows):
        raise UserError(f"no bench cell could run, no report written (first reason: {rows[0]['status']})")
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
