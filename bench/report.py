"""Bench report folder: results.csv, results.json, report.md, a self-contained report.html and the plots.

The folder is written under a temporary name and renamed when complete, so a report is never half-written;
``<out>/latest`` then points at it.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.plots import best_cell_png, latency_png, pareto_png, per_class
from bench.rows import COLUMNS, BenchRow
from runtime.atomic import atomic_path


def _num(row: BenchRow, key: str, fmt: str) -> str:
    value = getattr(row, key)
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def markdown_table(rows: Sequence[BenchRow]) -> str:
    """GitHub-flavoured markdown table of the main columns; cells that did not run show their reason."""
    head = (
        "| backbone | cell | batch | micro-F1 | macro-F1 | agree | delta-F1 | img/s engine (min-max) | x torch | "
        "img/s e2e | e2e/engine | img/s decode (mode) | pipeline eff. | p50/p99 ms | p50/p99 ms b1 | RSS (GPU) MiB | "
        "GFLOP/s (% peak) | benchmark_app img/s (engine/it) | threads (engine/decode) | status |"
    )
    lines = [head, "|" + "---|" * 20]
    for r in rows:
        engine = (
            (
                f"{_num(r, 'img_per_s_engine', '.1f')} ({_num(r, 'img_per_s_engine_min', '.1f')}-"
                f"{_num(r, 'img_per_s_engine_max', '.1f')})"
            )
            if r.timed
            else "-"
        )
        flops = f"{_num(r, 'gflops', '.1f')} ({_num(r, 'peak_fraction', '.0%')})" if r.gflops else "-"
        status = r.status + (f" ({r.notes})" if r.notes else "")
        app = (
            f"{_num(r, 'img_per_s_benchmark_app', '.1f')} ({_num(r, 'vs_benchmark_app', '.2f')})"
            if r.img_per_s_benchmark_app
            else "-"
        )
        memory = _num(r, "peak_rss_mib", ".0f") + (f" ({r.gpu_mem_mib:.0f})" if r.gpu_mem_mib else "")
        lines.append(
            f"| {r.backbone} | {r.cell} | {r.batch_size} | {_num(r, 'f1_micro', '.4f')} | "
            f"{_num(r, 'f1_macro', '.4f')} | {_num(r, 'agreement', '.2%')} | {_num(r, 'delta_f1', '+.4f')} | "
            f"{engine} | {_num(r, 'speedup', '.2f')} | "
            f"{_num(r, 'img_per_s', '.1f')} | {_num(r, 'e2e_ratio', '.2f')} | "
            f"{_num(r, 'img_per_s_decode', '.1f')}{f' ({r.decode})' if r.decode else ''} | "
            f"{_num(r, 'pipeline_efficiency', '.2f')} | {_num(r, 'p50_ms', '.1f')}/"
            f"{_num(r, 'p99_ms', '.1f')} | {_num(r, 'lat1_p50_ms', '.2f')}/{_num(r, 'lat1_p99_ms', '.2f')} | "
            f"{memory} | {flops} | {app} | {_num(r, 'threads', '')}/{_num(r, 'decode_workers', '')} | {status} |"
        )
    return "\n".join(lines) + "\n"


def public_rows(rows: Sequence[BenchRow]) -> list[dict[str, Any]]:
    """:meth:`BenchRow.public` of each row (:data:`bench.rows.COLUMNS`, JSON-safe)."""
    return [r.public() for r in rows]


def environment_lines(results: dict[str, Any]) -> list[str]:
    """``key: value`` lines of the environment block, with the measured matmul peak."""
    lines = [f"{k}: {v}" for k, v in results["environment"].items()]
    peak = results.get("matmul_peak_gflops")
    threads = results.get("config", {}).get("threads") or "all"
    runs = [
        ", ".join(f"{k} {v:.1f}" for k, v in run.items() if k != "peak")
        for run in results.get("matmul_peak_runs") or []
        if run
    ]
    lines.append(
        f"FP32 matmul peak ({threads} threads, best of NumPy BLAS and ONNX Runtime sgemm at start and end of the "
        f"run: {'; '.join(runs)}): {peak:.1f} GFLOP/s"
        if peak
        else "matmul peak: not measured"
    )
    return lines


def _best_detail(results: dict[str, Any]) -> tuple[dict[str, Any] | None, bytes | None]:
    best = results.get("best")
    if best is None or best.truth is None or best.pred is None or best.class_names is None:
        return None, None
    f1, cm = per_class(best.truth, best.pred, best.class_names)
    title = f"best cell: {best.name}"
    detail = {"cell": title, "class_names": best.class_names, "per_class_f1": f1, "confusion_matrix": cm.tolist()}
    return detail, best_cell_png(best.truth, best.pred, best.class_names, title)


def render_markdown(results: dict[str, Any], rows: list[BenchRow], images: dict[str, bytes]) -> str:
    """report.md: environment, summary, regressions, the table and links to the plots."""
    parts = ["# Bench report", "", "```", *environment_lines(results), "```", "", f"**{results['summary']}**", ""]
    if results.get("baseline"):
        parts += [
            f"Baseline: `{results['baseline']}`: " + ("regressions:" if results["regressions"] else "no regression")
        ]
        parts += [f"- {line}" for line in results["regressions"]] + [""]
    parts += [markdown_table(rows)]
    parts += [f"![{name}]({name})" for name in images]
    return "\n".join(parts) + "\n"


def render_html(
    results: dict[str, Any], rows: list[BenchRow], images: dict[str, bytes], detail: dict[str, Any] | None
) -> str:
    """report.html with the plots inlined as data: URIs and no external reference (works offline, mails well)."""
    esc = html.escape
    table = (
        pd.DataFrame(public_rows(rows), columns=COLUMNS)
        .map(lambda v: "-" if v is None or v == "" or pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else v)
        .to_html(index=False)
    )
    body = [
        f"<h1>Bench report</h1><pre>{esc(chr(10).join(environment_lines(results)))}</pre>",
        f"<p class='summary'>{esc(results['summary'])}</p>",
    ]
    if results.get("baseline"):
        items = "".join(f"<li>{esc(line)}</li>" for line in results["regressions"]) or "<li>no regression</li>"
        body.append(f"<h2>Against baseline {esc(str(results['baseline']))}</h2><ul>{items}</ul>")
    body.append(f"<h2>Results</h2><div class='scroll'>{table}</div>")
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        title = esc(Path(name).stem.replace("_", " "))
        body.append(f"<h2>{title}</h2><img alt='{esc(name)}' src='data:image/png;base64,{data}'>")
    if detail:
        cells = "".join(
            f"<tr><td>{esc(n)}</td><td>{f:.4f}</td></tr>"
            for n, f in zip(detail["class_names"], detail["per_class_f1"], strict=True)
        )
        body.append(
            f"<h2>Per-class F1, {esc(detail['cell'])}</h2><table><tr><th>class</th><th>F1</th></tr>{cells}</table>"
        )
    style = (
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}.scroll{overflow-x:auto}"
        ".summary{font-weight:bold;font-size:15px}img{max-width:100%}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Bench report</title><style>{style}</style>"
        f"</head><body>{''.join(body)}</body></html>\n"
    )


def write_run(results: dict[str, Any], run_dir: str | Path) -> Path:
    """Write the report folder ``run_dir`` atomically and point ``<parent>/latest`` at it; returns ``run_dir``.

    Raises:
        runtime.errors.UserError: ``run_dir`` exists and is a folder this tool did not write.
    """
    run_dir = Path(run_dir)
    rows = results["rows"]
    images = {
        name: png
        for name, png in (
            ("pareto.png", pareto_png(rows)),
            ("latency.png", latency_png(rows, results["config"].get("latency_batch", 0))),
        )
        if png
    }
    detail, best_png = _best_detail(results)
    if best_png:
        images["best_cell.png"] = best_png
    public = {
        **{k: v for k, v in results.items() if k not in ("rows", "best")},
        "rows": public_rows(rows),
        "best": results["best"].public() if results.get("best") else None,
        "best_cell": detail,
    }
    with atomic_path(run_dir) as tmp:
        tmp.mkdir(parents=True)
        pd.DataFrame(public["rows"], columns=COLUMNS).to_csv(tmp / "results.csv", index=False)
        (tmp / "results.json").write_text(json.dumps(public, indent=2) + "\n", encoding="utf-8")
        for name, png in images.items():
            (tmp / name).write_bytes(png)
        (tmp / "report.md").write_text(render_markdown(results, rows, images), encoding="utf-8")
        (tmp / "report.html").write_text(render_html(results, rows, images, detail), encoding="utf-8")
    latest = run_dir.parent / "latest"
    if latest.is_symlink() or not latest.exists():
        tmp_link = run_dir.parent / f".latest.{os.getpid()}"
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(run_dir.name)
        os.replace(tmp_link, latest)
    return run_dir
