"""The bench matrix: which cells run (backbones x engines x precisions x batch sizes, then ensembles) and on
which labelled held-out images."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from bench.config import BenchConfig, CellSpec, parse_fold_entry
from bench.rows import BenchRow
from bench.worker import CellProcess
from runtime.artifacts import PRETRAINED_SUFFIX, artifact_file
from runtime.config import load_config
from runtime.dataset import labelled_images
from runtime.errors import UserError, one_line
from runtime.members import Member, fold_models, read_ensemble

#: forward passes per image for each TTA mode
TTA_VIEWS = {"none": 1, "hflip": 2, "hflip+vflip": 3, "five-crop": 5}


@dataclasses.dataclass
class Cell:
    """One row of the report: a backbone (or ensemble) x cell spec x batch size, and what it measured."""

    backbone: str
    spec: CellSpec
    batch_size: int
    members: list[Member]
    group: str | None = None  # backbone whose torch FP32 cell is the reference (ensembles); default: backbone
    error: str | None = None  # why the cell cannot be set up (recorded as skipped)
    row: BenchRow = dataclasses.field(init=False)  # made in __post_init__ (also by dataclasses.replace)
    probs: np.ndarray | None = None
    process: CellProcess | None = None
    timings: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)
    #: (the IR, its input (H, W)) that ``benchmark_app`` times beside the engine (one-model OpenVINO cells)
    benchmark_app: tuple[str, tuple[int, int]] | None = None

    def __post_init__(self) -> None:
        spec = self.spec
        self.row = BenchRow(self.backbone, spec.label, spec.engine, spec.precision, spec.tta, self.batch_size)


def held_out(cfg: BenchConfig) -> tuple[list[Path], list[str]]:
    """Image paths of ``cfg.csv`` and their labels from ``cfg.labels`` (:func:`runtime.dataset.labelled_images`).

    Raises:
        UserError: missing dataset, CSV, labels, or an image without a label.
    """
    return labelled_images(cfg.data, cfg.csv, labels_csv=cfg.labels)


def trained_models(cfg: BenchConfig) -> list[str]:
    """``cfg.models``, or every ``artifacts/<name>/`` holding a checkpoint (not the untrained-head
    ``<name>_pretrained/`` folders of ``python -m train --pretrained-only``)."""
    if cfg.models:
        return list(cfg.models)
    found = (p.parent.name for p in Path(cfg.artifacts).glob("*/best.pt"))
    return sorted(name for name in found if not name.endswith(PRETRAINED_SUFFIX))


def build_missing(cfg: BenchConfig, model: str) -> None:
    """Export the artifacts that ``cfg.engines`` need for ``model`` and that do not exist (``build_missing``).
    A failed export is printed; its cells are then recorded as skipped."""
    folder = Path(cfg.artifacts) / model
    from export.config import ExportConfig, target_for
    from export.export import export_model

    targets = sorted(
        {
            target
            for s in cfg.cells
            if (target := target_for(s.engine, s.precision)) is not None
            and not artifact_file(folder, s.engine, s.precision).exists()
        }
    )
    if not targets:
        return

    print(f"bench: building {', '.join(targets)} for {model}", file=sys.stderr)
    try:
        export_model(model, load_config(ExportConfig, cfg.export_config, {"artifacts": cfg.artifacts}), targets)
    except UserError as exc:
        print(f"bench: export for {model} incomplete: {one_line(exc)}", file=sys.stderr)


def plan(cfg: BenchConfig) -> list[Cell]:
    """Every cell of the matrix, in report order: backbones x engines x batch sizes, then ensembles."""
    models = trained_models(cfg)
    if not models and not cfg.ensembles:
        raise UserError(f"{cfg.artifacts}: no trained model (artifacts/<name>/best.pt); run `make train` first")
    cells = []
    for model in models:
        if cfg.build_missing:
            build_missing(cfg, model)
        for spec in cfg.cells:
            cells += [Cell(model, spec, bs, [spec.member(str(Path(cfg.artifacts) / model))]) for bs in cfg.batch_sizes]
    for entry in cfg.ensembles:
        template = ensemble_cell(cfg, entry)
        cells += [dataclasses.replace(template, batch_size=bs, timings={}) for bs in cfg.batch_sizes]
    return cells


def ensemble_cell(cfg: BenchConfig, entry: str) -> Cell:
    """The cell of one ``ensembles`` entry (batch size still to set): ``folds:<model>[:engine[:precision]][@tta]``
    (the finished k-fold run of ``<model>``) or ``<ensemble.yaml>[@tta]``. Its backbone is ``ensemble:<name>``;
    its spec names the members' engine and precision (``mixed`` when they differ). An entry whose members cannot
    be listed becomes a skipped cell with the reason."""

    head, _, tta = entry.partition("@")
    tta = tta or "none"
    try:
        if head.startswith("folds:"):
            model, spec = parse_fold_entry(entry, "ensembles")
            members = [Member(m, spec.engine, spec.precision) for m in fold_models(Path(cfg.artifacts) / model)]
            return Cell(f"ensemble:{model}:{len(members)} folds", spec, 0, members, model)
        members = read_ensemble(head, "onnx", "fp32")
    except UserError as exc:
        name = head.split(":")[1] if head.startswith("folds:") else Path(head).stem
        return Cell(f"ensemble:{name}", CellSpec("ensemble", "fp32", tta), 0, [], error=one_line(exc))
    engines = {m.engine for m in members}
    precisions = {m.precision or "fp32" for m in members}
    spec = CellSpec(
        engines.pop() if len(engines) == 1 else "mixed", precisions.pop() if len(precisions) == 1 else "mixed", tta
    )
    first = Path(members[0].model)
    return Cell(f"ensemble:{Path(head).stem}", spec, 0, members, first.name if first.is_dir() else first.parent.name)
