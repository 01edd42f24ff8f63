"""One bench cell in its own process: its engines stay open while the parent interleaves timing rounds.

A process per cell gives each cell its own peak resident memory (``ru_maxrss``), keeps one backend's threads and
allocations out of another's numbers, and turns a crash (out of memory, a segfault in a native library) into a
recorded failure instead of the end of the matrix. The parent talks to it through :class:`CellProcess`.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.environment import nvidia_smi
from runtime.errors import UserError, one_line
from runtime.members import Member
from runtime.pipeline import DecodePlan, stream_batches
from runtime.predictor import Predictor
from runtime.procmem import peak_rss_mib


class CellFailed(Exception):
    """The cell could not run; ``str()`` is the one-line reason recorded in the report."""


class CellRunner:
    """A :class:`runtime.predictor.Predictor` for one cell (one member, or several for an ensemble) and the ways
    of timing it.

    Args:
        members: the cell's members.
        tta: a :data:`runtime.tta.TTA_MODES` name.
        device, threads: passed to every engine.
        decode: ``exact``, ``fast`` or ``auto`` (:class:`runtime.predictor.Predictor`).

    Raises:
        UserError: an engine cannot open its artifact, or members have different class lists.
    """

    def __init__(
        self, members: Sequence[Member], tta: str, device: str, threads: int | None, decode: str = "exact"
    ) -> None:
        self.predictor = Predictor(members, tta, device, threads, decode=decode)
        self._batches: dict[int, list[np.ndarray]] = {}
        self._plans: dict[int, DecodePlan] = {}

    @property
    def class_names(self) -> list[str]:
        """Class names in probability-column order."""
        return self.predictor.class_names

    def plan(self, paths: Sequence[Path], batch_size: int, workers: int | None) -> DecodePlan:
        """The decode plan of the cell at ``batch_size`` (:meth:`Predictor.plan_decode`, as ``runtime.predict``
        makes it; ``workers`` ``None``: measured once per batch size, then reused by every round)."""
        if workers is not None:  # the override: nothing measured, nothing to keep
            return self.predictor.plan_decode(paths, batch_size, workers)
        if batch_size not in self._plans:
            self._plans[batch_size] = self.predictor.plan_decode(paths, batch_size)
        return self._plans[batch_size]

    def predict(self, paths: Sequence[Path], batch_size: int, workers: int | None) -> tuple[np.ndarray, float]:
        """End to end (files -> probabilities): float32 (N, K) weighted-mean probabilities and the wall seconds,
        with the decoder threads of :meth:`plan` (planning is not timed: it is done before the first call's clock).

        Raises:
            UserError: an image cannot be read.
        """
        plan = self.plan(paths, batch_size, workers)
        start = time.perf_counter()
        chunks = [probs for _, probs in self.predictor.stream(list(paths), batch_size, plan)]
        seconds = time.perf_counter() - start
        return np.concatenate(chunks).astype(np.float32), seconds

    def decode_only(self, paths: Sequence[Path], batch_size: int, workers: int) -> float:
        """Wall seconds to turn ``paths`` into preprocessed batches (every eval transform of the cell) with the
        prediction pipeline's decode pool of ``workers`` threads, no engine.

        Raises:
            UserError: an image cannot be read.
        """
        start = time.perf_counter()
        for meta, _ in self.predictor.groups:
            for _ in stream_batches(list(paths), meta, batch_size, workers, loader=self.predictor.loader):
                pass
        return time.perf_counter() - start

    def prepare(self, paths: Sequence[Path], batch_size: int) -> None:
        """Decode one batch of ``batch_size`` images for :meth:`timed_runs` (paths repeat if needed)."""
        self._batches[batch_size] = self.predictor.decode([paths[i % len(paths)] for i in range(batch_size)])

    def timed_runs(
        self, batch_size: int, seconds: float, warmup: int, min_runs: int = 5, pipelined: bool = True
    ) -> dict[str, list[float]]:
        """Time forward passes (every member, TTA views included) of the pre-decoded batch, for at least
        ``seconds`` and ``min_runs`` batches after ``warmup`` untimed ones.

        ``pipelined``: the batches stream through :meth:`Predictor.forward_stream`, so an engine that keeps
        several in flight (OpenVINO) does, as ``benchmark_app`` measures it; else one :meth:`Predictor.forward`
        after another (an unloaded engine: the latency a lone request sees).

        Returns:
            ``{"intervals": seconds between consecutive results (the throughput), "latencies": seconds from
            handing each batch to the engine to its result}``, both in seconds per batch; equal when not pipelined.
        """
        arrays = self._batches[batch_size]
        if not pipelined:
            for _ in range(warmup):
                self.predictor.forward(arrays)
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < min_runs or time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                self.predictor.forward(arrays)
                times.append(time.perf_counter() - t0)
            return {"intervals": times, "latencies": times}
        handed: list[float] = []
        state = {"stop": False}

        def feed() -> Any:
            while not state["stop"]:
                handed.append(time.perf_counter())
                yield arrays

        done: list[float] = []
        first = max(warmup, 1)  # results before the first timed one (an interval needs a result before it)
        for _ in self.predictor.forward_stream(feed()):
            done.append(time.perf_counter())
            timed = len(done) - first
            if timed >= min_runs and done[-1] - done[first - 1] >= seconds:
                state["stop"] = True  # the batches already in flight still come out (and are timed)
        intervals = [float(t) for t in np.diff(done[first - 1 :])]
        latencies = [d - h for h, d in zip(handed[first:], done[first:], strict=False)]
        return {"intervals": intervals, "latencies": latencies}

    def describe(self) -> dict[str, Any]:
        """What ran (:meth:`Predictor.describe`), the artifact size in bytes (every member; an OpenVINO ``.xml``
        counts with its ``.bin``), the artifact paths and the input (H, W)."""
        info = self.predictor.describe()
        info["artifact_bytes"] = sum(artifact_bytes(engine.artifact) for engine in self.predictor.engines)
        info["artifacts"] = [str(engine.artifact) for engine in self.predictor.engines]
        info["input_size"] = list(self.predictor.meta.input_size[-2:])
        return info

    def close(self) -> None:
        """Close every engine."""
        self.predictor.close()


def artifact_bytes(path: Path) -> int:
    """Size in bytes of an artifact file, with the weights file an OpenVINO ``.xml`` refers to."""
    size = path.stat().st_size
    if path.suffix == ".xml" and path.with_suffix(".bin").is_file():
        size += path.with_suffix(".bin").stat().st_size
    return size


def torch_cuda_peak_mib() -> float | None:
    """Peak GPU memory (MiB) torch's caching allocator reserved in this process (``torch.cuda.max_memory_reserved``,
    every device); ``None`` when torch is not loaded or never used CUDA here. Excludes the CUDA context itself."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return sum(torch.cuda.max_memory_reserved(i) for i in range(torch.cuda.device_count())) / 2**20


def gpu_memory_mib(pid: int) -> float | None:
    """GPU memory (MiB) held by process ``pid`` according to ``nvidia-smi``; ``None`` without a GPU."""
    out = nvidia_smi("--query-compute-apps=pid,used_memory") or ""
    rows = [line.split(",")[:2] for line in out.splitlines() if "," in line]
    used = [float(mib) for p, mib in rows if p.strip().isdigit() and int(p) == pid]
    return sum(used) if used else None


def serve(conn: Any, members: list[Member], tta: str, device: str, threads: int | None, decode: str = "exact") -> None:
    """Child process: open the cell's engines, then answer ``(command, args)`` messages until ``close``.

    Replies are ``("ok", value)`` or ``("error", one-line reason)``. Commands: ``predict``, ``prepare``,
    ``time``, ``decode`` (decode only), ``decode_workers`` (the threads of :meth:`CellRunner.plan`), ``close``
    (replies with the peak resident memory in MiB and :func:`torch_cuda_peak_mib`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends this process
    try:
        runner = CellRunner(members, tta, device, threads, decode)
    except Exception as exc:
        conn.send(("error", _reason(exc)))
        return
    conn.send(("ok", {**runner.describe(), "class_names": runner.class_names}))
    while True:
        try:
            command, args = conn.recv()
        except (EOFError, OSError):  # the parent is gone (interrupted or killed): end quietly
            runner.close()
            return
        try:
            if command == "close":
                runner.close()
                conn.send(("ok", (peak_rss_mib(), torch_cuda_peak_mib())))
                return
            value = {
                "predict": runner.predict,
                "prepare": runner.prepare,
                "time": runner.timed_runs,
                "decode": runner.decode_only,
                "decode_workers": lambda *a: runner.plan(*a).workers,
            }[command](*args)
            conn.send(("ok", value))
        except Exception as exc:
            conn.send(("error", _reason(exc)))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return one_line(exc)
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({Path(frame[0].filename).name}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {one_line(exc)}{where}"


class CellProcess:
    """Parent side of one cell's worker process (``multiprocessing`` spawn, so CUDA and thread pools start
    clean). Every method raises :class:`CellFailed` with the reason when the cell fails or its process dies."""

    def __init__(
        self, members: list[Member], tta: str, device: str, threads: int | None, decode: str = "exact"
    ) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child, members, tta, device, threads, decode), daemon=True)
        self.process.start()
        child.close()
        self.info: dict[str, Any] = self._reply()

    def _reply(self) -> Any:
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if status != "ok":
            self.stop()
            raise CellFailed(value)
        return value

    def _died(self) -> CellFailed:
        self.process.join(5)
        code = self.process.exitcode
        hint = " (killed: out of memory?)" if code is not None and code < 0 else ""
        return CellFailed(f"worker process died with exit code {code}{hint}")

    def call(self, command: str, *args: Any) -> Any:
        """Send ``command`` and wait for its value."""
        try:
            self.conn.send((command, args))
        except OSError:
            raise self._died() from None
        return self._reply()

    def close(self) -> tuple[float, float | None]:
        """Close the engines; returns (peak resident memory MiB, GPU memory MiB or None). GPU memory is the
        process's use by ``nvidia-smi`` (CUDA context included) or, where ``nvidia-smi`` does not list the process
        (no tool, or another PID namespace in a container), torch's peak reserved memory
        (:func:`torch_cuda_peak_mib`)."""
        gpu = gpu_memory_mib(self.process.pid) if self.process.pid else None
        rss, torch_peak = self.call("close")
        self.stop()
        return rss, gpu if gpu is not None else torch_peak

    def stop(self) -> None:
        """End the process (after ``close``, or at once on failure)."""
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
