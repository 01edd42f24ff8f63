"""Peak resident memory of each step of an export (``python -m export --memory-report FILE``).

Linux keeps a process's peak resident set (``VmHWM`` in ``/proc/self/status``); writing ``5`` to
``/proc/self/clear_refs`` resets it to the current resident set, so the peak of a step is read as ``VmHWM`` after
resetting it at the start of the step. Where the reset is not allowed, the step records the process peak so far
(``ru_maxrss``), marked ``"reset": false``. Resetting also lowers what ``getrusage`` reports for the process, so
only an export asked for this report resets it (the chain benchmark reads its children's ``ru_maxrss``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path

from runtime.atomic import write_text
from runtime.procmem import status_kib

_MIB = 2**20


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclasses.dataclass
class StepMeter:
    """Records, per named step: ``peak_rss_mib`` (the step's peak resident memory), ``rss_after_mib`` and
    ``seconds``, in the order the steps ran."""

    steps: list[dict[str, object]] = dataclasses.field(default_factory=list)
    path: Path | None = None  #: rewritten after every step, so a killed export leaves its steps so far

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Measure the body as step ``name`` (recorded also when it raises)."""
        reset = _reset_peak()
        start = time.perf_counter()
        try:
            yield
        finally:
            peak = status_kib("VmHWM") if reset else None
            if peak is None:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            after = status_kib("VmRSS") or 0
            self.steps.append(
                {
                    "step": name,
                    "peak_rss_mib": round(peak * 1024 / _MIB, 1),
                    "rss_after_mib": round(after * 1024 / _MIB, 1),
                    "seconds": round(time.perf_counter() - start, 2),
                    "reset": reset,
                }
            )
            if self.path is not None:
                self.write(self.path)

    def write(self, path: str | Path) -> None:
        """Write the steps as JSON (atomically) with the largest step peak."""
        peak = max((float(s["peak_rss_mib"]) for s in self.steps), default=0.0)  # type: ignore[arg-type]
        write_text(Path(path), json.dumps({"peak_rss_mib": peak, "steps": self.steps}, indent=2) + "\n")
