"""Export one model: ``python -m export --model <name>`` (``make export MODEL=<name> [TARGETS=...]``,
command line in :mod:`export.cli`).

Builds the requested targets of ``artifacts/<name>/best.pt`` in a private temporary folder, verifies each one
against the FP32 checkpoint on real validation images (``export.verify``), and only then renames it into
``artifacts/<name>/``. Targets:

    onnx        model.onnx            FP32, batch axis dynamic, artifact contract in metadata_props
    onnx-int8   model.int8.onnx       static INT8, QDQ, per-channel, calibrated on real training images
    onnx-fp16   model.fp16.onnx       FP16 weights, float32 I/O, LayerNorm/Softmax kept in FP32
    openvino    openvino/model.xml    OpenVINO IR, FP32
    openvino-int8  openvino/model.int8.xml  OpenVINO IR quantized by NNCF on the same calibration images
                                          (``export.openvino_int8``); accuracy control when it misses its gate
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
import functools
import gc
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export.budget import ActivationSize, MemoryPlan, activation_size, available_bytes, plan_memory
from export.config import ExportConfig, target_file
from export.memory import StepMeter
from export.onnx import export_onnx, write_onnx_meta
from export.quantize import convert_fp16, quantize_int8
from export.verify import Gates, Reference, Verifier, check_decode, update_record
from export.workdir import work_folder
from runtime.artifacts import ARTIFACT_FILES, CROSS_READS, file_sha256, record_key
from runtime.dataset import labelled_indices
from runtime.decode import DECODE_RECORD_KEY
from runtime.engines.pytorch import TorchEngine
from runtime.errors import UserError, one_line
from runtime.metadata import ModelMeta

#: fewest images left after the gate's (or the calibration) images for NNCF's accuracy control to rank layers on
MIN_CONTROL_IMAGES = 64


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
        self.paths, self.targets = labelled_indices(cfg.data, cfg.verify_csv, self.meta.class_names, cfg.verify_images)
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
            reference = Reference.of(self.reference, self.paths, self.targets, self.plan.batch_size)
        with self._step("decode check (fast vs exact)"):
            self.results[DECODE_RECORD_KEY] = check_decode(self.reference, reference, self.plan.batch_size)
        self.verifier = Verifier(reference, self.gates, self.plan.batch_size, self.cfg.threads)
        self.reference = None  # every later step reads ONNX: one copy of the weights fewer
        gc.collect()

    def _meta(self, **export: Any) -> ModelMeta:
        meta = ModelMeta.from_dict(self.meta.to_dict(), "checkpoint")
        meta.export = {**self.fp32_export, **export}
        return meta

    def _verify(
        self, rel: str, engine_name: str, artifact: Path, precision: str, result: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Check ``artifact`` (or take the check already made, ``result``) and record it; the result when the
        artifact may be installed, else ``None`` (a failure of the file's own engine is collected in ``failed``)."""
        key = record_key(rel, engine_name)
        with self._step(f"verify {key}") if result is None else contextlib.nullcontext():
            try:  # another engine's reading of the file runs in a child: a crash there cannot take the export down
                if result is None:
                    result = self.verifier.check(artifact, engine_name, precision, key, isolated=key != rel)
            except UserError as exc:
                if key == rel:
                    raise
                self.results[key] = {"precision": precision, "passed": False, "error": one_line(exc)}
                print(f"WARN {key}: {one_line(exc)}; recorded, the artifact stays installed", file=sys.stderr)
                return None
        self.results[key] = result
        if result["passed"]:
            return result
        if key != rel:  # another engine reading the file: recorded, not fatal
            own = self.results.get(rel, {}).get("passed")
            how = "passed with its own engine but not" if own else "fails its gate with its own engine and"
            print(f"WARN {key}: the artifact {how} with {engine_name}", file=sys.stderr)
            return None
        if self.cfg.allow_degraded:
            print(f"WARN {rel}: installed although it failed its gate (--allow-degraded)", file=sys.stderr)
            return result
        self.results[f"{rel} (rejected export)"] = self.results.pop(key)  # the installed file keeps its record
        self.failed.append(f"{rel}: {result['gate']} not met, not installed")
        return None

    @staticmethod
    def _install(tmp: Path, final: Path) -> None:
        """Rename ``tmp`` (a file or folder; an OpenVINO ``.xml`` with its ``.bin``, the ``.bin`` first) to
        ``final``."""
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_dir():
            shutil.rmtree(final)
        if tmp.suffix == ".xml":
            tmp.with_suffix(".bin").replace(final.with_suffix(".bin"))
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
            for other in (e for r, e, _ in CROSS_READS if r == rel):  # another engine reading the file: recorded
                self._verify(rel, other, self.model_dir / rel, meta.export["precision"])

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
                "onnx": lambda: self._onnx_target(target_file("onnx"), "onnx", self._copy_fp32(fp32), work),
                "onnx-int8": lambda: self._onnx_target(target_file("onnx-int8"), "onnx", self._int8(fp32), work),
                "onnx-fp16": lambda: self._onnx_target(target_file("onnx-fp16"), "onnx", self._fp16(fp32), work),
                "openvino": lambda: self._openvino(fp32, work),
                "openvino-int8": lambda: self._openvino_int8(fp32, work),
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
    def calibration(self) -> tuple[list[Path], int]:
        """(the first ``calibration_images`` images of ``calibration_csv`` trimmed to a multiple of the calibration
        stride, the stride): read once, shared by every target."""
        cfg = self.cfg
        found = labelled_indices(cfg.data, cfg.calibration_csv, self.meta.class_names, cfg.calibration_images)[0]
        plan = self._plan(self.activations, len(found)) if found else self.plan
        return found[: plan.calibration_images], plan.stride

    def _copy_fp32(self, fp32: Path) -> Callable[[Path], ModelMeta]:
        def build(out: Path) -> ModelMeta:
            shutil.copyfile(fp32, out)
            return self._meta()

        return build

    def _int8(self, fp32: Path, symmetric: bool = False) -> Callable[[Path], ModelMeta]:
        def build(out: Path) -> ModelMeta:
            if self.plan.calibration_refusal:
                raise UserError(self.plan.calibration_refusal)
            paths, stride = self.calibration
            settings = quantize_int8(
                fp32,
                out,
                paths,
                self.meta,
                method=self.cfg.int8_method,
                activation_type="int8" if symmetric else self.cfg.int8_activation_type,
                weight_type="int8" if symmetric else self.cfg.int8_weight_type,
                per_channel=self.cfg.int8_per_channel,
                symmetric_activations=symmetric,
                stride=stride,
                batch_size=stride,
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

        from export.openvino import save_ir

        meta = self._meta(format="openvino", precision="fp32", openvino=ov.get_version().split("-")[0])
        rel = target_file("openvino")
        with self._step(f"build {rel}"):
            model = ov.convert_model(str(fp32))
            xml = save_ir(model, work / rel, meta)
        result = self._verify(rel, "openvino", xml, "fp32")
        if result is not None:
            meta.export["verification"] = result
            self._install(save_ir(model, xml, meta), self.model_dir / rel)

    def _openvino_int8(self, fp32: Path, work: Path) -> None:
        """NNCF INT8 of the FP32 IR on the calibration images; when it misses its gate, NNCF's accuracy control
        (layers reverted to float until the drop fits the gate) before the target is reported failed."""
        import openvino as ov

        from export.openvino import save_ir
        from export.openvino_int8 import quantize_ir, quantized_layers, require_nncf, restore_accuracy

        require_nncf()
        rel, paths = target_file("openvino-int8"), self.calibration[0]
        with self._step(f"build {rel}"):
            source = ov.convert_model(str(fp32))
            model, settings = quantize_ir(source, paths, self.meta)
        meta = self._meta(format="openvino", precision="int8", openvino=ov.get_version().split("-")[0])
        meta.export["quantization"] = settings
        xml = save_ir(model, work / rel, meta)
        with self._step(f"verify {rel}"):
            result = self.verifier.check(xml, "openvino", "int8", rel)
        if not result["passed"] and self.cfg.accuracy_control:  # also under --allow-degraded (the demo needs it)
            print(f"WARN {rel}: {result['gate']} not met; trying NNCF accuracy control", file=sys.stderr)
            valid, source_rows = self._control_images()
            with self._step(f"accuracy control {rel}"):
                model, control = restore_accuracy(
                    source, paths, valid, self.meta, settings, self.cfg.accuracy_control_agreement,
                    quantized_layers(model)[0],
                )  # fmt: skip
            control["accuracy_control"]["images"] = source_rows
            settings["plain_result"] = {k: result[k] for k in ("top1_agreement", "candidate_f1_micro", "passed")}
            settings["plain_int8_layers"] = settings["int8_layers"]
            settings.update(control, int8_layers=control["accuracy_control"]["int8_layers"])
            floats = control["accuracy_control"]["float_layers"]
            print(
                f"accuracy control {rel}: {settings['int8_layers']} layers INT8; {len(floats)} of the plain IR's "
                f"{settings['plain_int8_layers']} INT8 layers reverted to float ({', '.join(floats) or 'none'})",
                file=sys.stderr,
            )
            meta.export["quantization"] = settings
            xml = save_ir(model, xml, meta)
            with self._step(f"verify (accuracy control) {rel}"):
                result = self.verifier.check(xml, "openvino", "int8", rel)
        del source
        result = self._verify(rel, "openvino", xml, "int8", result=result)
        if result is not None:
            meta.export["verification"] = result
            self._install(save_ir(model, xml, meta), self.model_dir / rel)

    def _control_images(self) -> tuple[list[Path], str]:
        """The images NNCF's accuracy control ranks layers on, and where they come from; never the gate's own.
        First choice: up to ``accuracy_control_images`` rows of ``verify_csv`` after the verification images
        (held out, same distribution as the gate's); else those rows of ``calibration_csv`` after the calibration
        images; else the calibration images, when fewer than :data:`MIN_CONTROL_IMAGES` are left in either."""
        cfg = self.cfg
        for csv, start in ((cfg.verify_csv, len(self.paths)), (cfg.calibration_csv, len(self.calibration[0]))):
            paths = labelled_indices(cfg.data, csv, self.meta.class_names, start + cfg.accuracy_control_images)[0]
            if len(paths) - start >= MIN_CONTROL_IMAGES:
                return paths[start:], f"{csv} rows {start}-{len(paths) - 1}"
        count = len(self.calibration[0])
        return self.calibration[0], f"{cfg.calibration_csv} rows 0-{count - 1} (the calibration images)"

    def _trt(self, fp32: Path, work: Path) -> None:
        from export.tensorrt import build_engine, record_verification, require_tensorrt
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
            self.cfg.trt_timing_cache, self.calibration[0],
        )  # fmt: skip
        result = self._verify(rel, "trt", tmp, precision)
        if result is not None:
            record_verification(tmp, result)  # read by the runtime's degraded-artifact warning, as for ONNX
            self._install(sidecar_path(tmp), sidecar_path(self.model_dir / rel))
            self._install(tmp, self.model_dir / rel)


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
