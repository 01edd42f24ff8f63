"""One training epoch and one evaluation pass; F1 computed over the whole epoch (not averaged per batch)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from runtime.metrics import f1_micro_macro
from train.model import frozen_norms_eval


class EpochMetrics:
    """Accumulates per-image loss and predictions over an epoch; F1 is computed once over all of them.

    ``gather`` (optional) merges the per-rank lists under DDP before the metrics are computed.
    """

    def __init__(self, num_classes: int, gather: Callable[[Any], list[Any]] | None = None) -> None:
        self.num_classes = num_classes
        self.gather = gather
        self.total_loss, self.seen = 0.0, 0
        self.preds: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch: mean ``loss`` over it, ``logits`` (N, K), ``targets`` (N,) int64."""
        self.total_loss += loss.item() * len(targets)
        self.seen += len(targets)
        self.preds.append(logits.argmax(1).cpu())
        self.targets.append(targets.cpu())

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(targets, predictions) of every image added (on every rank)."""
        targets, preds = torch.cat(self.targets).numpy(), torch.cat(self.preds).numpy()
        if self.gather is not None:
            parts = self.gather((targets, preds))
            targets = np.concatenate([t for t, _ in parts])
            preds = np.concatenate([p for _, p in parts])
        return targets, preds

    def compute(self) -> dict[str, float]:
        """``loss`` (mean per image), ``f1_micro``, ``f1_macro`` over everything added."""
        total, seen = self.total_loss, self.seen
        if self.gather is not None:
            sums = self.gather((total, seen))
            total, seen = sum(s[0] for s in sums), sum(s[1] for s in sums)
        targets, preds = self.arrays()
        micro, macro = f1_micro_macro(targets, preds, self.num_classes)
        return {"loss": total / max(seen, 1), "f1_micro": micro, "f1_macro": macro}


def amp_dtype_for(amp: bool, dtype: str, device: torch.device) -> str | None:
    """The autocast dtype to train with, or None for FP32.

    CUDA: ``dtype`` (``float16`` with a GradScaler, or ``bfloat16``). CPU: ``bfloat16`` only, and only where
    oneDNN runs it natively (:func:`cpu_has_native_bf16`): emulated
    bf16 is slower than FP32. Measured on this project's 2-core AVX512-BF16 CPU: resnet18 at 160 px, batch 16,
    channels_last trains at 101 img/s in bf16 vs 62 img/s in FP32.
    """
    if not amp:
        return None
    if device.type == "cuda":
        return dtype
    if device.type == "cpu" and dtype == "bfloat16" and cpu_has_native_bf16():
        return dtype
    return None


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, dtype: str | None) -> torch.autocast:
    """Mixed precision in ``dtype`` (see :func:`amp_dtype_for`); disabled for ``None``."""
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype or "float16"), enabled=dtype is not None)


@dataclasses.dataclass
class TrainStep:
    """What one optimisation step needs.

    Attributes:
        criterion: loss on (logits, targets); soft targets with ``mixup``.
        optimizer, scaler: the optimizer and the AMP ``GradScaler`` (enabled for float16 only).
        device: where batches go. num_classes: K, for F1.
        amp_dtype: autocast dtype (:func:`amp_dtype_for`) or ``None`` for FP32.
        accum_steps: gradient accumulation: one optimizer step every ``accum_steps`` batches.
        clip_grad: max global gradient norm (``None``: no clipping).
        mixup: timm ``Mixup`` (batch-level mixup/cutmix with soft targets) or ``None``.
        ema: timm ``ModelEmaV3`` updated after each optimizer step, or ``None``.
        channels_last: feed NHWC batches (image inputs only).
        gather: collects per-rank metric lists under DDP (``None``: one process).
        frozen_bn: keep BatchNorm layers with frozen parameters in eval mode (:func:`train.model.frozen_norms_eval`).
    """

    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    num_classes: int
    amp_dtype: str | None = None
    accum_steps: int = 1
    clip_grad: float | None = None
    mixup: Callable | None = None
    ema: Any = None
    channels_last: bool = False
    gather: Callable[[Any], list[Any]] | None = None
    frozen_bn: bool = False


def train_one_epoch(model: torch.nn.Module, loader: Iterable, step: TrainStep, desc: str = "train") -> dict[str, float]:
    """Train one epoch. Returns ``loss`` (mean per image), ``f1_micro``, ``f1_macro`` (against the hard labels,
    over all ranks) and ``img_per_s`` (this rank)."""
    model.train()
    if step.frozen_bn:
        frozen_norms_eval(model)
    metrics = EpochMetrics(step.num_classes, step.gather)
    optimizer, scaler = step.optimizer, step.scaler
    start = time.perf_counter()
    n_batches = len(loader) if hasattr(loader, "__len__") else None
    optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(tqdm(loader, desc=desc, leave=False, unit="batch", disable=None)):
        x, y = x.to(step.device, non_blocking=True), y.to(step.device, non_blocking=True)
        if step.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target = y
        if step.mixup is not None:
            x, target = step.mixup(x, y)
        with autocast(step.device, step.amp_dtype):
            logits = model(x)
            loss = step.criterion(logits, target)
        scaler.scale(loss / step.accum_steps).backward()
        last = n_batches is not None and i + 1 == n_batches
        if (i + 1) % step.accum_steps == 0 or last:
            if step.clip_grad is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), step.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if step.ema is not None:
                step.ema.update(model)
        metrics.update(loss.detach(), logits.detach(), y)
    seconds = time.perf_counter() - start
    return {**metrics.compute(), "img_per_s": metrics.seen / seconds}


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    loader: Iterable,
    criterion: torch.nn.Module,
    device: torch.device,
    num_classes: int,
    amp_dtype: str | None = None,
    desc: str = "valid",
    channels_last: bool = False,
) -> dict[str, Any]:
    """Evaluate on the whole loader. Returns ``loss`` (mean per image), ``f1_micro``, ``f1_macro``, and the
    ``targets`` / ``preds`` arrays (for the confusion matrix and per-class F1)."""
    model.eval()
    metrics = EpochMetrics(num_classes)
    for x, y in tqdm(loader, desc=desc, leave=False, unit="batch", disable=None):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            logits = model(x)
            loss = criterion(logits.float(), y)
        metrics.update(loss, logits, y)
    targets, preds = metrics.arrays()
    return {**metrics.compute(), "targets": targets, "preds": preds}
