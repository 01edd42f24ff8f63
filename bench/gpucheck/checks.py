"""What the kit's checks share (:class:`Kit`), what one check is (:class:`Check`), and the loop that runs them in
order under the time budget, skipping each one whose reason is known before it starts."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.gpucheck import settings
from bench.gpucheck.proc import Runner
from bench.gpucheck.summary import CheckResult, failed, skipped, write_summary
from runtime.errors import one_line


@dataclasses.dataclass
class Kit:
    """What the checks share: the runner, the folders, the data manifest, the device, facts about the GPU stack
    (from the ``env`` check), the model folders of passed training runs and other outputs reused by later checks."""

    runner: Runner
    data: Path
    work: Path
    out: Path
    manifest: dict | None
    models_dir: Path = settings.MODELS_DIR
    device: str = "cuda"  # where the GPU checks run; the tests use "cpu" to run the same code paths on a CPU
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    models: dict[str, Path] = dataclasses.field(default_factory=dict)
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def elpv(self) -> Path:
        """The kit's image set in the contest layout (``<data>/elpv``)."""
        return self.data / "elpv"


@dataclasses.dataclass(frozen=True)
class Check:
    """One check: its runner, a line for ``--plan``, what must have passed before it, the budget (seconds) it needs
    to start, and ``static``: the skip reason known before anything runs (``None``: it can run)."""

    name: str
    run: Callable[[Kit], CheckResult]
    what: str
    needs: tuple[str, ...] = ()
    min_seconds: float = 20.0
    static: Callable[[Kit], str | None] = lambda kit: None


def pre_skip(check: Check, kit: Kit, status: dict[str, str]) -> str | None:
    """Why ``check`` does not start: its static reason, a needed check that did not pass, or the time budget."""
    reason = check.static(kit)
    if reason:
        return reason
    for need in check.needs:
        state = status.get(need, "did not run")
        if state != "passed":
            return f"needs {need}, which {'was ' if state == 'skipped' else ''}{state}"
    left = kit.runner.remaining()
    if left < check.min_seconds:
        return f"time budget used up ({left:.0f} s left, this check needs {check.min_seconds:.0f} s)"
    return None


def run_checks(kit: Kit, checks: list[Check], header: dict[str, Any]) -> list[CheckResult]:
    """Run ``checks`` in order, rewriting the summary in ``kit.out`` after each; a crash of a check becomes its
    failure (with the exception in one line) and the run goes on."""
    results: list[CheckResult] = []
    status: dict[str, str] = {}
    start = time.monotonic()
    for i, check in enumerate(checks, 1):
        reason = pre_skip(check, kit, status)
        t0 = time.monotonic()
        if reason:
            result = skipped(check.name, reason)
        else:
            try:
                result = check.run(kit)
            except Exception as exc:  # a kit bug or an unexpected output must not end the run
                result = failed(check.name, f"{type(exc).__name__}: {one_line(exc)}")
            result.seconds = time.monotonic() - t0
        results.append(result)
        status[check.name] = result.status
        write_summary(kit.out, results, {**header, "duration_s": round(time.monotonic() - start, 1)})
        print(
            f"[{i}/{len(checks)}] {check.name}: {result.status} ({result.seconds:.0f} s) {result.reason}",
            file=sys.stderr,
            flush=True,
        )
    return results
