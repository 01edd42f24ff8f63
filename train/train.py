"""``python -m train --model <name>`` (``make train MODEL=<name> [NPROC=n] [RESUME=1]``): train a timm backbone
on a dataset in the contest layout and keep the best checkpoint by validation micro-F1.

Reads ``configs/models/<name>.yaml``; ``--data`` and ``--set key=value`` override its keys. Logs loss, micro-/
macro-F1 and lr to TensorBoard under ``runs/<name>/<time>/`` (plus hparams, the confusion matrix and per-class F1
of the best epoch); writes ``artifacts/<name>/best.pt`` and, every epoch, ``artifacts/<name>/last.pt`` (model,
optimizer, scheduler, AMP scaler, EMA, epoch, best metrics, RNG states) for ``--resume``. Under ``torchrun``
it trains with DistributedDataParallel (NCCL on GPUs, gloo on CPU); rank 0 logs, validates and saves.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler, StepLRScheduler
from timm.utils import ModelEmaV3
from torch.utils.tensorboard import SummaryWriter

from runtime.config import add_set_argument, parse_overrides
from runtime.dataset import encode_labels, image_dir_for, image_paths, read_class_map, read_csv, require_dir
from runtime.engines.pytorch import load_checkpoint
from runtime.errors import ArgumentParser, UserError, description, positive_int, run_cli
from train.cached import CachedHead, cached_loaders
from train.checkpoint import save_checkpoint
from train.config import TrainConfig, load_train_config
from train.data import ImageDataset, class_weights, make_loader, train_transform, valid_transform
from train.loop import amp_dtype_for, evaluate, train_one_epoch
from train.model import create_model, freeze_backbone, make_meta
from train.report import log_best_epoch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }  # fmt: skip


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (this process's GPU under torchrun) when present, else CPU.

    Raises:
        UserError: CUDA asked for but not available.
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for but torch sees no GPU; use device: auto or cpu")
    return torch.device(name)


def load_split(cfg: TrainConfig, csv_name: str, class_names: list[str]) -> tuple[list[Path], list[int]]:
    """Image paths and class indices of one split CSV."""
    data = Path(cfg.data)
    df = read_csv(data / csv_name, require_label=True)
    paths = image_paths(require_dir(image_dir_for(data, csv_name), "image folder"), df["image_id"].tolist())
    return paths, encode_labels(df["label"].tolist(), class_names, str(data / csv_name))


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    """timm epoch scheduler: the seed's step decay (lr x ``lr_gamma`` every ``lr_step_epochs``) or cosine to
    ``min_lr``, both with an optional linear warm-up of ``warmup_epochs``."""
    warmup = {"warmup_t": cfg.warmup_epochs, "warmup_lr_init": cfg.lr * 0.01 if cfg.warmup_epochs else 0.0}
    if cfg.scheduler == "cosine":
        return CosineLRScheduler(optimizer, t_initial=cfg.epochs, lr_min=cfg.min_lr, **warmup)
    return StepLRScheduler(optimizer, decay_t=cfg.lr_step_epochs, decay_rate=cfg.lr_gamma, **warmup)


class Distributed:
    """torchrun's environment: rank, world size, local rank; ``gather`` collects an object from every rank."""

    def __init__(self, device_type: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        """Whether this process logs and writes files."""
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` from every rank, in rank order (a one-element list without DDP)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Tear the process group down."""
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def train(name: str, cfg: TrainConfig, resume: bool = False) -> dict[str, float]:
    """Run the whole training; returns the best validation metrics.

    Raises:
        UserError: missing dataset/split files, unknown labels, unreadable images, bad weights, a resume
            checkpoint of another architecture or class list, more processes than the data allows.
    """
    data = require_dir(cfg.data)
    class_map_path = data / cfg.class_map
    if not class_map_path.is_file():
        raise UserError(f"{class_map_path}: not found; run `make split DATA={data}` first")
    class_names = read_class_map(class_map_path)
    train_paths, train_targets = load_split(cfg, cfg.train_csv, class_names)
    valid_paths, valid_targets = load_split(cfg, cfg.valid_csv, class_names)
    k = len(class_names)

    ddp = Distributed("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    if cfg.batch_size % ddp.world:
        raise UserError(f"batch_size {cfg.batch_size} is not divisible by the {ddp.world} processes")
    per_rank_batch = cfg.batch_size // ddp.world
    if len(train_paths) < cfg.batch_size:
        raise UserError(
            f"{len(train_paths)} training images cannot fill one batch of {cfg.batch_size} "
            f"({ddp.world} processes x {per_rank_batch}); lower batch_size or NPROC"
        )
    if (cfg.mixup or cfg.cutmix) and per_rank_batch % 2:
        raise UserError(f"mixup/cutmix need an even batch per process, got {per_rank_batch}")
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(cfg.seed + ddp.rank)
    device = pick_device(cfg.device, ddp.local_rank)
    model = create_model(cfg, k)
    meta = make_meta(model, cfg, class_names)
    params = freeze_backbone(model) if cfg.freeze_backbone else list(model.parameters())
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp.world > 1 else model

    train_set = ImageDataset(train_paths, train_targets, train_transform(meta, cfg))
    sampler: torch.utils.data.Sampler | None = None
    if ddp.world > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(
            train_set, shuffle=True, seed=cfg.seed, drop_last=True
        )
    elif cfg.class_balance == "sampler":
        weights = class_weights(train_targets, k)[torch.as_tensor(train_targets)]
        sampler = torch.utils.data.WeightedRandomSampler(weights.double(), len(train_targets), replacement=True,
                                                         generator=torch.Generator().manual_seed(cfg.seed))  # fmt: skip
    mixing = bool(cfg.mixup or cfg.cutmix)
    train_loader = make_loader(train_set, per_rank_batch, True, cfg.workers, cfg.seed, sampler, drop_last=mixing)
    valid_loader = make_loader(
        ImageDataset(valid_paths, valid_targets, valid_transform(meta)), cfg.batch_size, False, cfg.workers, cfg.seed
    )
    head: torch.nn.Module | None = None  # cache_features: the classifier, trained and validated on features
    if cfg.cache_features:
        if ddp.world > 1:
            raise UserError(f"{cfg.source}: cache_features runs in one process; train without torchrun/NPROC")
        head = CachedHead(model, cfg.drop_rate)
        train_loader, valid_loader = cached_loaders(
            model, meta, [(train_paths, train_targets), (valid_paths, valid_targets)], per_rank_batch,
            cfg.workers, cfg.seed, device, sampler,
        )  # fmt: skip
    loss_weight = class_weights(train_targets, k).to(device) if cfg.class_balance == "loss" else None
    mixup = (
        Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob, label_smoothing=cfg.label_smoothing,
              num_classes=k) if mixing else None
    )  # fmt: skip
    criterion = (
        SoftTargetCrossEntropy()
        if mixing
        else torch.nn.CrossEntropyLoss(weight=loss_weight, label_smoothing=cfg.label_smoothing)
    )
    eval_criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(cfg, optimizer)
    amp_dtype = amp_dtype_for(cfg.amp, cfg.amp_dtype, device)
    if cfg.amp and cfg.amp_dtype == "bfloat16" and device.type == "cpu" and amp_dtype is None and ddp.main:
        print("note: this CPU has no native bfloat16 (AVX512-BF16/AMX): training in FP32", file=sys.stderr)
    eval_amp = amp_dtype if device.type == "cuda" else None  # CPU: validate in FP32, as the exported model runs
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == "float16")

    model_dir = Path(cfg.artifacts) / name
    best_path, last_path = model_dir / "best.pt", model_dir / "last.pt"
    best: dict[str, Any] = {"f1_micro": -1.0}
    first_epoch = 1
    run_dir = Path(cfg.runs) / name / time.strftime("%Y%m%d-%H%M%S")
    if resume:
        state = load_resume_state(last_path, meta)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        train_loader.generator.set_state(state["loader_rng"])
        set_rng_state(state["rng"])
        best, first_epoch, run_dir = dict(state["best"]), int(state["epoch"]) + 1, Path(state["run_dir"])
        if ddp.main:
            print(f"resuming {name} from {last_path} at epoch {first_epoch}", file=sys.stderr)
    if ddp.main:
        print(
            f"train {name} ({cfg.architecture}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params) "
            f"on {device} x {ddp.world}: {len(train_paths)} train / {len(valid_paths)} valid images, {k} classes, "
            f"input {meta.input_size[1]}x{meta.input_size[2]}, {amp_dtype or 'float32'}",
            file=sys.stderr,
        )
    writer = SummaryWriter(str(run_dir)) if ddp.main else None
    best_eval: dict[str, Any] | None = None
    try:
        for epoch in range(first_epoch, cfg.epochs + 1):
            if isinstance(sampler, torch.utils.data.distributed.DistributedSampler):
                sampler.set_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            tr = train_one_epoch(
                head or net, train_loader, criterion, optimizer, device, scaler, k, amp_dtype, f"epoch {epoch} train",
                cfg.accum_steps, cfg.clip_grad, mixup, ema, cfg.channels_last and head is None, ddp.gather,
                frozen_bn=cfg.freeze_backbone and not cfg.update_bn_stats,
            )  # fmt: skip
            if not math.isfinite(tr["loss"]):
                raise UserError(
                    f"training loss became {tr['loss']} in epoch {epoch}; lower lr in {cfg.source} "
                    f"(best checkpoint so far kept in {best_path})"
                )
            scheduler.step(epoch)
            if ddp.main:
                scored = ema.module if ema is not None else model
                va = evaluate(head or scored, valid_loader, eval_criterion, device, k, eval_amp,
                              f"epoch {epoch} valid", cfg.channels_last and head is None)  # fmt: skip
                for split_name, metrics in (("train", tr), ("valid", va)):
                    for key, value in metrics.items():
                        if isinstance(value, float):
                            writer.add_scalar(f"{key}/{split_name}", value, epoch)
                writer.add_scalar("lr", lr, epoch)
                improved = va["f1_micro"] > best["f1_micro"]
                if improved:
                    best = {"epoch": epoch, "f1_micro": va["f1_micro"], "f1_macro": va["f1_macro"],
                            "valid_loss": va["loss"]}  # fmt: skip
                    best_eval = va
                    meta.metrics = dict(best)
                    save_checkpoint(best_path, scored, meta, epoch=epoch, config=vars(cfg).copy())
                save_checkpoint(
                    last_path, model, meta, epoch=epoch, config=vars(cfg).copy(), optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
                    ema=ema.module.state_dict() if ema is not None else None, best=best, rng=rng_state(),
                    loader_rng=train_loader.generator.get_state(), run_dir=str(run_dir),
                )  # fmt: skip
                print(
                    f"epoch {epoch}/{cfg.epochs} lr {lr:.2e} | train loss {tr['loss']:.4f} "
                    f"f1 {tr['f1_micro']:.4f} ({tr['img_per_s'] * ddp.world:.0f} img/s) | valid loss {va['loss']:.4f} "
                    f"micro-F1 {va['f1_micro']:.4f} macro-F1 {va['f1_macro']:.4f}" + (" *" if improved else ""),
                    file=sys.stderr,
                )
            ddp.barrier()
        if ddp.main and writer is not None:
            log_best_epoch(writer, cfg, best, best_eval, class_names)
            print(
                f"best valid micro-F1 {best['f1_micro']:.4f} (epoch {best.get('epoch')}) -> {best_path}; "
                f"TensorBoard logs in {run_dir}",
                file=sys.stderr,
            )
    finally:
        if writer is not None:
            writer.close()
        ddp.close()
    return best


def load_resume_state(path: Path, meta: Any) -> dict[str, Any]:
    """``last.pt`` for ``--resume``, checked against the current config.

    Raises:
        UserError: missing file, or a checkpoint of another architecture, input size or class list.
    """
    if not path.is_file():
        raise UserError(f"{path}: nothing to resume (no last.pt); train without RESUME first")
    state = load_checkpoint(path)
    saved, current = state["meta"], meta.to_dict()
    for key in ("architecture", "class_names", "input_size"):
        if saved.get(key) != current[key]:
            raise UserError(f"{path}: checkpoint {key} {saved.get(key)!r} differs from the config's {current[key]!r}")
    if "optimizer" not in state:
        raise UserError(f"{path}: not a resumable checkpoint (no optimizer state)")
    return state


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m train``."""
    p = ArgumentParser(prog="python -m train", description=description(__doc__))
    p.add_argument("--model", required=True, help="name in configs/models/ (or a YAML path)")
    p.add_argument("--data", help="dataset folder (overrides the config's data)")
    p.add_argument("--epochs", type=positive_int, help="override epochs")
    p.add_argument("--resume", action="store_true", help="continue from artifacts/<model>/last.pt")
    add_set_argument(p)
    p.add_argument("--folds", type=int, help="k-fold cross-validation: K models + oof.csv (see train.kfold)")
    p.add_argument("--folds-csv", help="with --folds: CSV cut into folds (default: train.csv)")
    p.add_argument("--fold", type=int, help="with --folds: train only this fold (0-based)")
    p.add_argument("--nproc", type=positive_int, default=1, help="with --folds: torchrun processes per fold")
    args = p.parse_args(argv)
    overrides = parse_overrides(args.set)
    if args.data:
        overrides["data"] = args.data
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    name, cfg = load_train_config(args.model, overrides)
    if args.folds is None:
        if args.fold is not None or args.nproc > 1 or args.folds_csv:
            raise UserError(
                "--fold, --folds-csv and --nproc go with --folds (plain DDP: torchrun -m train, or make train NPROC=n)"
            )
        train(name, cfg, resume=args.resume)
        return 0
    if args.folds < 2:
        raise UserError(f"FOLDS={args.folds}: k-fold needs at least 2 folds")
    from train.kfold import cross_validate, fold_config, fold_matches, fold_name, fold_record, prepare_folds

    folds_csv = args.folds_csv or "train.csv"

    if args.fold is None:
        relaunch = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--resume"]
        relaunch = [
            a for i, a in enumerate(relaunch) if not a.startswith("--nproc") and relaunch[i - 1 : i] != ["--nproc"]
        ]
        cross_validate(name, cfg, args.folds, folds_csv, args.resume, args.nproc, relaunch)
        return 0
    if not 0 <= args.fold < args.folds:
        raise UserError(f"--fold {args.fold}: choose 0..{args.folds - 1}")
    folder = Path(cfg.artifacts) / fold_name(name, args.fold)
    if args.resume and not fold_matches(folder, fold_record(cfg, args.folds, args.fold, folds_csv)):
        raise UserError(f"{folder}: made with another FOLDS, seed, CSV or config; train it without --resume")
    prepare_folds(name, cfg, args.folds, folds_csv)
    train(fold_name(name, args.fold), fold_config(name, cfg, args.fold), resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
