"""Bench figures as PNG bytes (matplotlib, Agg backend): Pareto scatter, latency bars, best cell's classes."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix, f1_score

from bench.rows import BenchRow

MARKERS = {"torch": "o", "onnx": "s", "openvino": "^", "trt": "D", "ensemble": "*"}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (throughput, F1) that no other point beats on both (higher is better), ordered
    by throughput."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best_f1 = [], -np.inf
    for i in order:
        if points[i][1] > best_f1:
            front.append(i)
            best_f1 = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def pareto_png(rows: list[BenchRow]) -> bytes | None:
    """micro-F1 vs engine-only img/s (log x): marker per engine, colour per backbone, failed-gate cells hollow,
    the Pareto front of the cells that passed, and each point numbered with a key beside the axes. ``None`` if
    no cell has both numbers."""
    measured = [r for r in rows if r.timed and r.f1_micro is not None]
    if not measured:
        return None
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(dict.fromkeys(r.backbone for r in measured))}
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    key = []
    for n, r in enumerate(measured, 1):
        passed = r.ok
        ax.scatter(
            r.img_per_s_engine,
            r.f1_micro,
            marker=MARKERS.get(r.engine, "o"),
            s=60,
            facecolors=colours[r.backbone] if passed else "none",
            edgecolors=colours[r.backbone],
        )
        # a number by the point and its name in a key beside the axes: long labels of close cells would overlap
        ax.annotate(str(n), (r.img_per_s_engine, r.f1_micro), fontsize=7, xytext=(4, 3), textcoords="offset points")
        key.append(f"{n}: {r.backbone} {r.cell} b{r.batch_size}")
    ok = [r for r in measured if r.ok]
    front = [ok[i] for i in pareto_front([(r.img_per_s_engine, r.f1_micro) for r in ok])]
    if front:  # a ring around each point of the front (visible even when the front is one point), joined
        xs, ys = [r.img_per_s_engine for r in front], [r.f1_micro for r in front]
        ax.plot(xs, ys, "k--", lw=1)
        ax.scatter(xs, ys, s=180, facecolors="none", edgecolors="k", linewidths=1, label="Pareto front")
    for b, c in colours.items():
        ax.scatter([], [], color=c, label=b)
    for e in dict.fromkeys(r.engine for r in measured):
        ax.scatter([], [], marker=MARKERS.get(e, "o"), color="grey", label=e)
    ax.set_xscale("log")
    ax.set_xlabel("throughput, engine only (img/s, log scale)")
    ax.set_ylabel("held-out micro-F1")
    ax.set_title("F1 vs throughput (hollow: failed the F1 gate)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.text(1.02, 1.0, "\n".join(key), transform=ax.transAxes, fontsize=7, va="top", ha="left", family="monospace")
    return _png(fig)


def latency_png(rows: list[BenchRow], latency_batch: int) -> bytes | None:
    """Horizontal bars of p50 latency with p90 and p99 marks, at ``latency_batch`` and at each cell's batch."""
    measured = [r for r in rows if r.p50_ms is not None]
    if not measured:
        return None
    panels = [("p50_ms", "p90_ms", "p99_ms", "chosen batch")]
    if latency_batch and any(r.lat1_p50_ms is not None for r in measured):
        panels.insert(0, ("lat1_p50_ms", "lat1_p90_ms", "lat1_p99_ms", f"batch {latency_batch}"))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5 * len(panels) + 2, 0.35 * len(measured) + 1.5), squeeze=False, sharey=True
    )
    sizes = sorted({r.batch_size for r in measured})
    if len(sizes) == 1:  # one chosen batch size: say it in the title, not on every row
        panels[-1] = (*panels[-1][:3], f"batch {sizes[0]}")
    labels = [f"{r.backbone} {r.cell}" + (f" b{r.batch_size}" if len(sizes) > 1 else "") for r in measured]
    y = np.arange(len(measured))
    for ax, (p50, p90, p99, title) in zip(axes[0], panels, strict=True):
        ax.barh(y, [getattr(r, p50) for r in measured], color="tab:blue", alpha=0.7, label="p50")
        ax.scatter([getattr(r, p90) for r in measured], y, marker="|", s=120, color="tab:orange", label="p90")
        ax.scatter([getattr(r, p99) for r in measured], y, marker="|", s=120, color="tab:red", label="p99")
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_xlabel("latency per batch (ms)")
        ax.set_title(f"latency at {title}")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()
    handles, names = axes[0][0].get_legend_handles_labels()  # one legend under the panels, clear of the bars
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=7)
    return _png(fig)


def per_class(truth: np.ndarray, pred: np.ndarray, names: list[str]) -> tuple[list[float], np.ndarray]:
    """Per-class F1 (scikit-learn, zero_division=0) and the confusion matrix (rows: true, columns: predicted)."""
    labels = list(range(len(names)))
    f1 = f1_score(truth, pred, labels=labels, average=None, zero_division=0)
    return [float(v) for v in f1], confusion_matrix(truth, pred, labels=labels)


def best_cell_png(truth: np.ndarray, pred: np.ndarray, names: list[str], title: str) -> bytes:
    """Per-class F1 bars beside the confusion matrix of one cell."""
    f1, cm = per_class(truth, pred, names)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1, 1.2]})
    a.barh(names, f1, color="tab:green")
    a.invert_yaxis()
    a.set_xlim(0, 1)
    a.set_xlabel("F1")
    a.set_title("per-class F1")
    ConfusionMatrixDisplay(cm, display_labels=names).plot(ax=b, colorbar=False, xticks_rotation=45)
    b.set_title("confusion matrix")
    fig.suptitle(title, fontsize=9)
    return _png(fig)
