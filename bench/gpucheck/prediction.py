"""Prediction checks: ``python -m runtime.predict --engine torch --device cuda`` (FP32 and autocast) against the
same checkpoint on the CPU, and engine-only throughput at batch 1 and the best batch
(:mod:`bench.gpucheck.throughput`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from bench.gpucheck import settings
from bench.gpucheck.summary import CheckResult, failed, passed

if TYPE_CHECKING:
    from bench.gpucheck.checks import Kit

#: the training run whose checkpoint every prediction and bench check uses
SOURCE_RUN = settings.TRAIN_RUNS[0].name
#: variant -> engine options (``--option``) of the torch engine
VARIANTS = {"fp32": [], "amp_float16": ["amp=float16"], "amp_bfloat16": ["amp=bfloat16"]}
RATE = re.compile(r"([\d.]+) img/s end-to-end")


def predict_command(kit: Kit, out: Path, engine: str, device: str, extra: list[str] | None = None) -> list[str]:
    """``python -m runtime.predict --engine <engine> --device <device>`` of the source checkpoint's folder over every
    image of the kit (``--images``: train/ and test/), writing ``out``; ``extra``: more options."""
    model, images = str(kit.models[SOURCE_RUN]), str(kit.elpv)
    return kit.runner.python("-m", "runtime.predict", "--engine", engine, "--device", device, "--model", model,
                             "--images", images, "--out", str(out), "--batch-size", "64", "--no-progress",
                             *(extra or []))  # fmt: skip


def variant_options(variant: str) -> list[str]:
    """``--option`` arguments of a :data:`VARIANTS` entry."""
    return [a for o in VARIANTS[variant] for a in ("--option", o)]


def agreement(ours: Path, theirs: Path) -> tuple[float, int]:
    """(share of image ids with the same label in both prediction CSVs, number of ids compared)."""
    a, b = pd.read_csv(ours, dtype=str), pd.read_csv(theirs, dtype=str)
    both = a.merge(b, on="image_id", suffixes=("_a", "_b"))
    if both.empty or len(both) != len(a) or len(a) != len(b):
        raise ValueError(f"{ours} and {theirs} do not list the same images")
    return float((both["label_a"] == both["label_b"]).mean()), len(both)


def judge_agreement(name: str, share: float, n: int, minimum: float, rate: str) -> CheckResult:
    """Passed at ``share >= minimum``; the reason gives the share, the count of differing labels and the rate."""
    differ = round((1 - share) * n)
    seen = f"labels agree with torch on the CPU on {share:.2%} of {n} images ({differ} differ; gate {minimum:.1%})"
    verdict = passed if share >= minimum else failed
    return verdict(name, f"{seen}, {rate} end to end", agreement=share, images=n, differ=differ)


def cpu_labels(kit: Kit) -> tuple[Path | None, str]:
    """The CPU engine's predictions of the checkpoint (computed once): (CSV path, or None and the reason)."""
    if "cpu_labels" not in kit.outputs:
        out = kit.work / "predict-cpu.csv"
        done = kit.runner.run(predict_command(kit, out, "torch", "cpu"), timeout=120)
        kit.outputs["cpu_labels"] = (out, "") if done.returncode == 0 else (None, done.error_line())
    return kit.outputs["cpu_labels"]


def check_predict(kit: Kit, variant: str) -> CheckResult:
    """Torch engine on CUDA in ``variant`` vs the CPU engine: label agreement >= :data:`settings.MIN_AGREEMENT`."""
    name = f"predict:torch-cuda-{variant}"
    reference, why = cpu_labels(kit)
    if reference is None:
        return failed(name, f"the CPU reference prediction failed: {why}")
    out = kit.work / f"predict-cuda-{variant}.csv"
    done = kit.runner.run(predict_command(kit, out, "torch", kit.device, variant_options(variant)), timeout=120)
    if done.returncode != 0:
        return failed(name, f"python -m runtime.predict --device cuda failed: {done.error_line()}")
    rate = RATE.search(done.stderr)
    share, n = agreement(out, reference)
    return judge_agreement(name, share, n, settings.MIN_AGREEMENT, f"{rate.group(1)} img/s" if rate else "? img/s")


def judge_throughput(name: str, result: dict) -> CheckResult:
    """Passed when every variant has a positive img/s at every batch; the reason lists batch 1 and the best."""
    parts, ok = [], bool(result)
    for variant, r in result.items():
        rates = {int(b): v["img_per_s"] for b, v in r["batches"].items()}
        ok = ok and all(v > 0 for v in rates.values())
        best = r["best_batch"]
        memory = r.get("gpu_mem_reserved_mib")
        parts.append(
            f"{variant}: batch 1 {rates.get(1, float('nan')):.0f} img/s, best batch {best} {rates[best]:.0f} img/s"
            + (f", {memory:.0f} MiB" if memory is not None else "")
        )
    verdict = passed if ok else failed
    return verdict(name, "; ".join(parts) or "nothing measured", **result)


def check_throughput(kit: Kit) -> CheckResult:
    """Engine-only img/s of the checkpoint on CUDA at :data:`settings.THROUGHPUT_BATCHES`, FP32 and autocast."""
    name = "predict:throughput"
    out = kit.work / "throughput.json"
    batches = ",".join(map(str, settings.THROUGHPUT_BATCHES))
    cmd = kit.runner.python(
        "-m",
        "bench.gpucheck.throughput",
        "--model",
        str(kit.models[SOURCE_RUN]),
        "--images",
        str(kit.elpv),
        "--batches",
        batches,
        "--device",
        kit.device,
        "--out",
        str(out),
    )
    done = kit.runner.run(cmd, timeout=120)
    if done.returncode != 0 or not out.is_file():
        return failed(name, f"python -m bench.gpucheck.throughput failed: {done.error_line()}")
    return judge_throughput(name, json.loads(out.read_text()))
