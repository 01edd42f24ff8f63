"""TensorBoard summary of a finished training: hparams with the final metrics, and the best epoch's confusion
matrix (image) and per-class F1."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from sklearn.metrics import ConfusionMatrixDisplay, f1_score
from torch.utils.tensorboard import SummaryWriter

from train.config import TrainConfig


def log_best_epoch(
    writer: SummaryWriter,
    cfg: TrainConfig,
    best: dict[str, Any],
    best_eval: dict[str, Any] | None,
    class_names: list[str],
) -> None:
    """Write hparams (scalar config keys) with the best metrics, and, when the best epoch ran in this process
    (``best_eval`` holds its ``targets``/``preds``), its confusion matrix figure and per-class F1 scalars."""
    hparams = {k: v for k, v in vars(cfg).items() if isinstance(v, (int, float, str, bool))}
    metrics = {f"hparam/{k}": float(v) for k, v in best.items() if isinstance(v, (int, float))}
    writer.add_hparams(hparams, metrics, run_name=".")
    if best_eval is None:
        return
    step = int(best.get("epoch", 0))
    labels = list(range(len(class_names)))
    per_class = f1_score(best_eval["targets"], best_eval["preds"], labels=labels, average=None, zero_division=0)
    for name, value in zip(class_names, per_class, strict=True):
        writer.add_scalar(f"f1_per_class/{name}", float(value), step)
    size = max(4.0, 0.5 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        best_eval["targets"], best_eval["preds"], labels=labels, display_labels=class_names, ax=ax,
        xticks_rotation="vertical", colorbar=False,
    )  # fmt: skip
    ax.set_title(f"validation, epoch {step}")
    fig.tight_layout()
    writer.add_figure("confusion_matrix/valid", fig, step)
    plt.close(fig)
