"""What the GPU kit runs and with which sizes and gates: one place, read by the data step and by the checks.

The CPU reference of a training run is recorded by ``make gpu-data`` with the same config, data and
:data:`COMMON_TRAIN` overrides (only the device differs), so that the GPU's F1 can be compared with it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

#: the kit's data folder (git-ignored under data/; named in the device call's ``carry``)
DATA_DIR = Path("data/gpucheck")
#: ELPV images per class (4 classes; the rarest class has 106 images) and the seeded splits
PER_CLASS = 100
TEST_FRACTION = 0.2  # held out: the bench's labelled images
VALID_FRACTION = 0.3  # of the rest: validation images, whose micro-F1 is compared with the CPU reference
SEED = 0

#: training overrides shared by the CPU reference and the GPU runs (data and output folders are added)
COMMON_TRAIN = {"epochs": 5, "seed": 0}
#: added on the GPU (the device is the kit's, ``cuda``); each run then sets its autocast dtype (amp_dtype)
GPU_TRAIN = {"workers": 4, "amp": True}
#: added for the CPU reference, which keeps the config's own AMP setting (CPU: bfloat16 autocast where native, else
#: FP32; the dtype used is recorded in the manifest)
CPU_TRAIN = {"device": "cpu", "workers": 2}

#: the demo CNN and the pretrained Lite0 (the latter's config comes from another branch: it may be absent)
DEMO_MODEL = "resnet18_cpu"
LITE0_MODEL = "efficientnet_lite0"
MODELS_DIR = Path("configs/models")

#: prediction: labels of torch on CUDA must agree with torch on the CPU on at least this share of images
MIN_AGREEMENT = 0.995
#: batch sizes of the engine-only throughput check (the best is reported beside batch 1)
THROUGHPUT_BATCHES = (1, 8, 32, 64, 128, 256)
#: seconds of the whole run after which no further check starts (the kit must finish within 6 minutes)
BUDGET_SECONDS = 330.0


@dataclasses.dataclass(frozen=True)
class TrainRun:
    """One GPU training check: a model config and its overrides (on top of :data:`COMMON_TRAIN`/:data:`GPU_TRAIN`)."""

    name: str
    model: str
    overrides: dict = dataclasses.field(default_factory=dict)


TRAIN_RUNS = (
    TrainRun(f"train:{DEMO_MODEL}:float16", DEMO_MODEL, {"amp_dtype": "float16"}),
    TrainRun(f"train:{DEMO_MODEL}:bfloat16", DEMO_MODEL, {"amp_dtype": "bfloat16"}),
    TrainRun(f"train:{DEMO_MODEL}:channels_last", DEMO_MODEL, {"amp_dtype": "float16", "channels_last": True}),
    TrainRun(f"train:{LITE0_MODEL}:float16", LITE0_MODEL, {"amp_dtype": "float16"}),
    TrainRun(f"train:{LITE0_MODEL}:bfloat16", LITE0_MODEL, {"amp_dtype": "bfloat16"}),
)


def model_config(model: str, models_dir: Path = MODELS_DIR) -> Path:
    """``configs/models/<model>.yaml`` (it may not exist)."""
    return models_dir / f"{model}.yaml"


def f1_tolerance(n_images: int) -> float:
    """Largest |GPU - CPU| validation micro-F1 still called comparable for ``n_images`` validation images.

    Two independent trainings scored on ``n`` images differ in accuracy with a standard deviation of at most
    ``sqrt(2 * p * (1 - p) / n) <= sqrt(0.5 / n)`` (binomial, p = 1/2 the worst case); the gate is two of those
    (about 95%): 0.144 for the kit's 96 validation images. It catches broken GPU training (chance-level or NaN),
    not small numeric differences.
    """
    if n_images < 1:
        raise ValueError("n_images must be >= 1")
    return 2 * math.sqrt(0.5 / n_images)
