"""``python -m export --model <name>`` (``make export MODEL=<name> [TARGETS=...] [PRECISION=...]``).

Builds the requested targets of ``artifacts/<name>/best.pt`` in a private temporary folder, verifies each one
against the FP32 checkpoint on real validation images (``export.verify``), and only then renames it into
``artifacts/<name>/``. Targets:

    onnx        model.onnx            FP32, batch axis dynamic, artifact contract in metadata_props
    onnx-int8   model.int8.onnx       static INT8, QDQ, per-channel, calibrated on real training images
    onnx-fp16   model.fp16.onnx       FP16 weights, float32 I/O, LayerNorm/Softmax kept in FP32
    openvino    openvino/model.xml    OpenVINO IR, FP32
    trt         model.<prec>.engine   TensorRT 10/11 engine + .json sidecar (GPU only)

A target that fails its gate is not installed (unless ``allow_degraded``), the failure is recorded in
``verify.json``, the other targets still build, and the exit status is 2.

Memory is bounded by ``memory_budget_gib`` (``export.budget``): the verification batch and the INT8 calibration
stride are chosen from the FP32 graph's activation size, and an export that cannot fit even one image at a time is
refused in one line before it starts. A killed export's ``.export-*`` folder is removed by the next export
(``export.workdir``). ``--memory-report FILE`` records the peak resident memory of every step (``export.memory``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import multiprocessing
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from export.budget import ActivationSize, MemoryPlan, activation_size, available_bytes, plan_memory
from export.memory import StepMeter
from export.onnx import EXPORTERS, export_onnx, write_onnx_meta
from export.quantize import CALIBRATION_METHODS, QUANT_TYPES, convert_fp16, quantize_int8
from export.verify import Gates, collect_logits, judge, summary_line, update_record
from export.workdir import work_folder
from runtime.artifacts import ARTIFACT_FILES, file_sha256, fold_dirs
from runtime.config import add_set_argument, load_config, parse_overrides
from runtime.dataset import encode_labels, image_dir_for, image_paths, read_csv, require_dir
from runtime.engines import engine_class
from runtime.engines.pytorch import TorchEngine
from runtime.errors import ArgumentParser, UserError, description, one_line, positive_int, run_cli
from runtime.metadata import ModelMeta

TARGETS = ("onnx", "onnx-int8", "onnx-fp16", "openvino", "trt")


@dataclasses.dataclass
class ExportConfig:
    """Keys of ``configs/export.yaml``."""

    targets: list[str] = dataclasses.field(default_factory=lambda: ["onnx", "onnx-int8", "onnx-fp16", "openvino"])
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
            ("trt_precision", self.trt_precision in ("fp32", "fp16", "int8"), "must be fp32, fp16 or int8"),
            ("trt_batch", len(self.trt_batch) == 3 and 1 <= self.trt_batch[0] <= self.trt_batch[1] <= self.trt_batch[2],
             "must be [min, opt, max] with 1 <= min <= opt <= max"),
            ("verify_images", self.verify_images >= 1, "must be >= 1"),
            ("calibration_images", self.calibration_images >= 1, "must be >= 1"),
            ("min_agreement", 0 < self.min_agreement <= 1, "must be in (0, 1]"),
            ("min_f1_ratio", 0 < self.min_f1_ratio <= 1, "must be in (0, 1]"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("memory_budget_gib", self.memory_budget_gib > 0, "must be > 0"),
            ("opset", self.opset >= 17, "must be >= 17"),
        ]  # fmt: skip
        for key, ok, why in checks:
            if not ok:
                raise UserError(f"{source}: key {key!r} {why} (got {getattr(self, key)!r})")


def labelled_images(
    cfg: ExportConfig, csv_name: str, limit: int, class_names: list[str]
) -> tuple[list[Path], list[int]]:
    """The first ``limit`` images of ``<data>/<csv_name>`` and their class indices."""
    data = require_dir(cfg.data)
    df = read_csv(data / csv_name, require_label=True).head(limit)
    paths = image_paths(require_dir(image_dir_for(data, csv_name), "image folder"), df["image_id"].tolist())
    return paths, encode_labels(df["label"].tolist(), class_names, str(data / csv_name))


def verification_set(cfg: ExportConfig, class_names: list[str]) -> tuple[list[Path], list[int]]:
    """Labelled validation images used by every gate (``verify_csv``, first ``verify_images``)."""
    return labelled_images(cfg, cfg.verify_csv, cfg.verify_images, class_names)


def record_key(rel: str, engine: str) -> str:
    """``verify.json`` key of an artifact checked with ``engine``: the file name for the engine the file is made
    for (the first one listed in ``ARTIFACT_FILES``), ``"<file> (<engine>)"`` for another engine reading it."""
    primary = next(e for (e, _), r in ARTIFACT_FILES.items() if r == rel)
    return rel if engine == primary else f"{rel} ({engine})"


def installed_artifacts(model_dir: Path) -> list[tuple[str, str, str]]:
    """(relative file, engine, precision) for every exported artifact x engine that reads it in ``model_dir``."""
    return [
        (rel, engine, precision)
        for (engine, precision), rel in ARTIFACT_FILES.items()
        if engine != "torch" and (model_dir / rel).is_file()
    ]


class Exporter:
    """Builds, verifies and installs the targets of one model (see the module docstring)."""

    def __init__(self, name: str, cfg: ExportConfig, meter: StepMeter | None = None) -> None:
        self.name, self.cfg, self.meter = name, cfg, meter
        self.model_dir = Path(cfg.artifacts) / name
        checkpoint = self.model_dir / "best.pt"
        if not checkpoint.is_file():
            raise UserError(f"{checkpoint}: not found; run `make train MODEL={name}` first")
        with self._step("load checkpoint"):
            self.reference: TorchEngine | None = TorchEngine(checkpoint, threads=cfg.threads)
        self.meta = self.reference.meta
        self.meta.checkpoint_sha256 = file_sha256(checkpoint)
        self.param_bytes = sum(p.numel() * p.element_size() for p in self.reference.model.parameters())
        self._plan(ActivationSize(0, 0))  # weights alone too big: refused before minutes of exporting
        self.paths, self.targets = verification_set(cfg, self.meta.class_names)
        self.gates = Gates(cfg.min_agreement, cfg.min_f1_ratio)
        self.results: dict[str, dict[str, Any]] = {}
        self.failed: list[str] = []

    def _step(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self.meter.step(name) if self.meter is not None else contextlib.nullcontext()

    def _plan(self, activations: ActivationSize, calibration_images: int | None = None) -> MemoryPlan:
        cfg = self.cfg
        return plan_memory(
            self.param_bytes, activations, cfg.memory_budget_gib, cfg.batch_size,
            calibration_images or cfg.calibration_images, cfg.int8_method, available_bytes(),
        )  # fmt: skip

    def _prepare(self, fp32: Path) -> None:
        """Plan memory from the exported graph, then compute the reference logits and free the torch model."""
        self.activations = activation_size(fp32)
        self.plan = self._plan(self.activations)
        print(self.plan.describe(), file=sys.stderr)
        with self._step("reference logits (torch)"):
            assert self.reference is not None
            self.ref_logits = collect_logits(self.reference, self.paths, self.plan.batch_size)
        self.reference = None  # every later step reads ONNX: one copy of the weights fewer
        gc.collect()

    def _meta(self, **export: Any) -> ModelMeta:
        meta = ModelMeta.from_dict(self.meta.to_dict(), "checkpoint")
        meta.export = {**self.fp32_export, **export}
        return meta

    def _verify(self, rel: str, engine_name: str, artifact: Path, precision: str) -> dict[str, Any] | None:
        key = record_key(rel, engine_name)
        with self._step(f"verify {key}"):
            if key == rel:
                cand = engine_logits(engine_name, artifact, self.paths, self.plan.batch_size, self.cfg.threads)
            else:  # another engine's reading of the file runs in a child: a crash there cannot take the export down
                cand = self._logits_in_child(key, engine_name, artifact)
        if cand is None:
            return None
        result = judge(self.ref_logits, cand, self.targets, precision, self.gates)
        self.results[key] = result
        print(summary_line(key, result), file=sys.stderr)
        if result["passed"]:
            return result
        if key != rel:  # another engine reading the file: recorded (the bench marks that cell), not fatal
            print(f"WARN {key}: the artifact passed with its own engine but not with {engine_name}", file=sys.stderr)
            return None
        if self.cfg.allow_degraded:
            print(f"WARN {rel}: installed although it failed its gate (--allow-degraded)", file=sys.stderr)
            return result
        self.results[f"{rel} (rejected export)"] = self.results.pop(key)  # the installed file keeps its record
        self.failed.append(f"{rel}: {result['gate']} not met, not installed")
        return None

    def _logits_in_child(self, key: str, engine_name: str, artifact: Path) -> np.ndarray | None:
        args = (engine_name, artifact, self.paths, self.plan.batch_size, self.cfg.threads)
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            try:
                return pool.submit(engine_logits, *args).result()
            except BrokenProcessPool:
                reason = f"{engine_name} crashed reading the file (its process died)"
        self.results[key] = {"precision": "int8", "passed": False, "error": reason}
        print(f"WARN {key}: {reason}; recorded, the artifact stays installed", file=sys.stderr)
        return None

    @staticmethod
    def _install(tmp: Path, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_dir():
            shutil.rmtree(final)
        tmp.replace(final)

    def _onnx_target(self, rel: str, engine_name: str, build: Callable[[Path], ModelMeta], work: Path) -> None:
        tmp = work / Path(rel).name
        with self._step(f"build {rel}"):
            meta = build(tmp)
        result = self._verify(rel, engine_name, tmp, meta.export["precision"])
        if result is not None:
            meta.export["verification"] = result
            write_onnx_meta(tmp, meta)
            self._install(tmp, self.model_dir / rel)
            if meta.export["precision"] == "int8":  # OpenVINO also runs the QDQ model: check that path too
                self._verify(rel, "openvino", self.model_dir / rel, "int8")

    def run(self, targets: list[str]) -> None:
        """Build every target; failures are collected in ``self.failed`` (the others still build)."""
        cfg = self.cfg
        with work_folder(self.model_dir) as work:
            fp32 = work / "fp32.onnx"
            assert self.reference is not None
            with self._step("torch.onnx export"):
                export_onnx(self.reference.model, self.meta, fp32, cfg.opset, cfg.exporter, cfg.dynamic_hw)
            self.fp32_export = dict(self.meta.export)
            self._prepare(fp32)
            steps = {
                "onnx": lambda: self._onnx_target("model.onnx", "onnx", self._copy_fp32(fp32), work),
                "onnx-int8": lambda: self._onnx_target("model.int8.onnx", "onnx", self._int8(fp32), work),
                "onnx-fp16": lambda: self._onnx_target("model.fp16.onnx", "onnx", self._fp16(fp32), work),
                "openvino": lambda: self._openvino(fp32, work),
                "trt": lambda: self._trt(fp32, work),
            }
            for target in targets:
                try:
                    steps[target]()
                except UserError as exc:
                    self.failed.append(f"{target}: {one_line(exc)}")
        if self.results:
            update_record(self.model_dir, self.results)

    @functools.cached_property
    def calibration_paths(self) -> list[Path]:
        """The first ``calibration_images`` images of ``calibration_csv``, trimmed to a multiple of the calibration
        stride (read once, shared by every target); sets ``self.stride``."""
        cfg = self.cfg
        found = labelled_images(cfg, cfg.calibration_csv, cfg.calibration_images, self.meta.class_names)[0]
        plan = self._plan(self.activations, len(found)) if found else self.plan
        self.stride = plan.stride
        return found[: plan.calibration_images]

    def _copy_fp32(self, fp32: Path) -> Callable[[Path], ModelMeta]:
        def build(out: Path) -> ModelMeta:
            shutil.copyfile(fp32, out)
            return self._meta()

        return build

    def _int8(self, fp32: Path, symmetric: bool = False) -> Callable[[Path], ModelMeta]:
        def build(out: Path) -> ModelMeta:
            if self.plan.calibration_refusal:
                raise UserError(self.plan.calibration_refusal)
            settings = quantize_int8(
                fp32,
                out,
                self.calibration_paths,
                self.meta,
                method=self.cfg.int8_method,
                activation_type="int8" if symmetric else self.cfg.int8_activation_type,
                weight_type="int8" if symmetric else self.cfg.int8_weight_type,
                per_channel=self.cfg.int8_per_channel,
                symmetric_activations=symmetric,
                stride=self.stride,
                batch_size=self.stride,
            )
            meta = self._meta(precision="int8", quantization=settings)
            write_onnx_meta(out, meta)
            return meta

        return build

    def _fp16(self, fp32: Path) -> Callable[[Path], ModelMeta]:
        def build(out: Path) -> ModelMeta:
            settings = convert_fp16(fp32, out)
            meta = self._meta(precision="fp16", fp16=settings)
            write_onnx_meta(out, meta)
            return meta

        return build

    def _openvino(self, fp32: Path, work: Path) -> None:
        import openvino as ov

        from export.openvino import export_openvino

        meta = self._meta(format="openvino", precision="fp32", openvino=ov.get_version().split("-")[0])
        with self._step("build openvino/model.xml"):
            xml = export_openvino(fp32, work / "openvino" / "model.xml", meta)
        result = self._verify("openvino/model.xml", "openvino", xml, "fp32")
        if result is not None:
            meta.export["verification"] = result
            final = export_openvino(fp32, work / "openvino-final" / "model.xml", meta)
            self._install(final.parent, self.model_dir / "openvino")

    def _trt(self, fp32: Path, work: Path) -> None:
        from export.tensorrt import build_engine, require_tensorrt
        from runtime.engines.trt_checks import sidecar_path

        require_tensorrt()
        precision = self.cfg.trt_precision
        sources = {"fp32": fp32, "fp16": work / "trt.fp16.onnx", "int8-qdq": work / "trt.int8.onnx"}
        if precision == "fp16":
            self._fp16(fp32)(sources["fp16"])
        if precision == "int8":
            self._int8(fp32, symmetric=True)(sources["int8-qdq"])
        rel = ARTIFACT_FILES[("trt", precision)]
        tmp = work / Path(rel).name
        build_engine(
            sources, tmp, self._meta(), precision, self.cfg.trt_batch, self.cfg.trt_workspace_mib,
            self.cfg.trt_timing_cache, self.calibration_paths,
        )  # fmt: skip
        result = self._verify(rel, "trt", tmp, precision)
        if result is not None:
            self._install(sidecar_path(tmp), sidecar_path(self.model_dir / rel))
            self._install(tmp, self.model_dir / rel)


def engine_logits(
    engine_name: str, artifact: Path, paths: list[Path], batch_size: int, threads: int | None
) -> np.ndarray:
    """Logits (N, K) of ``artifact`` run by ``engine_name`` on ``paths`` (picklable: also runs in a child)."""
    with engine_class(engine_name)(artifact, threads=threads) as engine:
        return collect_logits(engine, paths, batch_size)


def export_model(
    name: str, cfg: ExportConfig, targets: list[str] | None = None, meter: StepMeter | None = None
) -> dict[str, dict[str, Any]]:
    """Export and verify ``artifacts/<name>``; returns the verification results by artifact. ``meter`` records
    the peak memory of each step.

    Raises:
        UserError: missing checkpoint or data, or any target failing (after all targets were tried).
    """
    targets = list(targets or cfg.targets)
    early: list[str] = []
    if "trt" in targets:  # say what is missing before minutes of exporting, and still build the rest
        from export.tensorrt import require_tensorrt

        try:
            require_tensorrt()
        except UserError as exc:
            early.append(f"trt: {one_line(exc)}")
            targets.remove("trt")
    exporter = Exporter(name, cfg, meter)
    exporter.failed.extend(early)
    if targets:
        exporter.run(targets)
    if exporter.failed:
        raise UserError("; ".join(exporter.failed))
    return exporter.results


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m export``."""
    p = ArgumentParser(prog="python -m export", description=description(__doc__))
    add_common_args(p)
    p.add_argument("--targets", help=f"comma-separated subset of {','.join(TARGETS)} (overrides the config)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), help="TensorRT precision (overrides trt_precision)")
    p.add_argument("--allow-degraded", action="store_true", help="install artifacts that fail their gate")
    p.add_argument(
        "--folds", nargs="?", const=0, type=positive_int, metavar="K",
        help="export every fold model fold<k>/ of the finished k-fold run instead (K: check the fold count)",
    )  # fmt: skip
    p.add_argument("--memory-report", metavar="FILE", help="write the peak resident memory of every step (JSON)")
    args = p.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
    cfg = config_from_args(
        args, targets=targets, trt_precision=args.precision, allow_degraded=True if args.allow_degraded else None
    )
    names = [args.model]
    if args.folds is not None:
        folds = fold_dirs(Path(cfg.artifacts) / args.model, args.folds or None)
        names = [f"{args.model}/{p.name}" for p in folds]
    failed = []
    meter = StepMeter(path=Path(args.memory_report)) if args.memory_report else None
    for name in names:  # every fold is tried, as every target is
        if len(names) > 1:
            print(f"== {name}", file=sys.stderr)
        try:
            export_model(name, cfg, meter=meter)
        except UserError as exc:
            if len(names) == 1:
                raise
            print(f"error: {name}: {one_line(exc)}", file=sys.stderr)
            failed.append(name)
        finally:
            if meter is not None:
                meter.write(args.memory_report)
    if failed:
        raise UserError(f"{len(failed)} of {len(names)} fold models did not export cleanly: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
