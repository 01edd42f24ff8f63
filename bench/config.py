"""``configs/bench.yaml``: the matrix (backbones x cells x batch sizes) and the timing method."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from runtime.artifacts import PRECISIONS
from runtime.decode import DECODE_CHOICES
from runtime.engines import ENGINE_NAMES
from runtime.errors import UserError
from runtime.members import Member
from runtime.tta import TTA_MODES


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """One column of the matrix: an engine at a precision, optionally compiled (torch) and with test-time
    augmentation.

    Written ``engine[:precision][+compile][@tta]`` in the config, e.g. ``onnx:int8``, ``openvino@hflip`` or
    ``torch:fp16+compile``. ``torch:fp16`` runs the FP32 checkpoint under ``torch.autocast`` in float16 (the torch
    engine's ``amp`` option); ``+compile`` (torch only) wraps the model in ``torch.compile``.
    """

    engine: str
    precision: str = "fp32"
    tta: str = "none"
    compile: bool = False

    @classmethod
    def parse(cls, text: str, source: str = "bench config") -> CellSpec:
        """Parse ``engine[:precision][+compile][@tta]``.

        Raises:
            UserError: unknown engine, precision, flag or TTA name, or ``+compile`` on another engine than torch.
        """
        head, at, tta = str(text).partition("@")
        head, plus, flag = head.partition("+")
        engine, colon, precision = head.partition(":")
        spec = cls(engine.strip(), precision.strip() or "fp32", tta.strip() or "none", bool(plus))
        empty = (at and not tta.strip()) or (colon and not precision.strip())  # "onnx@" or "onnx:" says nothing
        bad_flag = plus and (flag.strip() != "compile" or spec.engine != "torch")
        if (
            empty
            or bad_flag
            or spec.engine not in ENGINE_NAMES
            or spec.precision not in PRECISIONS
            or spec.tta not in TTA_MODES
        ):
            raise UserError(
                f"{source}: cell {text!r} is not engine[:precision][+compile][@tta] with engine in "
                f"{', '.join(ENGINE_NAMES)}, precision in {', '.join(PRECISIONS)}, tta in {', '.join(TTA_MODES)} "
                "(+compile: torch only)"
            )
        return spec

    @property
    def label(self) -> str:
        """``engine:precision`` plus ``+compile`` and ``@tta`` when on (the ``cell`` column of the report)."""
        return (
            f"{self.engine}:{self.precision}"
            + ("+compile" if self.compile else "")
            + (f"@{self.tta}" if self.tta != "none" else "")
        )

    def member(self, model: str) -> Member:
        """The engine request of this cell for ``model``:
        ``torch:fp16`` opens the FP32 checkpoint with the torch engine's ``amp: float16``; ``+compile`` sets its
        ``compile`` option."""
        options: dict = {"compile": True} if self.compile else {}
        precision = self.precision
        if self.engine == "torch" and precision == "fp16":
            options["amp"], precision = "float16", "fp32"
        return Member(model, self.engine, precision, options=options)


def parse_fold_entry(entry: str, source: str = "bench config") -> tuple[str, CellSpec]:
    """``folds:<model>[:engine[:precision]][@tta]`` (an ``ensembles`` entry) -> (model, cell spec; engine onnx
    by default).

    Raises:
        UserError: no model, or an unknown engine, precision or TTA name.
    """
    head, at, tta = entry.partition("@")
    _, model, *rest = head.split(":", 2)
    if not model:
        raise UserError(f"{source}: key 'ensembles': {entry!r} needs a model, folds:<model>[:engine]")
    return model, CellSpec.parse((rest[0] if rest else "onnx") + at + tta, f"{source}: {entry}")


@dataclasses.dataclass
class BenchConfig:
    """Keys of ``configs/bench.yaml`` (see the comments there)."""

    data: str = "data/elpv"
    csv: str = "test.csv"
    labels: str = "test_labels.csv"
    models: list[str] = dataclasses.field(default_factory=list)
    engines: list[str] = dataclasses.field(default_factory=lambda: ["torch", "onnx"])  # engine[:precision][@tta]
    # ensemble cells: YAML files (runtime.predict --ensemble format) or folds:<model>[:engine[:precision]], each [@tta]
    ensembles: list[str] = dataclasses.field(default_factory=list)
    batch_sizes: list[int] = dataclasses.field(default_factory=lambda: [32])
    latency_batch: int = 1  # latency is also measured at this batch size (0: off)
    threads: int | None = None
    workers: int | None = None  # decoder threads end to end (None: measured per cell, as runtime.predict does)
    min_seconds: float = 3.0  # engine-only timing per cell and batch size, split over the rounds
    rounds: int = 3  # interleaved repeats: every cell is timed once per round
    warmup: int = 3  # untimed runs before timing
    cv_warn: float = 0.05  # warn when the rounds' throughput varies more than this (coefficient of variation)
    min_f1_ratio: float = 0.99
    build_missing: bool = False  # export artifacts that a requested cell needs and that do not exist yet
    export_config: str = "configs/export.yaml"
    matmul_peak: bool = True  # measure this machine's FP32 matmul GFLOP/s for the GFLOP/s fraction
    artifacts: str = "artifacts"
    out: str = "reports"
    device: str = "cpu"  # where torch and onnx cells run: cpu or cuda[:N] (trt cells always run on a GPU)
    benchmark_app: bool = True  # also time each OpenVINO cell's IR with OpenVINO's benchmark_app (vs_benchmark_app)
    decode: str = "auto"  # exact, fast or auto (runtime.predict --decode, its default): how every cell decodes

    def validate(self, source: str) -> None:
        """Raises UserError naming a bad key."""
        if self.device != "cpu" and not (self.device == "cuda" or self.device.startswith("cuda:")):
            raise UserError(f"{source}: key 'device' must be cpu or cuda[:N], got {self.device!r}")
        if self.workers is not None and self.workers < 1:
            raise UserError(f"{source}: key 'workers' must be >= 1 or null (measured), got {self.workers}")
        if self.decode not in DECODE_CHOICES:
            raise UserError(f"{source}: key 'decode' must be one of {', '.join(DECODE_CHOICES)}, got {self.decode!r}")
        for text in self.engines:
            CellSpec.parse(text, f"{source}: key 'engines'")
        if not self.engines and not self.ensembles:
            raise UserError(f"{source}: key 'engines' (or 'ensembles') must list at least one cell")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserError(f"{source}: key 'batch_sizes' must list sizes >= 1")
        if self.latency_batch < 0:
            raise UserError(f"{source}: key 'latency_batch' must be >= 0")
        if self.min_seconds <= 0 or self.rounds < 1 or self.warmup < 0:
            raise UserError(f"{source}: 'min_seconds' must be > 0, 'rounds' >= 1 and 'warmup' >= 0")
        if not 0 < self.min_f1_ratio <= 1:
            raise UserError(f"{source}: key 'min_f1_ratio' must be in (0, 1]")
        for entry in self.ensembles:
            head, at, tta = str(entry).partition("@")
            if head.startswith("folds:"):
                parse_fold_entry(str(entry), source)
            elif not Path(head).is_file():
                raise UserError(f"{source}: key 'ensembles': {head} not found")
            elif at and tta not in TTA_MODES:
                raise UserError(
                    f"{source}: key 'ensembles': {entry!r}: TTA {tta!r} is not one of {', '.join(TTA_MODES)}"
                )

    @property
    def cells(self) -> list[CellSpec]:
        """The parsed ``engines`` entries."""
        return [CellSpec.parse(t) for t in self.engines]
