"""Bench and deployment-engine checks: ``python -m bench`` with torch cells on CUDA (FP32, float16 autocast; and
``torch.compile`` in a run of its own), ONNX Runtime's CUDA and TensorRT execution providers, and the native
TensorRT engine. The last three run only where their packages are present; otherwise they are skipped with the
reason (:mod:`bench.gpucheck.skips`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.gpucheck import settings
from bench.gpucheck.prediction import SOURCE_RUN, agreement, cpu_labels, predict_command
from bench.gpucheck.summary import CheckResult, failed, passed, skipped

if TYPE_CHECKING:
    from bench.gpucheck.checks import Kit

#: bench settings of the kit's runs: short timing, one shape per cell (the 80 held-out images in batches of 40,
#: no batch-1 latency), so a compiled cell compiles once
BENCH_SETTINGS = {
    "batch_sizes": "[40]",
    "latency_batch": 0,
    "min_seconds": 1.0,
    "rounds": 2,
    "warmup": 2,
    "matmul_peak": False,
}


#: the columns of each bench row kept in the check's details
ROW_KEYS = ("backbone", "cell", "status", "device", "f1_micro", "agreement", "img_per_s_engine", "gpu_mem_mib")


def bench_models(kit: Kit) -> dict[str, Path]:
    """Model name -> GPU-trained model folder: the demo CNN's source run and the first Lite0 run that passed."""
    models = {settings.DEMO_MODEL: kit.models[SOURCE_RUN]} if SOURCE_RUN in kit.models else {}
    lite0 = [r.name for r in settings.TRAIN_RUNS if r.model == settings.LITE0_MODEL and r.name in kit.models]
    if lite0:
        models[settings.LITE0_MODEL] = kit.models[lite0[0]]
    return models


def run_bench(kit: Kit, tag: str, models: dict[str, Path], engines: list[str]) -> tuple[dict | None, str]:
    """``python -m bench`` over ``models`` (linked into ``<work>/<tag>-artifacts/``) with ``engines`` on CUDA:
    (results.json as a dict, or None and the reason). report.md and results.json are copied to the out folder."""
    artifacts = kit.work / f"{tag}-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    for model, folder in models.items():
        link = artifacts / model
        if not link.exists():
            link.symlink_to(folder.resolve(), target_is_directory=True)
    sets = {
        **BENCH_SETTINGS,
        "device": kit.device,
        "data": str(kit.elpv),
        "models": f"[{','.join(models)}]",
        "engines": f"[{','.join(engines)}]",
        "artifacts": str(artifacts),
        "out": str(kit.work / "reports"),
    }
    cmd = kit.runner.python(
        "-m",
        "bench",
        "--set",
        *(f"{k}={json.dumps(v) if isinstance(v, bool) else v}" for k, v in sets.items()),
        "--run",
        tag,
    )
    done = kit.runner.run(cmd, timeout=240)
    report = kit.work / "reports" / tag
    if done.returncode != 0 or not (report / "results.json").is_file():
        return None, f"python -m bench failed: {done.error_line()}"
    shutil.copyfile(report / "report.md", kit.out / f"{tag}_report.md")
    shutil.copyfile(report / "results.json", kit.out / f"{tag}_results.json")
    return json.loads((report / "results.json").read_text()), ""


def cell_line(row: dict[str, Any]) -> str:
    """``<backbone> <cell> <img/s> img/s (GPU <MiB> MiB)`` or ``<backbone> <cell> <status>``."""
    if row.get("status") != "ok":
        return f"{row['backbone']} {row['cell']} {row['status']}"
    gpu = f"GPU {row['gpu_mem_mib']:.0f} MiB" if row.get("gpu_mem_mib") is not None else "no GPU memory recorded"
    return f"{row['backbone']} {row['cell']} {row['img_per_s_engine']:.0f} img/s ({gpu})"


def judge_bench(name: str, results: dict[str, Any], device: str = "cuda") -> CheckResult:
    """Passed when every cell ran on ``device`` and passed its gate and, on CUDA, the environment block names a GPU
    and every cell recorded its GPU memory."""
    env = results.get("environment", {})
    gpu = env.get("gpu") if env.get("gpu") not in (None, "none") else env.get("torch_cuda", "none")
    cuda = device.startswith("cuda")
    rows = results.get("rows", [])
    bad = [
        r
        for r in rows
        if r.get("status") != "ok"
        or not str(r.get("device", "")).startswith(device)
        or (cuda and r.get("gpu_mem_mib") is None)
    ]
    lines = "; ".join(cell_line(r) for r in rows)
    details = {"gpu": gpu, "rows": [{k: r.get(k) for k in ROW_KEYS} for r in rows]}
    no_gpu = cuda and gpu in (None, "none")
    if no_gpu or not rows or bad:
        why = "no GPU in the environment block" if no_gpu else "no cell ran" if not rows else lines
        return failed(name, why, **details)
    return passed(name, f"{lines}; environment GPU: {gpu}", **details)


def check_bench(kit: Kit) -> CheckResult:
    """The bench's GPU cells: torch FP32 and float16 autocast on CUDA, every GPU-trained backbone."""
    results, why = run_bench(kit, "bench", bench_models(kit), ["torch", "torch:fp16"])
    return failed("bench:gpu-cells", why) if results is None else judge_bench("bench:gpu-cells", results, kit.device)


def check_compile(kit: Kit) -> CheckResult:
    """A ``torch+compile`` cell on CUDA (its own bench run: compiling takes the longest); where torch.compile does
    not work on the machine the check is skipped with the bench's reason (the kit asks for it only where it works)."""
    name = "bench:torch-compile"
    results, why = run_bench(kit, "bench_compile", {settings.DEMO_MODEL: kit.models[SOURCE_RUN]}, ["torch+compile"])
    if results is None:  # the bench refuses a run in which no cell could run: here, the compiled cell
        return skipped(name, f"torch.compile does not work: {why}") if "no bench cell" in why else failed(name, why)
    rows = results.get("rows", [])
    if rows and rows[0].get("status") != "ok" and str(rows[0].get("status")).startswith(("skipped", "failed:")):
        return skipped(name, f"torch.compile does not work here: {rows[0]['status']}")
    return judge_bench(name, results, kit.device)


def export_model(kit: Kit, targets: str, precision: str | None = None) -> str:
    """``python -m export`` of the source checkpoint (in place, in its artifacts folder): "" or the error line."""
    folder = kit.models[SOURCE_RUN]
    extra = ["--precision", precision] if precision else []
    cmd = kit.runner.python(
        "-m",
        "export",
        "--model",
        folder.name,
        "--data",
        str(kit.elpv),
        "--targets",
        targets,
        *extra,
        "--set",
        f"artifacts={folder.parent}",
        f"trt_timing_cache={kit.work / 'trt_timing.cache'}",
    )
    done = kit.runner.run(cmd, timeout=240)
    return "" if done.returncode == 0 else f"python -m export --targets {targets} failed: {done.error_line()}"


def check_engine(kit: Kit, name: str, engine: str, device: str, targets: str, precision: str | None) -> CheckResult:
    """Export ``targets``, predict every kit image with ``engine`` on ``device`` and compare the labels with the
    torch CPU engine. FP32 artifacts must agree on :data:`settings.MIN_AGREEMENT`; an FP16 engine has passed the
    export's own F1 gate (99% of FP32) and its agreement is recorded."""
    why = export_model(kit, targets, precision)
    if why:
        return failed(name, why)
    reference, why = cpu_labels(kit)
    if reference is None:
        return failed(name, f"the CPU reference prediction failed: {why}")
    out = kit.work / f"predict-{name.replace(':', '-')}.csv"
    cmd = predict_command(kit, out, engine, device, ["--precision", precision] if precision else [])
    done = kit.runner.run(cmd, timeout=120)
    if done.returncode != 0:
        return failed(name, f"runtime.predict --engine {engine} --device {device} failed: {done.error_line()}")
    share, n = agreement(out, reference)
    gate = settings.MIN_AGREEMENT if (precision or "fp32") == "fp32" else 0.0
    verdict = passed if share >= gate else failed
    return verdict(
        name,
        f"labels agree with torch on the CPU on {share:.2%} of {n} images"
        + (f" (gate {gate:.1%})" if gate else " (FP16: the export's F1 gate applies)"),
        agreement=share,
        images=n,
    )
