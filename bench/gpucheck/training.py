"""Training checks: a few epochs of a config on the GPU (loss finite, AMP dtype as asked, micro-F1 comparable
with the CPU reference), kill + ``--resume``, torchrun with one process, and NCCL through torchrun."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.gpucheck import settings
from bench.gpucheck.summary import CheckResult, failed, passed

if TYPE_CHECKING:
    from bench.gpucheck.checks import Kit
    from bench.gpucheck.proc import Finished

#: ``train/train.py``'s start line and per-epoch line (the kit reads what a user sees)
START = re.compile(r"^train \S+ \(.*\) on (\S+) x (\d+): .* input \d+x\d+, (\S+)\s*$")
EPOCH = re.compile(r"^epoch (\d+)/(\d+) lr \S+ \| train loss (\S+) .*\| valid loss (\S+) micro-F1 (\S+) macro-F1 (\S+)")
RESUMED = re.compile(r"^resuming \S+ from .* at epoch (\d+)")


@dataclass
class TrainLog:
    """What a training run printed: device, processes, autocast dtype, one tuple per epoch
    (epoch, train loss, valid loss, valid micro-F1, valid macro-F1), the epoch it resumed at, and whether it ended."""

    device: str | None = None
    world: int | None = None
    dtype: str | None = None
    epochs: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    resumed_at: int | None = None
    finished: bool = False

    @property
    def best_f1(self) -> float | None:
        """Best validation micro-F1 over the printed epochs (what ``best.pt`` keeps)."""
        return max((e[3] for e in self.epochs), default=None)


def parse_train_log(stderr: str) -> TrainLog:
    """Read :class:`TrainLog` from the stderr of ``python -m train``."""
    log = TrainLog()
    for line in stderr.splitlines():
        if m := START.match(line):
            log.device, log.world, log.dtype = m.group(1), int(m.group(2)), m.group(3)
        elif m := EPOCH.match(line):
            log.epochs.append((int(m.group(1)), *(float(m.group(i)) for i in (3, 4, 5, 6))))  # type: ignore[arg-type]
        elif m := RESUMED.match(line):
            log.resumed_at = int(m.group(1))
        elif line.startswith("best valid micro-F1"):
            log.finished = True
    return log


def train_overrides(kit: Kit, model: str, run_overrides: dict, tag: str, reference: bool = False) -> dict[str, Any]:
    """Every ``--set`` of a kit training of ``model``: :data:`settings.COMMON_TRAIN`, the device's keys
    (:data:`settings.GPU_TRAIN` on ``kit.device``, or :data:`settings.CPU_TRAIN` for the CPU ``reference``), the
    run's keys, the output folders under ``<work>/<tag>/`` and, for Lite0, the weights that ``make gpu-data``
    copied into the kit's data folder."""
    device_keys = settings.CPU_TRAIN if reference else {**settings.GPU_TRAIN, "device": kit.device}
    values = {
        **settings.COMMON_TRAIN,
        **device_keys,
        **run_overrides,
        "artifacts": str(kit.work / tag / "artifacts"),
        "runs": str(kit.work / tag / "runs"),
    }
    weights = (kit.manifest or {}).get("lite0", {}).get("weights")  # relative to the kit's data folder
    if weights and model == settings.LITE0_MODEL:
        values["pretrained_path"] = str(kit.data / weights)
    return values


def train_command(kit: Kit, model: str, overrides: dict[str, Any], launcher: list[str] | None = None) -> list[str]:
    """``python -m train --model configs/models/<model>.yaml --data <kit data> --set k=v ...`` (``launcher``: e.g.
    torchrun's module and arguments in front of ``-m train``)."""
    sets = [f"{k}={json.dumps(v) if isinstance(v, bool) else v}" for k, v in overrides.items()]
    cfg = str(settings.model_config(model, kit.models_dir))
    return kit.runner.python(*(launcher or []), "-m", "train", "--model", cfg, "--data", str(kit.elpv), "--set", *sets)


def judge_training(
    name: str,
    done: Finished,
    log: TrainLog,
    epochs: int,
    dtype: str,
    reference: dict | None,
    why_no_reference: str,
    tolerance: float,
    device: str = "cuda",
) -> CheckResult:
    """Passed when the run exited 0 on ``device`` in ``dtype``, printed ``epochs`` epochs with finite losses, and its
    best validation micro-F1 is within ``tolerance`` of the CPU reference (when there is one)."""
    if done.returncode != 0:
        return failed(name, f"python -m train failed: {done.error_line()}")
    if not log.device or not log.device.startswith(device):
        return failed(name, f"trained on {log.device or 'an unknown device'}, not {device}")
    if log.dtype != dtype:
        return failed(name, f"autocast dtype {log.dtype}, expected {dtype}")
    losses = [v for e in log.epochs for v in e[1:3]]
    if len(log.epochs) != epochs or not all(math.isfinite(v) for v in losses):
        return failed(name, f"{len(log.epochs)} of {epochs} epochs printed, losses {losses}")
    f1 = log.best_f1
    details = {"f1_micro": f1, "train_loss": [e[1] for e in log.epochs], "device": log.device, "dtype": log.dtype}
    seen = f"{epochs} epochs on {log.device} in {dtype}, losses finite, best valid micro-F1 {f1:.4f}"
    if reference is None:
        return passed(name, f"{seen}; F1 not compared: {why_no_reference}", **details)
    delta = f1 - reference["f1_micro"]
    details.update(cpu_f1_micro=reference["f1_micro"], delta=delta, tolerance=tolerance)
    verdict = passed if abs(delta) <= tolerance else failed
    rel = "<=" if abs(delta) <= tolerance else ">"
    return verdict(
        name, f"{seen} vs CPU {reference['f1_micro']:.4f} (|delta| {abs(delta):.3f} {rel} {tolerance:.3f})", **details
    )


def reference_for(kit: Kit, model: str) -> tuple[dict | None, str]:
    """(the CPU reference of ``model`` recorded by ``make gpu-data``, or ``None`` and why it cannot be used)."""
    from runtime.artifacts import file_sha256

    ref = (kit.manifest or {}).get("reference", {}).get(model)
    if not isinstance(ref, dict) or "f1_micro" not in ref:
        return None, (ref or {}).get("skipped", f"no CPU reference for {model} in the manifest; run make gpu-data")
    if (kit.manifest or {}).get("settings", {}).get("common_train") != settings.COMMON_TRAIN:
        return None, "the CPU reference was recorded with other training settings; run make gpu-data again"
    cfg = settings.model_config(model, kit.models_dir)
    if ref.get("config_sha256") != file_sha256(cfg):
        return None, f"{cfg} changed since the CPU reference was recorded; run make gpu-data again"
    return ref, ""


def check_train(kit: Kit, run: settings.TrainRun) -> CheckResult:
    """One :data:`settings.TRAIN_RUNS` entry on the GPU; its model folder is kept for the later checks."""
    overrides = train_overrides(kit, run.model, run.overrides, run.name.replace(":", "-"))
    done = kit.runner.run(train_command(kit, run.model, overrides), timeout=150)
    reference, why = reference_for(kit, run.model)
    epochs = int(overrides["epochs"])
    tolerance = settings.f1_tolerance(int((kit.manifest or {}).get("images", {}).get("valid", 96)))
    dtype = run.overrides["amp_dtype"] if overrides.get("amp") else "float32"
    result = judge_training(
        run.name,
        done,
        parse_train_log(done.stderr),
        epochs,
        dtype,
        reference,
        why,
        tolerance,
        kit.device,
    )
    if result.status == "passed":
        kit.models[run.name] = Path(overrides["artifacts"]) / run.model
    return result
