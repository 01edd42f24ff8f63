"""Writing the self-describing checkpoint (``artifacts/<model>/best.pt``); reading lives in
``runtime.engines.pytorch.load_checkpoint``."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import torch

from runtime.atomic import atomic_path
from runtime.errors import one_line
from runtime.metadata import ModelMeta


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: ModelMeta, **extra: Any) -> Path:
    """Save ``{"meta", "state_dict", **extra}`` atomically; loadable with ``torch.load(weights_only=True)``.

    ``extra`` values must be plain Python (numbers, strings, lists, dicts) or tensors.

    Raises:
        OSError: the file cannot be written (torch's writer reports a full disk as a ``RuntimeError``,
            "unexpected pos" or "iostream error": raised as ``OSError`` naming the free space). The previous file is
            kept.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    try:
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save({"meta": meta.to_dict(), "state_dict": state, **extra}, tmp)
    except RuntimeError as exc:
        free = shutil.disk_usage(Path(path).resolve().parent).free
        raise OSError(
            errno.EIO, f"cannot write the checkpoint ({free / 2**20:.0f} MiB free on its disk): {one_line(exc)}",
            str(path),
        ) from None  # fmt: skip
    return Path(path)
