"""Regression gate: compare a run's cells with an earlier ``results.json``."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from bench.rows import BenchRow
from runtime.errors import UserError

#: columns compared with the baseline: (column, what it is)
GATED = (("img_per_s_engine", "engine-only img/s"), ("f1_micro", "micro-F1"))


def parse_tolerance(text: str) -> float:
    """``"5%"`` or ``"5"`` -> 0.05.

    Raises:
        UserError: not a percentage in [0, 100).
    """
    try:
        value = float(str(text).strip().rstrip("%"))
    except ValueError:
        value = -1.0
    if not 0 <= value < 100 or not math.isfinite(value):
        raise UserError(f"--fail-on-regression {text!r}: give a percentage such as 5%")
    return value / 100


def load_baseline(path: str | Path) -> dict[str, Any]:
    """An earlier run's ``results.json`` (``config``, ``held_out``, ...), its ``rows`` read back as
    :class:`bench.rows.BenchRow` s.

    Raises:
        UserError: missing, unreadable or not a bench results file.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"--baseline {path}: cannot read it as JSON ({type(exc).__name__})") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and {"backbone", "cell", "batch_size", "status"} <= set(r) for r in rows
    ):
        raise UserError(f"--baseline {path}: not a bench results.json (expected 'rows' of bench cells)")
    return {**data, "rows": [BenchRow.from_dict(r) for r in rows]}


def held_out_fingerprint(ids: list[str], labels: list[str]) -> str:
    """SHA-256 of the held-out set as scored: its ``image_id,label`` pairs in order (paths do not enter it)."""
    text = "\n".join(f"{i},{lab}" for i, lab in zip(ids, labels, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()


def check_same_held_out(baseline: dict[str, Any], fingerprint: str, images: int, path: str | Path) -> None:
    """Refuse a baseline measured on another held-out set: other ``image_id,label`` pairs (by
    :func:`held_out_fingerprint`; a baseline without one is checked by its image count).

    Raises:
        UserError: naming the difference.
    """
    old = baseline.get("held_out") or {}
    counts = {r.images for r in baseline["rows"] if r.images}
    old_images = old.get("images") or (sorted(counts)[0] if counts else None)
    if old_images is not None and old_images != images:
        raise UserError(f"--baseline {path}: measured on {old_images} held-out images, this run on {images}")
    if old.get("sha256") and old["sha256"] != fingerprint:
        data = (baseline.get("config") or {}).get("data")
        raise UserError(
            f"--baseline {path}: measured on other held-out images or labels (data {data!r}); compare runs on the "
            f"same held-out set"
        )


def regressions(rows: list[BenchRow], baseline: list[BenchRow], tolerance: float) -> list[str]:
    """One line per regression: a cell that ran in the baseline and now does not, or whose engine-only
    throughput or micro-F1 is below ``(1 - tolerance)`` x the baseline's. Cells only in one run are ignored."""
    before = {r.name: r for r in baseline if r.ok}
    found = []
    for row in rows:
        old = before.get(row.name)
        if old is None:
            continue
        if not row.ok:
            found.append(f"{row.name}: ran in the baseline, now {row.status}")
            continue
        for column, what in GATED:
            then, now = getattr(old, column), getattr(row, column) or 0
            if isinstance(then, (int, float)) and now < (1 - tolerance) * then:
                found.append(
                    f"{row.name}: {what} {now:.4g} vs baseline {then:.4g} ({now / then - 1:+.1%}, tolerance "
                    f"{tolerance:.0%})"
                )
    return found
