"""Subprocesses of the kit: each check runs the project's real entry points (``python -m train``, ...) in its own
process group, under a timeout taken from the run's time budget, with its output kept in ``steps.log``."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

#: lines of each stream kept in steps.log per command
LOG_TAIL_LINES = 120


@dataclasses.dataclass
class Finished:
    """A finished (or killed) command: exit code (negative: killed by that signal), output, wall seconds."""

    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    killed_on: str | None = None  # the stderr line that made the runner kill it (``kill_on``)
    budget_cut: bool = False  # its timeout was shortened to the end of the kit's time budget

    def error_line(self) -> str:
        """Why it failed, in one line: its last ``error:`` line, else the last line of stderr, else the exit code."""
        if self.timed_out:
            why = " (stopped at the end of the kit's time budget)" if self.budget_cut else ""
            return f"timed out after {self.seconds:.0f} s{why}"
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        return (errors or lines or [f"exit code {self.returncode}"])[-1][:300]


class Runner:
    """Runs commands from the repository root with the project on ``PYTHONPATH``, never past ``deadline``.

    Args:
        log_path: ``steps.log``: every command, its exit code and time, and the tail of its output.
        deadline: ``time.monotonic()`` value after which nothing may run.
    """

    def __init__(self, log_path: str | Path, deadline: float) -> None:
        self.log_path = Path(log_path)
        self.deadline = deadline
        root = str(Path.cwd())
        path = os.environ.get("PYTHONPATH", "")
        self.env = {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else ""), "PYTHONUNBUFFERED": "1"}

    def remaining(self) -> float:
        """Seconds left before the deadline (may be negative)."""
        return self.deadline - time.monotonic()

    def python(self, *args: str) -> list[str]:
        """``[this Python, *args]``: subprocesses use the interpreter the kit runs under."""
        return [sys.executable, *args]

    def run(self, cmd: Sequence[str], timeout: float, kill_on: str | None = None) -> Finished:
        """Run ``cmd`` for at most ``min(timeout, remaining())`` seconds; ``kill_on``: SIGKILL its whole process
        group as soon as a stderr line contains this text (a crash at a chosen moment).

        Returns:
            :class:`Finished` (a timeout or kill is recorded there, never raised).
        """
        limit = max(1.0, min(timeout, self.remaining()))
        start = time.monotonic()
        proc = subprocess.Popen(
            list(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            start_new_session=True,
            errors="replace",
        )
        out: list[str] = []
        err: list[str] = []
        trigger: list[str] = []

        def read(stream, sink: list[str], watch: bool) -> None:
            for line in stream:
                sink.append(line)
                if watch and kill_on and kill_on in line and not trigger:
                    trigger.append(line.strip())
                    _kill_group(proc)

        readers = [
            threading.Thread(target=read, args=(proc.stdout, out, False), daemon=True),
            threading.Thread(target=read, args=(proc.stderr, err, True), daemon=True),
        ]
        for t in readers:
            t.start()
        timed_out = False
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(proc)  # also ends what it left behind (loader workers, torchrun children)
        proc.wait()
        for t in readers:
            t.join(timeout=10)
        done = Finished(
            list(cmd),
            proc.returncode,
            "".join(out),
            "".join(err),
            time.monotonic() - start,
            timed_out,
            trigger[0] if trigger else None,
            timed_out and limit < timeout,
        )
        self._log(done)
        return done

    def _log(self, done: Finished) -> None:
        """Append the command, its outcome and the tail of its output to ``steps.log``."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        how = " (timed out)" if done.timed_out else f" (killed on: {done.killed_on})" if done.killed_on else ""
        parts = [f"$ {' '.join(done.cmd)}", f"exit {done.returncode} after {done.seconds:.1f} s{how}"]
        for name, text in (("stdout", done.stdout), ("stderr", done.stderr)):
            lines = text.splitlines()
            if lines:
                cut = f" (last {LOG_TAIL_LINES} of {len(lines)} lines)" if len(lines) > LOG_TAIL_LINES else ""
                parts += [f"--- {name}{cut}", *lines[-LOG_TAIL_LINES:]]
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write("\n".join(parts) + "\n\n")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group the runner started for ``proc`` (nothing else)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
