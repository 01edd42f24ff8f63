"""Training launch checks: a run killed mid-way and resumed (``--resume``, what ``make train RESUME=1`` passes),
torchrun with one process, and NCCL + DDP through torchrun (:mod:`bench.gpucheck.nccl_probe`)."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from bench.gpucheck import settings
from bench.gpucheck.summary import CheckResult, failed, passed
from bench.gpucheck.training import TrainLog, parse_train_log, train_command, train_overrides

if TYPE_CHECKING:
    from bench.gpucheck.checks import Kit
    from bench.gpucheck.proc import Finished

#: the resumed run is killed (SIGKILL, its whole process group) once this epoch has been printed
KILL_AFTER_EPOCH = 2
TORCHRUN = ["-m", "torch.distributed.run", "--standalone"]


def judge_resume(name: str, first: Finished, second: Finished, epochs: int, kill_after: int) -> CheckResult:
    """Passed when the first run was killed after epoch ``kill_after`` (before finishing) and the ``--resume`` run
    continued at ``kill_after + 1``, trained exactly the remaining epochs with finite losses and finished."""
    if first.killed_on is None:
        why = first.error_line() if first.returncode else "it finished before the kill"
        return failed(name, f"the first run was not killed after epoch {kill_after}: {why}")
    if second.returncode != 0:
        return failed(name, f"python -m train --resume failed: {second.error_line()}")
    log: TrainLog = parse_train_log(second.stderr)
    done = [e[0] for e in log.epochs]
    expected = list(range(kill_after + 1, epochs + 1))
    if log.resumed_at != kill_after + 1 or done != expected or not log.finished:
        return failed(name, f"resumed at epoch {log.resumed_at}, then trained epochs {done} (expected {expected})")
    if not all(math.isfinite(v) for e in log.epochs for v in e[1:3]):
        return failed(name, f"non-finite loss after resuming: {log.epochs}")
    return passed(
        name,
        f"killed (SIGKILL) after epoch {kill_after}/{epochs}; --resume continued at epoch "
        f"{log.resumed_at} and finished, best valid micro-F1 {log.best_f1:.4f}",
        resumed_at=log.resumed_at,
        epochs_after_resume=done,
    )


def check_resume(kit: Kit) -> CheckResult:
    """Kill a GPU training after :data:`KILL_AFTER_EPOCH`, then resume it (same command plus ``--resume``)."""
    overrides = train_overrides(kit, settings.DEMO_MODEL, {"amp_dtype": "float16"}, "train-resume")
    epochs = int(overrides["epochs"])
    cmd = train_command(kit, settings.DEMO_MODEL, overrides)
    first = kit.runner.run(cmd, timeout=120, kill_on=f"epoch {KILL_AFTER_EPOCH}/{epochs} ")
    second = kit.runner.run([*cmd, "--resume"], timeout=120)
    return judge_resume("train:resume", first, second, epochs, KILL_AFTER_EPOCH)


def check_torchrun(kit: Kit) -> CheckResult:
    """``torchrun --standalone --nproc_per_node=1 -m train`` on the GPU, 2 epochs."""
    name = "train:torchrun"
    overrides = train_overrides(kit, settings.DEMO_MODEL, {"amp_dtype": "float16", "epochs": 2}, "torchrun")
    done = kit.runner.run(train_command(kit, settings.DEMO_MODEL, overrides, [*TORCHRUN, "--nproc_per_node=1"]), 150)
    log = parse_train_log(done.stderr)
    if done.returncode != 0:
        return failed(name, f"torchrun -m train failed: {done.error_line()}")
    if not (log.device or "").startswith(kit.device) or log.world != 1 or len(log.epochs) != 2 or not log.finished:
        return failed(name, f"ran on {log.device} x {log.world}, {len(log.epochs)} of 2 epochs printed")
    seen = f"torchrun, 1 process on {log.device}: 2 epochs, best valid micro-F1 {log.best_f1:.4f}"
    return passed(name, f"{seen} (one process: the trainer opens no process group; NCCL: the nccl check)")


def judge_nccl(name: str, done: Finished, processes: int) -> CheckResult:
    """Passed when the probe exited 0 and its JSON line reports NCCL, every collective and a finite DDP loss."""
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return failed(name, f"torchrun -m bench.gpucheck.nccl_probe failed: {done.error_line()}")
    result = json.loads(lines[-1])
    ok = result.get("backend") == "nccl" and result.get("world_size") == processes
    ok = ok and result.get("all_reduce_ok") and result.get("all_gather_ok") and result.get("ddp_loss_finite")
    verdict = passed if ok else failed
    return verdict(
        name,
        f"backend {result.get('backend')}, {result.get('world_size')} process(es): all_reduce "
        f"{result.get('all_reduce_ok')}, all_gather_object {result.get('all_gather_ok')}, DDP step "
        f"with float16 autocast loss {result.get('ddp_loss')}",
        **result,
    )


def check_nccl(kit: Kit) -> CheckResult:
    """The NCCL probe under torchrun, one process per visible GPU."""
    processes = int(kit.facts.get("devices", 1))
    cmd = kit.runner.python(*TORCHRUN, f"--nproc_per_node={processes}", "-m", "bench.gpucheck.nccl_probe")
    return judge_nccl("nccl", kit.runner.run(cmd, timeout=90), processes)
