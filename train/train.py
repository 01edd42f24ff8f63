"""``python -m train --model <name>`` (``make train MODEL=<name>``): train a timm backbone on a dataset in the
contest layout and keep the best checkpoint by validation micro-F1.

Reads ``configs/models/<name>.yaml``; ``--data`` and ``--set key=value`` override its keys. Logs loss, micro-/
macro-F1 and lr to TensorBoard under ``runs/<name>/<time>/``; writes ``artifacts/<name>/best.pt``.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from runtime.config import parse_overrides
from runtime.dataset import encode_labels, image_dir_for, image_paths, read_class_map, read_csv, require_dir
from runtime.errors import ArgumentParser, UserError, description, positive_int, run_cli
from train.checkpoint import save_checkpoint
from train.config import TrainConfig, load_train_config
from train.data import ImageDataset, make_loader, train_transform, valid_transform
from train.loop import evaluate, train_one_epoch
from train.model import create_model, freeze_backbone, make_meta


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU.

    Raises:
        UserError: CUDA asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for but torch sees no GPU; use device: auto or cpu")
    return torch.device(name)


def load_split(cfg: TrainConfig, csv_name: str, class_names: list[str]) -> tuple[list[Path], list[int]]:
    """Image paths and class indices of one split CSV."""
    data = Path(cfg.data)
    df = read_csv(data / csv_name, require_label=True)
    paths = image_paths(require_dir(image_dir_for(data, csv_name), "image folder"), df["image_id"].tolist())
    return paths, encode_labels(df["label"].tolist(), class_names, str(data / csv_name))


def train(name: str, cfg: TrainConfig) -> dict[str, float]:
    """Run the whole training; returns the best validation metrics.

    Raises:
        UserError: missing dataset/split files, unknown labels, unreadable images, bad weights.
    """
    data = require_dir(cfg.data)
    class_map_path = data / cfg.class_map
    if not class_map_path.is_file():
        raise UserError(f"{class_map_path}: not found; run `make split DATA={data}` first")
    class_names = read_class_map(class_map_path)
    train_paths, train_targets = load_split(cfg, cfg.train_csv, class_names)
    valid_paths, valid_targets = load_split(cfg, cfg.valid_csv, class_names)

    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model = create_model(cfg, len(class_names))
    meta = make_meta(model, cfg, class_names)
    params = freeze_backbone(model) if cfg.freeze_backbone else list(model.parameters())
    model.to(device)

    train_loader = make_loader(
        ImageDataset(train_paths, train_targets, train_transform(meta, cfg)),
        cfg.batch_size,
        shuffle=True,
        workers=cfg.workers,
        seed=cfg.seed,
    )
    valid_loader = make_loader(
        ImageDataset(valid_paths, valid_targets, valid_transform(meta)),
        cfg.batch_size,
        shuffle=False,
        workers=cfg.workers,
        seed=cfg.seed,
    )
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    run_dir = Path(cfg.runs) / name / time.strftime("%Y%m%d-%H%M%S")
    best_path = Path(cfg.artifacts) / name / "best.pt"
    best: dict[str, float] = {"f1_micro": -1.0}
    k = len(class_names)
    print(
        f"train {name} ({cfg.architecture}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params) "
        f"on {device}: {len(train_paths)} train / {len(valid_paths)} valid images, {k} classes, "
        f"input {meta.input_size[1]}x{meta.input_size[2]}",
        file=sys.stderr,
    )
    with SummaryWriter(str(run_dir)) as writer:
        for epoch in range(1, cfg.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            tr = train_one_epoch(
                model, train_loader, criterion, optimizer, device, scaler, k, amp, f"epoch {epoch} train"
            )
            if not math.isfinite(tr["loss"]):
                raise UserError(
                    f"training loss became {tr['loss']} in epoch {epoch}; lower lr in {cfg.source} "
                    f"(best checkpoint so far kept in {best_path})"
                )
            va = evaluate(model, valid_loader, criterion, device, k, amp, f"epoch {epoch} valid")
            scheduler.step()
            for split_name, metrics in (("train", tr), ("valid", va)):
                for key, value in metrics.items():
                    writer.add_scalar(f"{key}/{split_name}", value, epoch)
            writer.add_scalar("lr", lr, epoch)
            improved = va["f1_micro"] > best["f1_micro"]
            if improved:
                best = {
                    "epoch": epoch,
                    "f1_micro": va["f1_micro"],
                    "f1_macro": va["f1_macro"],
                    "valid_loss": va["loss"],
                }
                meta.metrics = dict(best)
                save_checkpoint(best_path, model, meta, epoch=epoch, config=vars(cfg).copy())
            print(
                f"epoch {epoch}/{cfg.epochs} lr {lr:.2e} | train loss {tr['loss']:.4f} "
                f"f1 {tr['f1_micro']:.4f} ({tr['img_per_s']:.0f} img/s) | valid loss {va['loss']:.4f} "
                f"micro-F1 {va['f1_micro']:.4f} macro-F1 {va['f1_macro']:.4f}" + (" *" if improved else ""),
                file=sys.stderr,
            )
    print(
        f"best valid micro-F1 {best['f1_micro']:.4f} (epoch {best['epoch']}) -> {best_path}; "
        f"TensorBoard logs in {run_dir}",
        file=sys.stderr,
    )
    return best


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m train``."""
    p = ArgumentParser(prog="python -m train", description=description(__doc__))
    p.add_argument("--model", required=True, help="name in configs/models/ (or a YAML path)")
    p.add_argument("--data", help="dataset folder (overrides the config's data)")
    p.add_argument("--epochs", type=positive_int, help="override epochs")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    args = p.parse_args(argv)
    overrides = parse_overrides(args.set)
    if args.data:
        overrides["data"] = args.data
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    name, cfg = load_train_config(args.model, overrides)
    train(name, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
