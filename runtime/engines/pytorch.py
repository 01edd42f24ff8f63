"""PyTorch eager backend: rebuilds the timm model from a self-describing checkpoint (``best.pt``)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import timm
import torch

from runtime.engines.base import Engine
from runtime.errors import UserError, short_reason
from runtime.metadata import ModelMeta


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by training with ``torch.load(weights_only=True)`` (no code is unpickled).

    Returns:
        dict with ``meta`` (dict) and ``state_dict`` (tensors), plus training extras.

    Raises:
        UserError: missing, truncated or foreign file, or no metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, KeyError, RuntimeError) for foreign files
        kind = "truncated or corrupt" if zipfile.is_zipfile(path) else "not a PyTorch checkpoint"
        raise UserError(f"{path}: cannot load checkpoint ({kind}: {type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or "meta" not in ckpt or "state_dict" not in ckpt:
        raise UserError(f"{path}: not a checkpoint of this tool (no 'meta'/'state_dict'); train with `make train`")
    return ckpt


def fixed_input_size(architecture: str) -> bool:
    """Whether a timm architecture only runs at the input size it was built for (ViT, Swin, DeiT, MaxViT, ...:
    position embeddings or attention windows depend on it): timm's ``pretrained_cfg["fixed_input_size"]``. Such
    models take ``img_size`` at creation; their graphs break at other sizes (timm#1844)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(architecture)
    return bool(cfg is not None and cfg.fixed_input_size)


def build_model(meta: ModelMeta, state_dict: dict[str, torch.Tensor] | None, source: str) -> torch.nn.Module:
    """timm ``create_model(meta.architecture, num_classes=K)`` (no download) with ``state_dict`` loaded. A
    fixed-size backbone (ViT, Swin: timm's ``fixed_input_size``) trained at another size than its default is
    built with ``img_size`` = the checkpoint's input size (its position embeddings and windows depend on it).

    Raises:
        UserError: unknown architecture, or weights that do not fit it.
    """
    try:
        size = tuple(meta.input_size[1:])
        extra = {"img_size": size} if fixed_input_size(meta.architecture) else {}
        model = timm.create_model(meta.architecture, pretrained=False, num_classes=meta.num_classes, **extra)
    except RuntimeError as exc:
        raise UserError(f"{source}: cannot build {meta.architecture!r} ({exc})") from None
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise UserError(f"{source}: weights do not fit {meta.architecture!r} ({short_reason(exc)})") from None
    return model.eval()


def load_model(path: str | os.PathLike) -> tuple[torch.nn.Module, ModelMeta]:
    """Model (eval mode, CPU) and metadata from a checkpoint file."""
    ckpt = load_checkpoint(path)
    meta = ModelMeta.from_dict(ckpt["meta"], str(path))
    return build_model(meta, ckpt["state_dict"], str(path)), meta


#: ``amp`` option value -> (torch autocast dtype name, precision reported by :meth:`TorchEngine.describe`)
AMP_DTYPES = {"none": (None, "fp32"), "float16": ("float16", "fp16"), "bfloat16": ("bfloat16", "bf16")}


class TorchEngine(Engine):
    """Eager PyTorch inference on CPU or CUDA under ``torch.inference_mode``: FP32 weights, optionally run in
    mixed precision.

    Options: ``channels_last`` (NHWC memory format, default on: faster convolutions with oneDNN and cuDNN),
    ``compile`` (``torch.compile`` the model, default off: slow first batch, faster afterwards), ``amp``
    (``none`` (default), ``float16`` or ``bfloat16``: ``torch.autocast`` around the forward pass, as training's
    ``amp_dtype``; logits are returned as float32).

    Raises:
        UserError: CUDA requested but not available, an unknown ``amp`` value, or a bad checkpoint (see
            :func:`load_checkpoint`).
    """

    name = "torch"
    default_options: ClassVar[dict[str, Any]] = {"channels_last": True, "compile": False, "amp": "none"}

    def __init__(
        self, artifact: str | os.PathLike, device: str = "cpu", threads: int | None = None, **options: Any
    ) -> None:
        super().__init__(artifact, device, threads, **options)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("engine 'torch': CUDA requested but torch sees no GPU")
        if device.split(":")[0] not in ("cpu", "cuda"):
            raise UserError(f"engine 'torch': unknown device {device!r} (use cpu or cuda)")
        amp = "none" if self.options["amp"] in (None, False) else str(self.options["amp"])
        if amp not in AMP_DTYPES:
            raise UserError(f"engine 'torch': option 'amp' must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
        self.amp_dtype, self.precision = AMP_DTYPES[amp]
        if threads:
            torch.set_num_threads(threads)
        model, self.meta = load_model(self.artifact)
        self.model = model.to(device)
        self.memory_format = torch.channels_last if self.options["channels_last"] else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.forward = torch.compile(self.model) if self.options["compile"] else self.model

    def _autocast(self) -> torch.autocast:
        """``torch.autocast`` in the ``amp`` dtype on this device (disabled for ``amp: none``)."""
        dtype = getattr(torch, self.amp_dtype or "float16")
        return torch.autocast(torch.device(self.device).type, dtype=dtype, enabled=self.amp_dtype is not None)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """See :meth:`Engine.run`."""
        with torch.inference_mode(), self._autocast():
            x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
            return self.forward(x.contiguous(memory_format=self.memory_format)).float().cpu().numpy()

    def run_features(self, batch: np.ndarray) -> np.ndarray:
        """See :meth:`Engine.run_features` (``forward_head(forward_features(x), pre_logits=True)``)."""
        with torch.inference_mode(), self._autocast():
            x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
            x = x.contiguous(memory_format=self.memory_format)
            feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
            return feats.float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        """See :meth:`Engine.describe`."""
        return {
            "engine": self.name,
            "provider": f"torch {torch.__version__} {'compiled' if self.options['compile'] else 'eager'}"
            + (" channels_last" if self.options["channels_last"] else "")
            + (f" autocast {self.amp_dtype}" if self.amp_dtype else ""),
            "device": self.device,
            "precision": self.precision,
            "threads": torch.get_num_threads(),
        }
