"""The bench's typed row: one backbone x cell x batch size and what it measured.

The report (markdown, HTML, plots), the CSV/JSON writers and the regression gate all read :class:`BenchRow`;
``results.json`` holds :meth:`BenchRow.public` dicts and :meth:`BenchRow.from_dict` reads them back (a baseline).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

_PRIVATE = {"private": True}


@dataclasses.dataclass
class BenchRow:
    """One report row. Measured fields are ``None`` until measured (a skipped cell keeps them ``None``).

    Units: F1 and ratios in [0, 1]; ``img_per_s*`` images per second; ``*_ms`` milliseconds per batch (``lat1_*``
    at the latency batch); ``*_mib`` MiB; ``params_m`` millions; ``gmacs`` GMACs per image (all members and TTA
    views); ``gflops`` GFLOP/s achieved; ``peak_fraction`` of the measured matmul peak; ``cv`` the coefficient
    of variation of the engine-only rounds. ``decode`` is the decode mode (exact/fast), ``img_per_s_decode`` the
    decode-only rate (files -> preprocessed batches, a thread per core, no engine) and ``pipeline_efficiency``
    ``img_per_s / (1 / (1 / img_per_s_engine + 1 / img_per_s_decode))``: end to end against decode and inference
    one after the other. ``img_per_s_benchmark_app`` is OpenVINO's ``benchmark_app`` on the same IR, batch, hint
    and precision (OpenVINO cells, ``benchmark_app: true``), ``vs_benchmark_app`` the engine-only rate over it.

    The private fields (``truth``, ``pred``: int (N,) class indices of the held-out set; ``class_names``) feed the
    best cell's per-class plot and are not written to results.csv/json.
    """

    backbone: str
    cell: str
    engine: str = ""
    precision: str = ""
    tta: str = "none"
    batch_size: int = 0
    status: str = "ok"
    f1_micro: float | None = None
    f1_macro: float | None = None
    reference: str | None = None
    agreement: float | None = None
    delta_f1: float | None = None
    f1_ratio: float | None = None
    img_per_s_engine: float | None = None
    img_per_s_engine_min: float | None = None
    img_per_s_engine_max: float | None = None
    cv: float | None = None
    speedup: float | None = None
    img_per_s: float | None = None
    img_per_s_min: float | None = None
    img_per_s_max: float | None = None
    e2e_ratio: float | None = None
    decode: str | None = None
    img_per_s_decode: float | None = None
    pipeline_efficiency: float | None = None
    img_per_s_benchmark_app: float | None = None
    vs_benchmark_app: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    lat1_p50_ms: float | None = None
    lat1_p90_ms: float | None = None
    lat1_p99_ms: float | None = None
    peak_rss_mib: float | None = None
    gpu_mem_mib: float | None = None
    artifact_mib: float | None = None
    params_m: float | None = None
    gmacs: float | None = None
    gflops: float | None = None
    peak_fraction: float | None = None
    provider: str | None = None
    device: str | None = None
    threads: int | None = None
    decode_workers: int | None = None
    images: int | None = None
    runs: int | None = None
    notes: str = ""
    truth: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False, metadata=_PRIVATE)
    pred: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False, metadata=_PRIVATE)
    class_names: list[str] | None = dataclasses.field(default=None, repr=False, compare=False, metadata=_PRIVATE)

    @property
    def ok(self) -> bool:
        """The cell ran and passed its gate."""
        return self.status == "ok"

    @property
    def timed(self) -> bool:
        """Engine-only throughput was measured."""
        return self.img_per_s_engine is not None

    @property
    def name(self) -> str:
        """``<backbone> <cell> batch <n>``, as the report and the regression gate name a row."""
        return f"{self.backbone} {self.cell} batch {self.batch_size}"

    def public(self) -> dict[str, Any]:
        """The row as written to results.csv/json: :data:`COLUMNS` in order, JSON-safe (NaN/inf -> ``None``)."""
        return {c: _clean(getattr(self, c)) for c in COLUMNS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchRow:
        """A row read back from results.json (unknown keys of other versions ignored, missing ones ``None``)."""
        return cls(**{k: v for k, v in data.items() if k in COLUMNS})


#: report columns, in order (results.csv and results.json rows)
COLUMNS = [f.name for f in dataclasses.fields(BenchRow) if not f.metadata.get("private")]


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
