"""Torch datasets for training: images decoded by the runtime's loader, the runtime's eval transform for
validation (the one shared function) and timm's training augmentation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform

from runtime.metadata import ModelMeta
from runtime.preprocess import eval_transform, open_rgb
from train.config import TrainConfig


class ImageDataset(torch.utils.data.Dataset):
    """(image, target) pairs: ``transform(open_rgb(path))`` as a float32 tensor (3, H, W) and an int64 index.

    Raises (on access):
        runtime.preprocess.ImageError: an unreadable image, naming the file.
    """

    def __init__(self, paths: Sequence[Path], targets: Sequence[int], transform: Callable) -> None:
        if len(paths) != len(targets):
            raise ValueError("paths and targets differ in length")
        self.paths = list(paths)
        self.targets = list(targets)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.transform(open_rgb(self.paths[i]))
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        return x, self.targets[i]


def train_transform(meta: ModelMeta, cfg: TrainConfig) -> Callable[[Image.Image], torch.Tensor]:
    """timm's training transform (RandomResizedCrop, flips, colour jitter, normalise) for ``meta``'s size."""
    return create_transform(
        input_size=meta.input_size,
        is_training=True,
        scale=tuple(cfg.train_scale),
        hflip=cfg.hflip,
        vflip=cfg.vflip,
        color_jitter=cfg.color_jitter,
        interpolation=meta.interpolation,
        mean=meta.mean,
        std=meta.std,
    )


def valid_transform(meta: ModelMeta) -> Callable[[Image.Image], np.ndarray]:
    """The runtime's eval transform bound to ``meta``: float32 array (3, H, W)."""
    return lambda img: eval_transform(img, meta)


def make_loader(
    dataset: ImageDataset, batch_size: int, shuffle: bool, workers: int, seed: int
) -> torch.utils.data.DataLoader:
    """DataLoader with a seeded shuffle and persistent workers."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
    )
