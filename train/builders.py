"""What a training run is built from: the labelled splits, the per-process batch, sampler and loaders (images,
or backbone features cached once), the scheduler and one optimisation step (loss, optimizer, AMP)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler, StepLRScheduler

from runtime.dataset import labelled_indices, read_class_map, require_dir
from runtime.errors import UserError
from runtime.metadata import ModelMeta
from train.cached import CachedHead, cached_loaders
from train.config import TrainConfig
from train.data import ImageDataset, class_weights, make_loader, train_transform, valid_transform
from train.distributed import Distributed
from train.loop import TrainStep, amp_dtype_for


@dataclasses.dataclass
class Splits:
    """The class list and the labelled train / valid images (paths, class indices) of a split dataset."""

    class_names: list[str]
    train: tuple[list[Path], list[int]]
    valid: tuple[list[Path], list[int]]


def load_splits(cfg: TrainConfig) -> Splits:
    """The class map and the ``train_csv`` / ``valid_csv`` splits of ``cfg.data``.

    Raises:
        UserError: no class map (the dataset is not split yet), missing files, or unknown labels.
    """
    data = require_dir(cfg.data)
    class_map_path = data / cfg.class_map
    if not class_map_path.is_file():
        raise UserError(f"{class_map_path}: not found; run `make split DATA={data}` first")
    names = read_class_map(class_map_path)
    return Splits(names, labelled_indices(data, cfg.train_csv, names), labelled_indices(data, cfg.valid_csv, names))


def per_rank_batch(cfg: TrainConfig, n_train: int, world: int) -> int:
    """``batch_size`` split over ``world`` processes.

    Raises:
        UserError: not divisible, too few training images for one batch, or an odd batch with mixup/cutmix.
    """
    if cfg.batch_size % world:
        raise UserError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    per_rank = cfg.batch_size // world
    if n_train < cfg.batch_size:
        raise UserError(
            f"{n_train} training images cannot fill one batch of {cfg.batch_size} ({world} processes x "
            f"{per_rank}); lower batch_size or NPROC"
        )
    if (cfg.mixup or cfg.cutmix) and per_rank % 2:
        raise UserError(f"mixup/cutmix need an even batch per process, got {per_rank}")
    return per_rank


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    """timm epoch scheduler: the seed's step decay (lr x ``lr_gamma`` every ``lr_step_epochs``) or cosine to
    ``min_lr``, both with an optional linear warm-up of ``warmup_epochs``."""
    warmup = {"warmup_t": cfg.warmup_epochs, "warmup_lr_init": cfg.lr * 0.01 if cfg.warmup_epochs else 0.0}
    if cfg.scheduler == "cosine":
        return CosineLRScheduler(optimizer, t_initial=cfg.epochs, lr_min=cfg.min_lr, **warmup)
    return StepLRScheduler(optimizer, decay_t=cfg.lr_step_epochs, decay_rate=cfg.lr_gamma, **warmup)


def make_sampler(cfg: TrainConfig, dataset: ImageDataset, targets: list[int], k: int,
                 world: int) -> torch.utils.data.Sampler | None:  # fmt: skip
    """DistributedSampler under torchrun, a class-balancing WeightedRandomSampler (``class_balance: sampler``),
    or ``None`` (plain shuffling)."""
    if world > 1:
        return torch.utils.data.distributed.DistributedSampler(dataset, shuffle=True, seed=cfg.seed, drop_last=True)
    if cfg.class_balance == "sampler":
        weights = class_weights(targets, k)[torch.as_tensor(targets)]
        return torch.utils.data.WeightedRandomSampler(weights.double(), len(targets), replacement=True,
                                                      generator=torch.Generator().manual_seed(cfg.seed))  # fmt: skip
    return None


@dataclasses.dataclass
class Loaders:
    """Train and valid loaders, the train sampler, and the classifier head when features are cached."""

    train: Any
    valid: Any
    sampler: torch.utils.data.Sampler | None
    head: torch.nn.Module | None = None


def make_loaders(cfg: TrainConfig, splits: Splits, model: torch.nn.Module, meta: ModelMeta, batch: int,
                 ddp: Distributed, device: torch.device) -> Loaders:  # fmt: skip
    """Image loaders with the train / eval transforms or, with ``cache_features``, loaders of backbone features
    computed once (:mod:`train.cached`) and the head trained on them.

    Raises:
        UserError: ``cache_features`` under torchrun.
    """
    paths, targets = splits.train
    train_set = ImageDataset(paths, targets, train_transform(meta, cfg))
    sampler = make_sampler(cfg, train_set, targets, len(splits.class_names), ddp.world)
    if cfg.cache_features:
        if ddp.world > 1:
            raise UserError(f"{cfg.source}: cache_features runs in one process; train without torchrun/NPROC")
        loaders = cached_loaders(model, meta, [splits.train, splits.valid], batch, cfg.workers, cfg.seed, device,
                                 sampler)  # fmt: skip
        return Loaders(loaders[0], loaders[1], sampler, CachedHead(model, cfg.drop_rate))
    mixing = bool(cfg.mixup or cfg.cutmix)
    train = make_loader(train_set, batch, True, cfg.workers, cfg.seed, sampler, drop_last=mixing)
    valid_set = ImageDataset(*splits.valid, valid_transform(meta))
    return Loaders(train, make_loader(valid_set, cfg.batch_size, False, cfg.workers, cfg.seed), sampler)


def make_step(cfg: TrainConfig, params: list, targets: list[int], k: int, device: torch.device, ddp: Distributed,
              ema: Any, image_input: bool) -> TrainStep:  # fmt: skip
    """Loss (soft-target cross-entropy with mixup/cutmix, else weighted / label-smoothed cross-entropy), AdamW,
    AMP and the rest of one optimisation step."""
    mixing = bool(cfg.mixup or cfg.cutmix)
    loss_weight = class_weights(targets, k).to(device) if cfg.class_balance == "loss" else None
    mixup = (Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                   label_smoothing=cfg.label_smoothing, num_classes=k) if mixing else None)  # fmt: skip
    criterion = (SoftTargetCrossEntropy() if mixing
                 else torch.nn.CrossEntropyLoss(weight=loss_weight, label_smoothing=cfg.label_smoothing))  # fmt: skip
    amp_dtype = amp_dtype_for(cfg.amp, cfg.amp_dtype, device)
    if cfg.amp and cfg.amp_dtype == "bfloat16" and device.type == "cpu" and amp_dtype is None and ddp.main:
        print("note: this CPU has no native bfloat16 (AVX512-BF16/AMX): training in FP32", file=sys.stderr)
    return TrainStep(
        criterion=criterion, optimizer=torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == "float16"), device=device, num_classes=k,
        amp_dtype=amp_dtype, accum_steps=cfg.accum_steps, clip_grad=cfg.clip_grad, mixup=mixup, ema=ema,
        channels_last=cfg.channels_last and image_input, gather=ddp.gather,
        frozen_bn=cfg.freeze_backbone and not cfg.update_bn_stats,
    )  # fmt: skip
