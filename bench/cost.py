"""Model cost from the checkpoint: parameters and multiply-accumulates per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_cost(checkpoint: str | Path) -> dict[str, Any]:
    """Parameters and GMACs for one image at the checkpoint's input size.

    Counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass (it counts
    matmul/convolution FLOPs as 2 x MACs; elementwise ops are not counted, as in fvcore/ptflops conventions).

    Returns:
        ``params`` (count), ``gmacs`` (GMAC per image); both ``None`` when torch is not installed.

    Raises:
        UserError: unreadable checkpoint (from :func:`runtime.engines.pytorch.load_model`).
    """
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return {"params": None, "gmacs": None}
    from runtime.engines.pytorch import load_model

    model, meta = load_model(checkpoint)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *meta.input_size))
    return {
        "params": int(sum(p.numel() for p in model.parameters())),
        "gmacs": counter.get_total_flops() / 2 / 1e9,
    }
