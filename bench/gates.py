"""Scoring the matrix against its FP32 references: agreement, delta-F1, speed-up, the F1 gate and the ranking."""

from __future__ import annotations

from bench.cells import Cell
from bench.config import CellSpec
from bench.rows import BenchRow
from runtime.metrics import f1_ratio, passes_f1_gate


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
            key=lambda c: (c.spec.engine != "torch", c.spec.compile, -c.row.f1_micro),
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
    done = [c for c in cells if c.row.ok]
    for cell in done:
        ref = reference_cell(cell, done)
        if ref is None:
            if cell.spec.precision != "fp32":
                cell.row.status = "failed gate: no FP32 cell of this backbone ran to verify its F1 against"
            continue
        cell.row.reference = ref.spec.label if ref.backbone == cell.backbone else f"{ref.backbone} {ref.spec.label}"
        cell.row.agreement = float((ref.probs.argmax(1) == cell.probs.argmax(1)).mean())
        cell.row.delta_f1 = cell.row.f1_micro - ref.row.f1_micro
        cell.row.f1_ratio = f1_ratio(cell.row.f1_micro, ref.row.f1_micro)
        same_batch = sorted(
            (
                c
                for c in done
                if c.backbone in (cell.backbone, cell.group or cell.backbone)
                and c.spec == CellSpec("torch")
                and c.batch_size == cell.batch_size
                and c.row.timed
            ),
            key=lambda c: c.backbone != (cell.group or cell.backbone),
        )
        if same_batch and cell.row.timed:
            cell.row.speedup = cell.row.img_per_s_engine / same_batch[0].row.img_per_s_engine
        if cell.spec.precision != "fp32" and not passes_f1_gate(cell.row.f1_micro, ref.row.f1_micro, min_f1_ratio):
            cell.row.status = (
                f"failed gate: micro-F1 {cell.row.f1_micro:.4f} < {min_f1_ratio:.0%} of "
                f"{cell.row.reference} {ref.row.f1_micro:.4f}"
            )


def best_cell(rows: list[BenchRow], min_f1_ratio: float) -> BenchRow | None:
    """The fastest (engine-only img/s) cell that ran, passed its gate and reached ``min_f1_ratio`` of its
    reference micro-F1; ``None`` if there is none."""
    ok = [r for r in rows if r.ok and r.timed and (r.f1_ratio or 0) >= min_f1_ratio]
    return max(ok, key=lambda r: r.img_per_s_engine or 0, default=None)


def summary_line(best: BenchRow | None, min_f1_ratio: float) -> str:
    """The report's one-line verdict."""
    if best is None:
        return f"fastest at >= {min_f1_ratio:.0%} of FP32 F1: no cell qualified"
    speed = f" ({best.speedup:.2f}x torch eager FP32)" if best.speedup else ""
    return (
        f"fastest at >= {min_f1_ratio:.0%} of FP32 F1: {best.backbone} {best.cell} batch {best.batch_size}: "
        f"{best.img_per_s_engine:.1f} img/s engine-only{speed}, {best.img_per_s:.1f} img/s end to end "
        f"({best.e2e_ratio:.2f}x engine-only), micro-F1 {best.f1_micro:.4f} "
        f"({best.f1_ratio:.1%} of {best.reference})"
    )
