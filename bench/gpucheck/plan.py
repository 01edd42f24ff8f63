"""The kit's checks in running order, most important first (the time budget may stop the last ones): the
environment, the first GPU training (its checkpoint feeds prediction and the bench), prediction, the other
trainings, the bench, resume / torchrun / NCCL, then the deployment engines and ``torch.compile``."""

from __future__ import annotations

from functools import partial

from bench.gpucheck import gpubench, launch, prediction, settings, training
from bench.gpucheck.checks import Check
from bench.gpucheck.device_probe import check_env
from bench.gpucheck.skips import lite0_skip, no_data, provider_skip, tensorrt_skip

FIRST = settings.TRAIN_RUNS[0].name
AGREE = f"labels vs torch on the CPU >= {settings.MIN_AGREEMENT:.1%}"


def train_check(run: settings.TrainRun) -> Check:
    """The check of one :data:`settings.TRAIN_RUNS` entry."""
    sets = ", ".join(f"{k}={v}" for k, v in run.overrides.items())
    what = f"python -m train --model {run.model} ({sets}, {settings.COMMON_TRAIN['epochs']} epochs) vs CPU F1"
    static = lite0_skip if run.model == settings.LITE0_MODEL else no_data
    return Check(run.name, partial(training.check_train, run=run), what, static=static)


def predict_check(variant: str) -> Check:
    """``runtime.predict --engine torch`` on the GPU in ``variant`` (:data:`prediction.VARIANTS`) vs the CPU."""
    options = "".join(f" --option {o}" for o in prediction.VARIANTS[variant])
    what = f"python -m runtime.predict --engine torch --device cuda{options}: {AGREE}"
    return Check(f"predict:torch-cuda-{variant}", partial(prediction.check_predict, variant=variant), what,
                 (FIRST,), static=no_data)  # fmt: skip


def engine_checks() -> list[Check]:
    """ONNX Runtime's CUDA and TensorRT execution providers and the native TensorRT engine."""
    engine = gpubench.check_engine
    return [
        Check("onnxruntime:cuda-ep",
              partial(engine, name="onnxruntime:cuda-ep", engine="onnx", device="cuda", targets="onnx", precision=None),
              f"export onnx, then --engine onnx --device cuda: {AGREE}", (FIRST,), 40,
              provider_skip("CUDAExecutionProvider")),
        Check("onnxruntime:tensorrt-ep",
              partial(engine, name="onnxruntime:tensorrt-ep", engine="onnx", device="tensorrt", targets="onnx",
                      precision=None),
              f"export onnx, then --engine onnx --device tensorrt: {AGREE}", (FIRST,), 60,
              provider_skip("TensorrtExecutionProvider")),
        Check("tensorrt:native",
              partial(engine, name="tensorrt:native", engine="trt", device="cuda", targets="trt", precision="fp16"),
              "export trt fp16 (its F1 gate), then --engine trt: agreement", (FIRST,), 90, tensorrt_skip),
    ]  # fmt: skip


def all_checks() -> list[Check]:
    """Every check, in running order."""
    first, *other_runs = settings.TRAIN_RUNS
    batches = ",".join(map(str, settings.THROUGHPUT_BATCHES))
    return [
        Check("env", check_env, "GPU, versions, float32/float16/bfloat16 matmul vs the CPU", min_seconds=5),
        train_check(first),
        predict_check("fp32"),
        predict_check("amp_float16"),
        Check("predict:throughput", prediction.check_throughput,
              f"engine-only img/s at batch {batches}: FP32, float16 and bfloat16 autocast", (FIRST,), static=no_data),
        *(train_check(run) for run in other_runs),
        Check("bench:gpu-cells", gpubench.check_bench,
              "python -m bench cells torch:fp32, torch:fp16 on CUDA (GPU memory, GPU in the environment block)",
              (FIRST,), 40, no_data),
        Check("train:resume", launch.check_resume,
              f"kill training (SIGKILL) after epoch {launch.KILL_AFTER_EPOCH}, then --resume (RESUME=1)",
              min_seconds=30, static=no_data),
        Check("train:torchrun", launch.check_torchrun, "torchrun --standalone --nproc_per_node=1 -m train",
              static=no_data),
        Check("nccl", launch.check_nccl, "torchrun -m bench.gpucheck.nccl_probe: NCCL collectives and a DDP step"),
        predict_check("amp_bfloat16"),
        *engine_checks(),
        Check("bench:torch-compile", gpubench.check_compile,
              "python -m bench cell torch+compile on CUDA (where torch.compile works)", (FIRST,), 90, no_data),
    ]  # fmt: skip
