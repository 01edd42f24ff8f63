"""The chain benchmark's table: a typed row per backbone x step, the artifact size and verification verdict of an
export target, and the markdown table (``bench.chain``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from export.config import TARGET_ARTIFACTS, target_file
from runtime.artifacts import ARTIFACT_FILES, CROSS_READS, VERIFY_RECORD, record_key

#: the CPU export targets, each built in its own process
CPU_TARGETS = tuple(TARGET_ARTIFACTS)


def verify_keys(target: str) -> list[str]:
    """The ``verify.json`` keys that judge a target's artifact: its own engine's, then any other engine reading
    the same file (OpenVINO reads the INT8 QDQ ONNX)."""
    rel = target_file(target)
    own = [record_key(rel, e) for (e, _), r in ARTIFACT_FILES.items() if r == rel and e != "torch"]
    return own + [record_key(rel, e) for r, e, _ in CROSS_READS if r == rel]


def artifact_path(model_dir: Path, target: str) -> Path:
    """What a target installs (an OpenVINO IR: its ``.xml``, which :func:`size_mib` counts with the ``.bin``)."""
    return model_dir / target_file(target)


@dataclasses.dataclass
class Row:
    """One step of the chain: wall seconds, peak resident MiB, artifact MiB, verification summary."""

    model: str
    step: str
    rc: int
    wall_s: float
    peak_rss_mib: float
    size_mib: float | None = None
    verify: str = ""
    log: str = ""


def size_mib(path: Path) -> float | None:
    """MiB of a file (an OpenVINO ``.xml`` with its ``.bin``) or of a folder's files; ``None`` when missing."""
    if path.suffix == ".xml" and path.is_file():
        return sum(p.stat().st_size for p in (path, path.with_suffix(".bin")) if p.is_file()) / 2**20
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
    return path.stat().st_size / 2**20 if path.is_file() else None


def verdict(model_dir: Path, target: str) -> str:
    try:
        record = json.loads((model_dir / VERIFY_RECORD).read_text())
    except (OSError, ValueError):
        return f"no {VERIFY_RECORD}"
    parts = []
    for key in verify_keys(target):
        r = record.get(key)
        engine = "OV " if "(openvino)" in key else ""
        if r is not None and "top1_agreement" not in r and r.get("error"):  # e.g. the reading engine crashed
            parts.append(f"{engine}FAIL {r['error']}")
        if r is None or "top1_agreement" not in r:
            continue
        parts.append(
            f"{engine}{'PASS' if r['passed'] else 'FAIL'} agree {r['top1_agreement']:.3f}, "
            f"F1 {r['candidate_f1_micro']:.3f}/{r['reference_f1_micro']:.3f}"
        )
    return "; ".join(parts) or "not verified"


def row_line(row: Row) -> str:
    status = "ok" if row.rc == 0 else f"rc {row.rc}"
    size = f", {row.size_mib:.1f} MiB" if row.size_mib is not None else ""
    peak = row.peak_rss_mib / 1024
    return f"{row.model} {row.step}: {status}, {row.wall_s:.0f} s, peak {peak:.2f} GiB{size} {row.verify}"


def markdown(rows: list[Row], header: str) -> str:
    """The chain table: one line per model x step."""
    lines = [
        header,
        "",
        "| backbone | step | status | wall s | peak RSS GiB | size MiB | verify: top-1 agreement, micro-F1 / FP32 |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        status = "ok" if r.rc == 0 else ("killed (OOM?)" if r.rc in (-9, 137) else f"rc {r.rc}")
        size = f"{r.size_mib:.1f}" if r.size_mib is not None else ""
        verdict = r.verify.replace("|", "/")
        lines.append(
            f"| {r.model} | {r.step} | {status} | {r.wall_s:.0f} | {r.peak_rss_mib / 1024:.2f} | {size} | {verdict} |"
        )
    return "\n".join(lines) + "\n"
