"""``python -m bench.chain`` (``make chain``): time and memory of the whole chain for each backbone config.

For each config in ``configs/models/`` asked for: train a checkpoint of its architecture for one epoch on a tiny
subset (``pretrained: false``: random weights are enough to measure; a frozen backbone's BatchNorm statistics
follow the data, ``update_bn_stats: true``, since with their initial values efficientnetv2_rw_m's logits reached
magnitudes where torch and ONNX Runtime differed by 8e8), export every CPU target, each target in its
own child process (``python -m export --targets <t>``, as a user would), then optionally predict and bench. Per
step it records the wall time, the child's peak resident memory (``ru_maxrss`` from ``wait4``, and the largest
step of the export's ``--memory-report``), the artifact size and the verification result. Output in ``--out``:
``chain.json``, ``chain.md`` (the table), ``logs/`` (every child's output) and ``memory/`` (per-step reports).

The dataset is generated in the contest layout (``bench.contest_data``) unless ``--data`` names one that is
already split (``train_.csv``, ``valid_.csv``). This is a benchmark: it runs for minutes per large backbone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from bench.chain_table import CPU_TARGETS, Row, artifact_path, markdown, row_line, size_mib, verdict, verify_keys
from export.config import target_file
from runtime.atomic import write_text
from runtime.errors import ArgumentParser, UserError, description, run_cli


def run_child(cmd: list[str], log: Path) -> tuple[int, float, float]:
    """Run ``cmd`` with output to ``log``; returns (exit status, wall seconds, peak resident MiB of the child).

    The peak comes from GNU ``/usr/bin/time`` where installed: a child forked from this process inherits this
    process's peak in its own ``ru_maxrss`` when it execs (Linux keeps the larger), while ``time`` is small.
    Elsewhere it is ``wait4``'s ``ru_maxrss``, which may include this process's peak. A child killed by signal N
    reads as status 128 + N through ``time`` (137: SIGKILL, the OOM killer's), -N without it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    gnu_time = Path("/usr/bin/time")
    measured = log.with_suffix(".maxrss")
    if gnu_time.is_file():
        cmd = [str(gnu_time), "-f", "%M", "-o", str(measured), *cmd]
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    rc = os.waitstatus_to_exitcode(status)
    peak_kib = float(usage.ru_maxrss)
    if gnu_time.is_file():
        lines = measured.read_text().split() if measured.is_file() else []
        peak_kib = float(lines[-1]) if lines and lines[-1].isdigit() else 0.0
    return rc, wall, peak_kib / 1024


def tiny_subset(data: Path, out: Path, train_per_class: int, valid_per_class: int) -> tuple[Path, Path]:
    """CSVs with the first ``train_per_class`` / ``valid_per_class`` rows of each class of ``train_.csv`` /
    ``valid_.csv``, written to ``out``."""
    paths = []
    for name, n in (("train_", train_per_class), ("valid_", valid_per_class)):
        source = data / f"{name}.csv"
        if not source.is_file():
            raise UserError(f"{source}: not found; split the dataset first (make split DATA={data})")
        df = pd.read_csv(source, dtype=str)
        path = (out / f"chain_{name}.csv").resolve()  # train reads a relative CSV name inside the dataset
        write_text(path, df.groupby("label", sort=False).head(n).to_csv(index=False))
        paths.append(path)
    return paths[0], paths[1]


@dataclasses.dataclass
class Chain:
    """Settings of one chain run (see ``main`` for their meaning)."""

    data: Path
    out: Path
    targets: list[str]
    verify_images: int = 64
    calibration_images: int = 256
    train_per_class: int = 2
    valid_per_class: int = 1
    predict_and_bench: bool = False
    one_process: bool = False
    reuse_checkpoints: bool = False

    @property
    def artifacts(self) -> Path:
        return self.out / "artifacts"

    def _py(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def train(self, model: str, train_csv: Path, valid_csv: Path) -> Row:
        cmd = self._py(
            "-m", "train", "--model", model, "--data", str(self.data), "--epochs", "1",
            "--set", "pretrained=false", "--set", "update_bn_stats=true", "--set", "cache_features=false",
            "--set", f"artifacts={self.artifacts}", "--set", f"runs={self.out / 'runs'}",
            "--set", f"train_csv={train_csv}", "--set", f"valid_csv={valid_csv}", "--set", "workers=0",
            "--set", "batch_size=8", "--set", "warmup_epochs=0",
        )  # fmt: skip
        log = self.out / "logs" / f"{model}.train.log"
        if self.reuse_checkpoints and (self.artifacts / model / "best.pt").is_file():
            return Row(model, "train (reused)", 0, 0.0, 0.0, size_mib(self.artifacts / model / "best.pt"))
        rc, wall, peak = run_child(cmd, log)
        size = size_mib(self.artifacts / model / "best.pt")
        return Row(model, "train", rc, wall, peak, size, "" if rc == 0 else _last_error(log), str(log))

    def export(self, model: str, target: str) -> Row:
        """Export ``target`` (or every target, comma-separated) in one child process."""
        report = self.out / "memory" / f"{model}.{target.replace(',', '+')}.json"
        report.parent.mkdir(parents=True, exist_ok=True)
        cmd = self._py(
            "-m", "export", "--model", model, "--data", str(self.data), "--targets", target,
            "--set", f"artifacts={self.artifacts}", "--set", f"verify_images={self.verify_images}",
            "--set", f"calibration_images={self.calibration_images}", "--memory-report", str(report),
            "--set", "accuracy_control=false",  # random weights: the gate judges noise (46 min ranking swin_base)
        )  # fmt: skip
        log = self.out / "logs" / f"{model}.{target.replace(',', '+')}.log"
        rc, wall, peak = run_child(cmd, log)
        if "," in target:
            return Row(model, "export (all targets)", rc, wall, peak, verify="" if rc == 0 else _last_error(log))
        with contextlib.suppress(OSError, ValueError, KeyError):  # resetting per-step peaks lowers ru_maxrss
            peak = max(peak, json.loads(report.read_text())["peak_rss_mib"])
        model_dir = self.artifacts / model
        judged = verdict(model_dir, target) if rc == 0 else _last_error(log)
        return Row(model, target, rc, wall, peak, size_mib(artifact_path(model_dir, target)), judged, str(log))

    def predict_bench(self, model: str) -> list[Row]:
        out = self.out / "predict" / f"{model}.csv"
        cmd = self._py(
            "-m", "runtime.predict", "--engine", "onnx", "--model", str(self.artifacts / model),
            "--data", str(self.data), "--out", str(out),
        )  # fmt: skip
        rows = [self._step(model, "predict", cmd)]
        cells = "[onnx, onnx:int8, onnx:fp16, openvino, openvino:int8]"
        cmd = self._py(
            "-m", "bench", "--set", f"data={self.data}", "--set", f"models=[{model}]", "--set", f"engines={cells}",
            "--set", f"artifacts={self.artifacts}", "--set", f"out={self.out / 'bench'}", "--set", "min_seconds=0.5",
            "--set", "rounds=1", "--set", "warmup=1", "--set", "matmul_peak=false", "--run", model,
        )  # fmt: skip
        rows.append(self._step(model, "bench", cmd))
        return rows

    def _step(self, model: str, step: str, cmd: list[str]) -> Row:
        log = self.out / "logs" / f"{model}.{step}.log"
        rc, wall, peak = run_child(cmd, log)
        return Row(model, step, rc, wall, peak, verify="" if rc == 0 else _last_error(log), log=str(log))


def _last_error(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1][:300]


def run_model(chain: Chain, model: str, train_csv: Path, valid_csv: Path) -> list[Row]:
    """Train, export every target (each in a child), then predict and bench when asked; prints each row."""
    rows = [chain.train(model, train_csv, valid_csv)]
    print(row_line(rows[-1]), file=sys.stderr)
    if rows[-1].rc != 0:
        return rows
    if chain.one_process:
        rows.append(chain.export(model, ",".join(chain.targets)))
        rows.extend(split_targets(chain, model, rows[-1]))
        for row in rows[-len(chain.targets) - 1 :]:
            print(row_line(row), file=sys.stderr)
    for target in [] if chain.one_process else chain.targets:
        rows.append(chain.export(model, target))
        print(row_line(rows[-1]), file=sys.stderr)
    if chain.predict_and_bench:
        rows.extend(chain.predict_bench(model))
        for row in rows[-2:]:
            print(row_line(row), file=sys.stderr)
    return rows


def split_targets(chain: Chain, model: str, whole: Row) -> list[Row]:
    """Per-target rows of a one-process export, from its memory report: the seconds and the peak of the steps
    that built and verified each target (the shared steps, loading, the FP32 export and the reference logits,
    stay on the ``export (all targets)`` row, whose peak is the process's)."""
    report = chain.out / "memory" / f"{model}.{'+'.join(chain.targets)}.json"
    try:
        steps = json.loads(report.read_text())["steps"]
    except (OSError, ValueError, KeyError):
        return []
    model_dir = chain.artifacts / model
    rows = []
    for target in chain.targets:
        files = [target_file(target), *verify_keys(target)]
        mine = [s for s in steps if any(s["step"].endswith(f) for f in files)]
        if not mine:
            continue
        wall = sum(s["seconds"] for s in mine)
        peak = max(s["peak_rss_mib"] for s in mine)
        size = size_mib(artifact_path(model_dir, target))
        rows.append(Row(model, target, whole.rc, wall, peak, size, verdict(model_dir, target), whole.log))
    return rows


def _dataset(data: str | None, out: Path) -> Path:
    if data:
        return Path(data)
    from bench.contest_data import generate
    from train.split import SplitConfig, split

    folder = generate(out / "data")
    split(SplitConfig(dataset=str(folder), valid_fraction=0.2, seed=0))
    return folder


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.chain``; exit status 2 when any step failed."""
    p = ArgumentParser(prog="python -m bench.chain", description=description(__doc__))
    p.add_argument("--models", required=True, help="comma-separated config names (configs/models/<name>.yaml)")
    p.add_argument("--data", help="split dataset in the contest layout (default: generate one under --out)")
    p.add_argument("--out", default="reports/chain", help="output folder (default: reports/chain)")
    p.add_argument("--targets", default=",".join(CPU_TARGETS), help="export targets, each in its own process")
    p.add_argument("--verify-images", type=int, default=64, help="validation images each artifact is checked on")
    p.add_argument("--calibration-images", type=int, default=256, help="INT8 calibration images (default 256)")
    p.add_argument("--predict-bench", action="store_true", help="also predict test.csv and bench each model")
    p.add_argument(
        "--one-process", action="store_true",
        help="export all targets in one process (one FP32 export; per-target rows from its per-step memory report)",
    )  # fmt: skip
    p.add_argument("--reuse-checkpoints", action="store_true", help="keep a best.pt already in --out (no training)")
    args = p.parse_args(argv)
    out = Path(args.out)
    targets = [t for t in args.targets.split(",") if t]
    if bad := [t for t in targets if t not in CPU_TARGETS]:
        raise UserError(f"--targets: {', '.join(bad)} not among the CPU targets {', '.join(CPU_TARGETS)}")
    models = [m for m in args.models.split(",") if m]
    from train.config import model_config_path

    for model in models:  # a typo fails here, before any step runs or an earlier chain.md is replaced
        model_config_path(model)
    data = _dataset(args.data, out)
    chain = Chain(
        data, out, targets, args.verify_images, args.calibration_images,
        predict_and_bench=args.predict_bench, one_process=args.one_process,
        reuse_checkpoints=args.reuse_checkpoints,
    )  # fmt: skip
    train_csv, valid_csv = tiny_subset(data, out, chain.train_per_class, chain.valid_per_class)
    rows: list[Row] = []
    for model in models:
        rows.extend(run_model(chain, model, train_csv, valid_csv))
        write_text(out / "chain.json", json.dumps([dataclasses.asdict(r) for r in rows], indent=2) + "\n")
    load = os.getloadavg()
    header = (
        f"Chain on {data} ({args.calibration_images} calibration, {args.verify_images} verification images), "
        f"{os.cpu_count()} CPUs, load at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    )
    write_text(out / "chain.md", markdown(rows, header))
    print(f"wrote {out / 'chain.md'} and {out / 'chain.json'}", file=sys.stderr)
    return 2 if any(r.rc != 0 for r in rows) else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
