"""Head-only training on cached features (``cache_features: true``): a frozen backbone's pre-logit features of
every training and validation image are computed once, then the classifier trains on them for all epochs.

Valid only when the backbone's forward cannot change between epochs: frozen weights, BatchNorm layers in eval
mode and no train-time augmentation (``TrainConfig`` refuses anything else). The training images then go through
the eval transform, exactly as validation does. The head is timm's ``forward_head(x, pre_logits=True)`` cut:
dropout (``drop_rate``) and ``model.get_classifier()``, the very module saved in the checkpoint.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from runtime.metadata import ModelMeta
from train.data import ImageDataset, make_loader, valid_transform


class CachedHead(torch.nn.Module):
    """Dropout + the model's classifier, applied to pre-logit features (N, F) float32 -> logits (N, K)."""

    def __init__(self, model: torch.nn.Module, drop_rate: float) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(drop_rate)
        self.classifier = model.get_classifier()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.drop(features))


@torch.inference_mode()
def extract_features(
    model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, desc: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-logit features (N, F) float32 on the CPU and targets (N,) int64, in the loader's order, FP32, eval mode."""
    model.eval()
    feats, targets = [], []
    for x, y in tqdm(loader, desc=desc, leave=False, unit="batch", disable=None):
        f = model.forward_head(model.forward_features(x.to(device)), pre_logits=True)
        feats.append(f.float().cpu())
        targets.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(targets).long()


def cached_loaders(
    model: torch.nn.Module,
    meta: ModelMeta,
    splits: Sequence[tuple[list[Path], list[int]]],
    batch_size: int,
    workers: int,
    seed: int,
    device: torch.device,
    sampler: torch.utils.data.Sampler | None = None,
) -> list[torch.utils.data.DataLoader]:
    """One feature loader per (paths, targets) split: the first shuffles (or uses ``sampler``), the rest keep
    their order. Images are decoded ``workers``-parallel once; the feature loaders run in the main process."""
    start = time.perf_counter()
    loaders = []
    for i, (paths, targets) in enumerate(splits):
        images = make_loader(ImageDataset(paths, targets, valid_transform(meta)), batch_size, False, workers, seed)
        feats, ys = extract_features(model, images, device, f"features {i + 1}/{len(splits)}")
        dataset = torch.utils.data.TensorDataset(feats, ys)
        loaders.append(make_loader(dataset, batch_size, i == 0, 0, seed, sampler if i == 0 else None))  # type: ignore[arg-type]
    n = sum(len(p) for p, _ in splits)
    print(f"cached features of {n} images in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return loaders
