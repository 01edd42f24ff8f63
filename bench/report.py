"""Bench report files: ``bench.csv`` (one row per cell) and ``bench.md`` (a table), written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from runtime.atomic import atomic_path, write_text

COLUMNS = [
    "backbone",
    "engine",
    "precision",
    "batch_size",
    "f1_micro",
    "f1_macro",
    "img_per_s",
    "img_per_s_engine",
    "images",
    "provider",
    "device",
    "threads",
    "status",
]


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """GitHub-flavoured markdown table of the main columns; failed cells show their reason."""
    head = (
        "| backbone | engine | precision | batch | micro-F1 | macro-F1 | img/s (end-to-end) | img/s (engine only) "
        "| status |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        num = r["status"] == "ok" or r["status"].startswith("failed gate")
        lines.append(
            f"| {r['backbone']} | {r['engine']} | {r['precision']} | {r['batch_size']} | "
            + (
                f"{r['f1_micro']:.4f} | {r['f1_macro']:.4f} | {r['img_per_s']:.1f} | {r['img_per_s_engine']:.1f} | "
                if num
                else "- | - | - | - | "
            )
            + f"{r['status']} |"
        )
    return "\n".join(lines) + "\n"


def write_reports(rows: Sequence[dict[str, Any]], out_dir: str | Path, header: str) -> tuple[Path, Path]:
    """Write ``bench.csv`` and ``bench.md`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    csv_path, md_path = out_dir / "bench.csv", out_dir / "bench.md"
    with atomic_path(csv_path, suffix=".csv") as tmp:
        pd.DataFrame(list(rows), columns=COLUMNS).to_csv(tmp, index=False)
    write_text(md_path, f"{header}\n\n{markdown_table(rows)}")
    return csv_path, md_path
