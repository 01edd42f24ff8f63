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
    """timm's training transform (RandomResizedCrop, flips, colour jitter or RandAugment, normalise) for
    ``meta``'s size; ``auto_augment: trivialaugment`` inserts torchvision's ``TrivialAugmentWide``
    (Muller & Hutter 2021) before the tensor conversion."""
    trivial = cfg.auto_augment == "trivialaugment"
    transform = create_transform(
        input_size=meta.input_size,
        is_training=True,
        scale=tuple(cfg.train_scale),
        hflip=cfg.hflip,
        vflip=cfg.vflip,
        color_jitter=0.0 if trivial else cfg.color_jitter,
        auto_augment=None if trivial else cfg.auto_augment,
        interpolation=meta.interpolation,
        mean=meta.mean,
        std=meta.std,
    )
    if trivial:
        from torchvision.transforms import TrivialAugmentWide

        steps = list(transform.transforms)
        at = next(i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__)
        steps.insert(at, TrivialAugmentWide())
        transform.transforms = steps
    return transform


def valid_transform(meta: ModelMeta) -> Callable[[Image.Image], np.ndarray]:
    """The runtime's eval transform bound to ``meta``: float32 array (3, H, W)."""
    return lambda img: eval_transform(img, meta)


def make_loader(
    dataset: ImageDataset,
    batch_size: int,
    shuffle: bool,
    workers: int,
    seed: int,
    sampler: torch.utils.data.Sampler | None = None,
    drop_last: bool = False,
) -> torch.utils.data.DataLoader:
    """DataLoader with a seeded generator (shuffle order and worker seeds come from it).

    Workers are not persistent, so each epoch re-seeds them from the generator: saving and restoring the
    generator state (``loader.generator``) makes a resumed run draw the same augmentations.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
    )


def class_weights(targets: list[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``N / (K * count_k)`` per class (a class absent from the data gets 0)."""
    counts = torch.bincount(torch.as_tensor(targets), minlength=num_classes).float()
    return torch.where(counts > 0, len(targets) / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
