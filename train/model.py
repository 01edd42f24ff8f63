"""Model factory: timm ``create_model`` with hub or local pretrained weights, backbone freezing, and the
eval data config (size, mean/std, interpolation, crop) that becomes the artifact's metadata."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import timm
import torch
from timm.data import resolve_model_data_config

from runtime.engines.pytorch import fixed_input_size
from runtime.errors import UserError, short_reason
from runtime.metadata import ModelMeta
from train.config import TrainConfig


def create_model(cfg: TrainConfig, num_classes: int) -> torch.nn.Module:
    """``timm.create_model(cfg.architecture, num_classes=num_classes)`` with the configured weights.

    ``pretrained_path`` loads a local file through timm's ``pretrained_cfg_overlay=dict(file=...)`` (the
    classifier is re-initialised for ``num_classes``); ``pretrained: true`` downloads from the hub.

    Raises:
        UserError: unknown architecture, or pretrained weights that cannot be fetched (offline) or loaded.
    """
    if not timm.is_model(cfg.architecture):
        raise UserError(f"unknown timm architecture {cfg.architecture!r}")
    kwargs: dict = {"num_classes": num_classes, "drop_rate": cfg.drop_rate}
    if cfg.img_size is not None and fixed_input_size(cfg.architecture):
        kwargs["img_size"] = cfg.img_size
    if cfg.global_pool is not None:
        kwargs["global_pool"] = cfg.global_pool
    if cfg.pretrained_path:
        kwargs["pretrained_cfg_overlay"] = {"file": cfg.pretrained_path}
    pretrained = cfg.pretrained or bool(cfg.pretrained_path)
    if cfg.pretrained and not cfg.pretrained_path and not hub_reachable():
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True  # use the local cache only: no minute of retries
    try:
        return timm.create_model(cfg.architecture, pretrained=pretrained, **kwargs)
    except Exception as exc:
        if not pretrained:
            raise
        where = cfg.pretrained_path or "the Hugging Face hub"
        reason = f"{type(exc).__name__}: {short_reason(exc)}"
        raise UserError(
            f"cannot load pretrained weights for {cfg.architecture!r} from {where} ({reason}); "
            "offline, set `pretrained: false` or `pretrained_path: <local file>`"
        ) from None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face hub (``HF_ENDPOINT``) opens within ``timeout`` seconds."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def freeze_backbone(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Freeze all but the classifier (the seed's head-only training); returns the trainable parameters.

    Freezing parameters alone still lets BatchNorm layers in train mode overwrite their running statistics;
    :func:`frozen_norms_eval` (called after every ``model.train()``) keeps them as loaded."""
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.get_classifier()
    params = list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def frozen_norms_eval(model: torch.nn.Module) -> int:
    """Put every BatchNorm layer whose parameters are all frozen into eval mode (running mean/var unchanged,
    normalised with them); returns how many layers that was. Call after ``model.train()``."""
    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
                count += 1
    return count


def make_meta(model: torch.nn.Module, cfg: TrainConfig, class_names: list[str]) -> ModelMeta:
    """Artifact metadata from timm's data config of ``model``, overridden by the config's keys."""
    dc = resolve_model_data_config(model)
    size = (3, cfg.img_size, cfg.img_size) if cfg.img_size else tuple(int(v) for v in dc["input_size"])
    meta = ModelMeta(
        architecture=cfg.architecture,
        class_names=list(class_names),
        input_size=size,  # type: ignore[arg-type]
        mean=tuple(float(v) for v in (cfg.mean or dc["mean"])),  # type: ignore[arg-type]
        std=tuple(float(v) for v in (cfg.std or dc["std"])),  # type: ignore[arg-type]
        interpolation=cfg.interpolation or dc.get("interpolation", "bicubic"),
        crop_pct=float(cfg.crop_pct or dc.get("crop_pct", 0.875)),
        crop_mode=dc.get("crop_mode", "center") or "center",
    )
    meta.validate(cfg.source)
    return meta
