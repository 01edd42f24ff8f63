"""Writing the self-describing checkpoint (``artifacts/<model>/best.pt``); reading lives in
``runtime.engines.pytorch.load_checkpoint``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from runtime.atomic import atomic_path
from runtime.metadata import ModelMeta


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: ModelMeta, **extra: Any) -> Path:
    """Save ``{"meta", "state_dict", **extra}`` atomically; loadable with ``torch.load(weights_only=True)``.

    ``extra`` values must be plain Python (numbers, strings, lists, dicts) or tensors.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"meta": meta.to_dict(), "state_dict": state, **extra}, tmp)
    return Path(path)
