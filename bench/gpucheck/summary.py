"""The kit's summary: one result per check (passed / failed / skipped with its reason), written as
``summary.json`` and ``summary.md`` after every check, so a run cut short still leaves what it did."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from runtime.atomic import write_text

STATUSES = ("passed", "failed", "skipped")


@dataclasses.dataclass
class CheckResult:
    """The outcome of one check.

    Args:
        name: check name, e.g. ``train:resnet18_cpu:float16``.
        status: one of :data:`STATUSES`.
        reason: one line: what was seen (passed) or why it failed / was skipped.
        seconds: wall time of the check (0 for a skip).
        details: measured values (F1, agreement, img/s, ...), JSON-serialisable.
    """

    name: str
    status: str
    reason: str
    seconds: float = 0.0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status != "passed" and not self.reason.strip():
            raise ValueError(f"a {self.status} check needs a reason")
        self.reason = " ".join(self.reason.split())  # one line


def passed(name: str, reason: str, **details: Any) -> CheckResult:
    """A passed :class:`CheckResult` (seconds are filled in by the runner)."""
    return CheckResult(name, "passed", reason, details=details)


def failed(name: str, reason: str, **details: Any) -> CheckResult:
    """A failed :class:`CheckResult`."""
    return CheckResult(name, "failed", reason, details=details)


def skipped(name: str, reason: str) -> CheckResult:
    """A skipped :class:`CheckResult`; ``reason`` says why (never dropped silently)."""
    return CheckResult(name, "skipped", reason)


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None and tuples -> lists, recursively (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def counts(results: list[CheckResult]) -> dict[str, int]:
    """Number of results per status, every status present."""
    return {s: sum(r.status == s for r in results) for s in STATUSES}


def markdown(results: list[CheckResult], header: dict[str, Any]) -> str:
    """The short table: a header block (GPU, versions, date, duration) and one row per check."""
    n = counts(results)
    lines = ["# GPU check", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += [f"- result: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped", ""]
    lines += ["| check | status | s | what was seen / why |", "|---|---|---|---|"]
    for r in results:
        reason = r.reason.replace("|", "\\|")
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.0f} | {reason} |")
    return "\n".join(lines) + "\n"


def write_summary(out_dir: str | Path, results: list[CheckResult], header: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``summary.json`` (header, counts, every result) and ``summary.md`` into ``out_dir``, atomically.

    Returns:
        (json path, markdown path).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {**header, "counts": counts(results), "checks": [dataclasses.asdict(r) for r in results]}
    json_path, md_path = out / "summary.json", out / "summary.md"
    write_text(json_path, json.dumps(_json_safe(doc), indent=2, allow_nan=False) + "\n")
    write_text(md_path, markdown(results, header))
    return json_path, md_path


def exit_code(results: list[CheckResult]) -> int:
    """0 when nothing failed (skips are fine), 1 when a check failed."""
    return 1 if any(r.status == "failed" for r in results) else 0
