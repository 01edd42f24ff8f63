"""``python -m export --model <name>`` (``make export MODEL=<name>``): checkpoint -> verified ``model.onnx``.

Reads ``artifacts/<name>/best.pt``, exports it to a temporary file, checks it against the checkpoint on real
validation images (top-1 agreement, max abs and cosine of logits), and only when agreement reaches
``min_agreement`` (99.9%) renames it to ``artifacts/<name>/model.onnx``. Results go to
``artifacts/<name>/verify.json``. Exit status 2 when verification fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from export.onnx import EXPORTERS, export_onnx, file_sha256
from export.verify import run_pair
from runtime.atomic import atomic_path, write_text
from runtime.config import load_config, parse_overrides
from runtime.dataset import encode_labels, image_dir_for, image_paths, read_csv, require_dir
from runtime.engines.onnxrt import OnnxEngine
from runtime.engines.pytorch import TorchEngine
from runtime.errors import UserError


@dataclasses.dataclass
class ExportConfig:
    """Keys of ``configs/export.yaml``."""

    opset: int = 18
    exporter: str = "dynamo"
    data: str = "data/elpv"
    verify_csv: str = "valid_.csv"
    verify_images: int = 256
    min_agreement: float = 0.999
    batch_size: int = 32
    threads: int | None = None
    artifacts: str = "artifacts"

    def validate(self, source: str) -> None:
        """Raises UserError naming a bad key."""
        if self.exporter not in EXPORTERS:
            raise UserError(f"{source}: key 'exporter' must be one of {EXPORTERS}, got {self.exporter!r}")
        if self.verify_images < 1:
            raise UserError(f"{source}: key 'verify_images' must be >= 1")
        if not 0 < self.min_agreement <= 1:
            raise UserError(f"{source}: key 'min_agreement' must be in (0, 1]")
        if self.batch_size < 1:
            raise UserError(f"{source}: key 'batch_size' must be >= 1")


def verification_images(cfg: ExportConfig, class_names: list[str]) -> tuple[list[Path], list[int] | None]:
    """The first ``verify_images`` images of ``<data>/<verify_csv>`` and their labels (when labelled)."""
    data = require_dir(cfg.data)
    df = read_csv(data / cfg.verify_csv).head(cfg.verify_images)
    paths = image_paths(require_dir(image_dir_for(data, cfg.verify_csv), "image folder"), df["image_id"].tolist())
    targets = None
    if "label" in df.columns:
        targets = encode_labels(df["label"].tolist(), class_names, str(data / cfg.verify_csv))
    return paths, targets


def export_model(name: str, cfg: ExportConfig) -> dict:
    """Export and verify ``artifacts/<name>``; returns the verification record.

    Raises:
        UserError: missing checkpoint or data, or verification below ``min_agreement``.
    """
    model_dir = Path(cfg.artifacts) / name
    checkpoint = model_dir / "best.pt"
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: not found; run `make train MODEL={name}` first")
    reference = TorchEngine(checkpoint, threads=cfg.threads)
    meta = reference.meta
    meta.checkpoint_sha256 = file_sha256(checkpoint)
    paths, targets = verification_images(cfg, meta.class_names)
    target = model_dir / "model.onnx"
    with atomic_path(target, suffix=".onnx") as tmp:
        export_onnx(reference.model, meta, tmp, opset=cfg.opset, exporter=cfg.exporter)
        with OnnxEngine(tmp, threads=cfg.threads) as candidate:
            result = run_pair(reference, candidate, paths, targets, cfg.batch_size)
        result.update(
            artifact=target.name,
            exporter=cfg.exporter,
            opset=cfg.opset,
            min_agreement=cfg.min_agreement,
            passed=result["top1_agreement"] >= cfg.min_agreement,
        )
        write_text(model_dir / "verify.json", json.dumps({"model.onnx": result}, indent=2) + "\n")
        line = (
            f"{target}: top-1 agreement {result['top1_agreement']:.4%} on {result['images']} images, "
            f"max |dlogit| {result['max_abs_diff']:.2e}, min cosine {result['cosine_min']:.6f}"
        )
        if not result["passed"]:
            raise UserError(f"{line} < {cfg.min_agreement:.1%}: export rejected, model.onnx not written")
    print(line, file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m export``."""
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model name: artifacts/<model>/best.pt is exported")
    p.add_argument("--data", help="dataset folder with the verification CSV (overrides the config)")
    p.add_argument("--config", default="configs/export.yaml", help="YAML config (default: configs/export.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    args = p.parse_args(argv)
    overrides = parse_overrides(args.set)
    if args.data:
        overrides["data"] = args.data
    export_model(args.model, load_config(ExportConfig, args.config, overrides))
    return 0
