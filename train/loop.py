"""One training epoch and one evaluation pass; F1 computed over the whole epoch (not averaged per batch)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import torch
from sklearn.metrics import f1_score
from tqdm import tqdm


def f1_micro_macro(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> tuple[float, float]:
    """Micro- and macro-F1 (scikit-learn ``f1_score``) over all classes ``0..num_classes-1``.

    A class absent from both targets and predictions counts as F1 = 0 in the macro mean (``zero_division=0``).
    """
    labels = list(range(num_classes))
    micro = f1_score(targets, preds, labels=labels, average="micro", zero_division=0)
    macro = f1_score(targets, preds, labels=labels, average="macro", zero_division=0)
    return float(micro), float(macro)


class EpochMetrics:
    """Accumulates per-image loss and predictions over an epoch; F1 is computed once over all of them."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.total_loss, self.seen = 0.0, 0
        self.preds: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch: mean ``loss`` over it, ``logits`` (N, K), ``targets`` (N,) int64."""
        self.total_loss += loss.item() * len(targets)
        self.seen += len(targets)
        self.preds.append(logits.argmax(1).cpu())
        self.targets.append(targets.cpu())

    def compute(self) -> dict[str, float]:
        """``loss`` (mean per image), ``f1_micro``, ``f1_macro`` over everything added."""
        micro, macro = f1_micro_macro(torch.cat(self.targets).numpy(), torch.cat(self.preds).numpy(), self.num_classes)
        return {"loss": self.total_loss / max(self.seen, 1), "f1_micro": micro, "f1_macro": macro}


def _autocast(device: torch.device, amp: bool) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")


def train_one_epoch(
    model: torch.nn.Module,
    loader: Iterable,
    criterion: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    scaler: torch.amp.GradScaler,
    num_classes: int,
    amp: bool,
    desc: str = "train",
) -> dict[str, float]:
    """Train one epoch. Returns ``loss`` (mean per image), ``f1_micro``, ``f1_macro`` and ``img_per_s``."""
    model.train()
    metrics = EpochMetrics(num_classes)
    start = time.perf_counter()
    for x, y in tqdm(loader, desc=desc, leave=False, unit="batch", disable=None):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        metrics.update(loss, logits, y)
    return {**metrics.compute(), "img_per_s": metrics.seen / (time.perf_counter() - start)}


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    loader: Iterable,
    criterion: torch.nn.Module,
    device: torch.device,
    num_classes: int,
    amp: bool,
    desc: str = "valid",
) -> dict[str, float]:
    """Evaluate on the whole loader. Returns ``loss`` (mean per image), ``f1_micro``, ``f1_macro``."""
    model.eval()
    metrics = EpochMetrics(num_classes)
    for x, y in tqdm(loader, desc=desc, leave=False, unit="batch", disable=None):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(x)
            loss = criterion(logits.float(), y)
        metrics.update(loss, logits, y)
    return metrics.compute()
