"""The kit's checks in the order they run, what each needs, the skip reasons known before running (missing
config, weights, packages, data), and the loop that runs them under the time budget."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.gpucheck import gpubench, launch, prediction, settings, training
from bench.gpucheck.proc import Runner
from bench.gpucheck.summary import CheckResult, failed, passed, skipped, write_summary
from runtime.errors import one_line


@dataclasses.dataclass
class Kit:
    """What the checks share: the runner, the folders, the data manifest, facts about the GPU stack (from the
    ``env`` check), the model folders of passed training runs and other outputs reused by later checks."""

    runner: Runner
    data: Path
    work: Path
    out: Path
    manifest: dict | None
    models_dir: Path = settings.MODELS_DIR
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    models: dict[str, Path] = dataclasses.field(default_factory=dict)
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def elpv(self) -> Path:
        """The kit's image set in the contest layout (``<data>/elpv``)."""
        return self.data / "elpv"


@dataclasses.dataclass(frozen=True)
class Check:
    """One check: its runner, what must have passed before it, a line for ``--plan``, the budget it needs to
    start, and ``static``: the skip reason known before anything runs (``None``: it can run)."""

    name: str
    run: Callable[[Kit], CheckResult]
    what: str
    needs: tuple[str, ...] = ()
    min_seconds: float = 20.0
    static: Callable[[Kit], str | None] = lambda kit: None


def package_facts() -> dict[str, Any]:
    """ONNX Runtime version and providers, and whether TensorRT and cuda-python import, without touching CUDA."""
    facts: dict[str, Any] = {"onnxruntime": "not installed", "onnxruntime_providers": []}
    try:
        import onnxruntime as ort

        facts.update(onnxruntime=ort.__version__, onnxruntime_providers=ort.get_available_providers())
    except ImportError:
        pass
    spec = importlib.util.find_spec
    facts["tensorrt"] = "installed" if spec("tensorrt") else "not installed"
    facts["cuda_python"] = bool(spec("cuda") and (spec("cuda.bindings") or spec("cuda.cudart")))
    return facts


def _facts(kit: Kit) -> dict[str, Any]:
    if "onnxruntime_providers" not in kit.facts:
        kit.facts.update({k: v for k, v in package_facts().items() if k not in kit.facts})
    return kit.facts


def no_data(kit: Kit) -> str | None:
    """Why the kit's data cannot be used, or None."""
    if kit.manifest is None:
        return f"{kit.data}/manifest.json not found: run `make gpu-data` on the CPU machine and carry {kit.data}"
    return None


def lite0_skip(kit: Kit) -> str | None:
    """Why the Lite0 runs cannot run: no config on this branch, or no weights in the kit's data folder."""
    cfg = settings.model_config(settings.LITE0_MODEL, kit.models_dir)
    if not cfg.is_file():
        return f"{cfg} not present"
    lite0 = (kit.manifest or {}).get("lite0", {})
    return no_data(kit) or (None if lite0.get("weights") else lite0.get("reason", "no Lite0 weights in the data"))


def provider_skip(provider: str) -> Callable[[Kit], str | None]:
    """Skip reason for an ONNX Runtime execution provider missing from the installed build."""

    def reason(kit: Kit) -> str | None:
        facts = _facts(kit)
        if provider in facts["onnxruntime_providers"]:
            return no_data(kit)
        return (f"onnxruntime {facts['onnxruntime']} has no {provider} (providers: "
                f"{', '.join(facts['onnxruntime_providers']) or 'none'}; the GPU build is onnxruntime-gpu, the 'gpu' extra)")  # fmt: skip

    return reason


def tensorrt_skip(kit: Kit) -> str | None:
    """Skip reason for the native TensorRT engine: TensorRT or cuda-python missing."""
    facts = _facts(kit)
    if facts["tensorrt"] == "not installed":
        return "tensorrt is not installed (the 'gpu' extra: tensorrt, cuda-python)"
    return None if facts["cuda_python"] else "cuda-python is not installed (the 'gpu' extra)"


def check_env(kit: Kit) -> CheckResult:
    """Run :mod:`bench.gpucheck.device_probe`; its facts go to ``kit.facts``; passed when the GPU's float32 /
    float16 / bfloat16 matrix products agree with the CPU's (relative error < 1e-3 / 1e-2 / 5e-2)."""
    done = kit.runner.run(kit.runner.python("-m", "bench.gpucheck.device_probe"), timeout=90)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return failed("env", f"python -m bench.gpucheck.device_probe failed: {done.error_line()}")
    kit.facts.update(json.loads(lines[-1]))
    f = kit.facts
    if not f.get("cuda_available"):
        return failed("env", f"torch {f.get('torch')} sees no GPU in a subprocess")
    errors = f["matmul_rel_error"]
    limits = {"float32": 1e-3, "float16": 1e-2, "bfloat16": 5e-2}
    ok = all(errors[k] < v for k, v in limits.items())
    seen = (f"{f['gpu']} (sm {f['capability']}, {f['memory_mib']} MiB) x {f['devices']}, torch {f['torch']}, CUDA "
            f"{f['cuda']}, cuDNN {f['cudnn']}, NCCL {f['nccl']}; matmul rel. error "
            + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))  # fmt: skip
    return (passed if ok else failed)("env", seen, **f)


def all_checks() -> list[Check]:
    """Every check, in running order (most important first: the budget may stop the last ones)."""
    first = settings.TRAIN_RUNS[0].name
    train = {r.name: r for r in settings.TRAIN_RUNS}
    lite0 = {n for n, r in train.items() if r.model == settings.LITE0_MODEL}

    def train_check(name: str) -> Check:
        run = train[name]
        sets = ", ".join(f"{k}={v}" for k, v in run.overrides.items())
        return Check(name, partial(training.check_train, run=run), f"python -m train --model {run.model} ({sets}, "
                     f"{settings.COMMON_TRAIN['epochs']} epochs on CUDA) vs the CPU reference F1",
                     static=lite0_skip if name in lite0 else no_data)  # fmt: skip

    agree = f"labels vs torch on the CPU >= {settings.MIN_AGREEMENT:.1%}"
    return [
        Check("env", check_env, "GPU, versions, float32/float16/bfloat16 matmul vs the CPU", min_seconds=5),
        train_check(first),
        Check("predict:torch-cuda-fp32", partial(prediction.check_predict, variant="fp32"),
              f"python -m runtime.predict --engine torch --device cuda: {agree}", (first,), static=no_data),
        Check("predict:torch-cuda-amp_float16", partial(prediction.check_predict, variant="amp_float16"),
              f"... --option amp=float16: {agree}", (first,), static=no_data),
        Check("predict:throughput", prediction.check_throughput, "engine-only img/s at batch "
              f"{','.join(map(str, settings.THROUGHPUT_BATCHES))}: FP32, float16, bfloat16 autocast", (first,),
              static=no_data),
        *(train_check(n) for n in list(train)[1:]),
        Check("bench:gpu-cells", gpubench.check_bench, "python -m bench cells torch:fp32, torch:fp16 on CUDA "
              "(GPU memory, GPU in the environment block)", (first,), 40, no_data),
        Check("train:resume", launch.check_resume, f"kill training after epoch {launch.KILL_AFTER_EPOCH}, then "
              "--resume (RESUME=1)", min_seconds=30, static=no_data),
        Check("train:torchrun", launch.check_torchrun, "torchrun --standalone --nproc_per_node=1 -m train",
              static=no_data),
        Check("nccl", launch.check_nccl, "torchrun -m bench.gpucheck.nccl_probe: NCCL collectives + a DDP step"),
        Check("predict:torch-cuda-amp_bfloat16", partial(prediction.check_predict, variant="amp_bfloat16"),
              f"... --option amp=bfloat16: {agree}", (first,), static=no_data),
        Check("onnxruntime:cuda-ep", partial(gpubench.check_engine, name="onnxruntime:cuda-ep", engine="onnx",
              device="cuda", targets="onnx", precision=None), f"export onnx, --engine onnx --device cuda: {agree}",
              (first,), 40, provider_skip("CUDAExecutionProvider")),
        Check("onnxruntime:tensorrt-ep", partial(gpubench.check_engine, name="onnxruntime:tensorrt-ep", engine="onnx",
              device="tensorrt", targets="onnx", precision=None), f"--engine onnx --device tensorrt: {agree}",
              (first,), 60, provider_skip("TensorrtExecutionProvider")),
        Check("tensorrt:native", partial(gpubench.check_engine, name="tensorrt:native", engine="trt", device="cuda",
              targets="trt", precision="fp16"), "export trt fp16, --engine trt: its F1 gate, agreement",
              (first,), 90, tensorrt_skip),
        Check("bench:torch-compile", gpubench.check_compile, "python -m bench cell torch+compile on CUDA "
              "(where torch.compile works)", (first,), 90, no_data),
    ]  # fmt: skip


def pre_skip(check: Check, kit: Kit, status: dict[str, str]) -> str | None:
    """Why ``check`` does not start: its static reason, a needed check that did not pass, or the time budget."""
    reason = check.static(kit)
    if reason:
        return reason
    for need in check.needs:
        if status.get(need) != "passed":
            return f"needs {need}, which {'was ' if status.get(need) == 'skipped' else ''}{status.get(need, 'did not run')}"
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
        print(f"[{i}/{len(checks)}] {check.name}: {result.status} ({result.seconds:.0f} s) {result.reason}",
              file=sys.stderr, flush=True)  # fmt: skip
    return results
