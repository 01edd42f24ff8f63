"""``configs/export.yaml``: the export targets, the verification and calibration sets, gates and the memory budget;
and the command-line options ``export`` and ``export.verify`` share."""

from __future__ import annotations

import dataclasses
from typing import Any

from export.calibrate import CALIBRATION_METHODS
from export.onnx import EXPORTERS
from export.quantize import QUANT_TYPES
from runtime.artifacts import ARTIFACT_FILES, PRECISIONS
from runtime.config import add_set_argument, load_config, parse_overrides
from runtime.errors import ArgumentParser, UserError

#: export target -> (engine, precision) of the artifact it installs (the file: ``runtime.artifacts.ARTIFACT_FILES``);
#: ``trt`` builds ``model.<trt_precision>.engine``
TARGET_ARTIFACTS: dict[str, tuple[str, str]] = {
    "onnx": ("onnx", "fp32"),
    "onnx-int8": ("onnx", "int8"),
    "onnx-fp16": ("onnx", "fp16"),
    "openvino": ("openvino", "fp32"),
    "openvino-int8": ("openvino", "int8"),
}
TARGETS = (*TARGET_ARTIFACTS, "trt")


def target_file(target: str) -> str:
    """The file (relative to the model folder) an ONNX/OpenVINO target installs, e.g. ``model.int8.onnx``."""
    return ARTIFACT_FILES[TARGET_ARTIFACTS[target]]


def target_for(engine: str, precision: str) -> str | None:
    """The export target that builds the artifact ``engine`` reads at ``precision``; ``None`` for a pair without
    an artifact."""
    if engine == "trt":
        return "trt" if precision in PRECISIONS else None
    rel = ARTIFACT_FILES.get((engine, precision))
    return next((t for t in TARGET_ARTIFACTS if target_file(t) == rel), None)


@dataclasses.dataclass
class ExportConfig:
    """Keys of ``configs/export.yaml``."""

    targets: list[str] = dataclasses.field(
        default_factory=lambda: ["onnx", "onnx-int8", "onnx-fp16", "openvino", "openvino-int8"]
    )
    opset: int = 18
    exporter: str = "dynamo"
    dynamic_hw: bool = False
    data: str = "data/elpv"
    verify_csv: str = "valid_.csv"
    verify_images: int = 256
    calibration_csv: str = "train_.csv"
    calibration_images: int = 256
    int8_method: str = "minmax"
    int8_activation_type: str = "uint8"
    int8_weight_type: str = "int8"
    int8_per_channel: bool = True
    trt_precision: str = "fp16"
    trt_batch: list[int] = dataclasses.field(default_factory=lambda: [1, 32, 64])
    trt_workspace_mib: int = 4096
    trt_timing_cache: str | None = "artifacts/trt_timing.cache"
    accuracy_control: bool = True
    accuracy_control_images: int = 512
    accuracy_control_agreement: float = 1.0
    min_agreement: float = 0.999
    min_f1_ratio: float = 0.99
    allow_degraded: bool = False
    batch_size: int = 32
    memory_budget_gib: float = 5.0
    threads: int | None = None
    artifacts: str = "artifacts"

    def validate(self, source: str) -> None:
        """Raises UserError naming a bad key."""
        bad = [t for t in self.targets if t not in TARGETS]
        checks = [
            ("targets", not bad and bool(self.targets), f"must list targets from {TARGETS}"),
            ("exporter", self.exporter in EXPORTERS, f"must be one of {EXPORTERS}"),
            ("int8_method", self.int8_method in CALIBRATION_METHODS, f"must be one of {tuple(CALIBRATION_METHODS)}"),
            ("int8_activation_type", self.int8_activation_type in QUANT_TYPES, f"must be one of {tuple(QUANT_TYPES)}"),
            ("int8_weight_type", self.int8_weight_type in QUANT_TYPES, f"must be one of {tuple(QUANT_TYPES)}"),
            ("trt_precision", self.trt_precision in PRECISIONS, f"must be one of {PRECISIONS}"),
            ("trt_batch", len(self.trt_batch) == 3 and 1 <= self.trt_batch[0] <= self.trt_batch[1] <= self.trt_batch[2],
             "must be [min, opt, max] with 1 <= min <= opt <= max"),
            ("verify_images", self.verify_images >= 1, "must be >= 1"),
            ("calibration_images", self.calibration_images >= 1, "must be >= 1"),
            ("accuracy_control_images", self.accuracy_control_images >= 1, "must be >= 1"),
            ("accuracy_control_agreement", 0 < self.accuracy_control_agreement <= 1, "must be in (0, 1]"),
            ("min_agreement", 0 < self.min_agreement <= 1, "must be in (0, 1]"),
            ("min_f1_ratio", 0 < self.min_f1_ratio <= 1, "must be in (0, 1]"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("memory_budget_gib", self.memory_budget_gib > 0, "must be > 0"),
            ("opset", self.opset >= 17, "must be >= 17"),
        ]  # fmt: skip
        for key, ok, why in checks:
            if not ok:
                raise UserError(f"{source}: key {key!r} {why} (got {getattr(self, key)!r})")


def add_common_args(p: ArgumentParser) -> None:
    """``--model``, ``--data``, ``--config`` and ``--set``, shared by ``export`` and ``export.verify``."""
    p.add_argument("--model", required=True, help="model name: artifacts/<model>/best.pt is the reference")
    p.add_argument("--data", help="dataset folder with the verification CSV (overrides the config)")
    p.add_argument("--config", default="configs/export.yaml", help="YAML config (default: configs/export.yaml)")
    add_set_argument(p)


def config_from_args(args: Any, **overrides: Any) -> ExportConfig:
    """The export config from ``--config``, ``--set``, ``--data`` and the given ``overrides``."""
    values = parse_overrides(args.set)
    if args.data:
        values["data"] = args.data
    values.update({k: v for k, v in overrides.items() if v is not None})
    return load_config(ExportConfig, args.config, values)
