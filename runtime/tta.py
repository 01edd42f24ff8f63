"""Test-time augmentation: several views of each image, softmax probabilities averaged over the views.

``hflip`` and ``hflip+vflip`` flip the preprocessed batch (no extra decoding); ``five-crop`` resizes the image
1/0.875 larger than the eval transform does and takes the four corner crops and the centre crop at the model's
input size (torchvision's ``FiveCrop`` layout). Every view of a batch goes through the engine in one call.
"""

from __future__ import annotations

import os

import numpy as np

from runtime.engines.base import Engine
from runtime.errors import UserError
from runtime.metadata import ModelMeta
from runtime.pipeline import softmax
from runtime.preprocess import normalize, open_image, resize_and_crop, to_l_or_rgb

TTA_MODES = ("none", "hflip", "hflip+vflip", "five-crop")


def check_mode(mode: str) -> str:
    """Return ``mode``.

    Raises:
        UserError: unknown TTA name.
    """
    if mode not in TTA_MODES:
        raise UserError(f"unknown TTA {mode!r} (choose from {', '.join(TTA_MODES)})")
    return mode


def five_crop_views(path: str | os.PathLike, meta: ModelMeta) -> np.ndarray:
    """float32 (5, 3, H, W): corner and centre crops of the image resized 1/0.875 larger than for eval.

    Raises:
        runtime.preprocess.ImageError: unreadable image.
    """
    _, h, w = meta.input_size
    big = ModelMeta.from_dict({**meta.to_dict(), "crop_pct": meta.crop_pct * 0.875, "crop_mode": "center"}, "tta")
    big.input_size = (3, int(h / 0.875), int(w / 0.875))
    img = resize_and_crop(to_l_or_rgb(open_image(path)), big)
    bw, bh = img.size
    boxes = [(0, 0), (bw - w, 0), (0, bh - h), (bw - w, bh - h), ((bw - w) // 2, (bh - h) // 2)]
    return np.stack([normalize(img.crop((x, y, x + w, y + h)), meta) for x, y in boxes])


def tta_probs(engine: Engine, batch: np.ndarray, mode: str) -> np.ndarray:
    """Mean softmax probabilities (N, K) over the views of ``batch``.

    Args:
        batch: (N, 3, H, W) for ``none``/flips, or (N, 5, 3, H, W) from :func:`five_crop_views`.
    """
    if mode == "five-crop":
        n, v = batch.shape[:2]
        views = batch.reshape(n * v, *batch.shape[2:])
    else:
        flips = {"none": [], "hflip": [batch[..., ::-1]], "hflip+vflip": [batch[..., ::-1], batch[..., ::-1, :]]}
        stacked = [batch, *flips[mode]]
        n, v = len(batch), len(stacked)
        views = np.ascontiguousarray(np.stack(stacked, axis=1).reshape(n * v, *batch.shape[1:]))
    probs = softmax(engine.run(views)).reshape(n, v, -1)
    return probs.mean(axis=1)
