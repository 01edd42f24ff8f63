"""The eval transform, defined once: decode -> RGB -> resize -> center crop -> normalise (numpy/PIL, no torch).

Training's validation, export verification, prediction and the benchmark all call :func:`preprocess_image`.
It reproduces timm's ``transforms_imagenet_eval`` (timm/data/transforms_factory.py) for the ``center``,
``squash`` and ``border`` crop modes, using the same PIL resize calls torchvision makes on PIL images, so the
output equals timm's transform to float rounding (tested in ``tests/runtime/test_preprocess.py``).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from runtime.errors import UserError, short_reason
from runtime.metadata import ModelMeta

#: ``meta.interpolation`` name -> Pillow resampling filter
PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class ImageError(UserError):
    """An image file could not be read or decoded (the message names the file and the reason)."""


def to_l_or_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit ``L`` (greyscale sources) or 8-bit ``RGB`` (everything else).

    16/32-bit greyscale (``I;16``, ``I``, ``F``) is scaled to 0..255 by its type's range; modes with
    transparency (``RGBA``, ``LA``, ``P`` with a transparent index) are composited over white, so that
    transparent pixels do not show whatever colour happens to be stored under them. Greyscale stays one channel
    so that resizing costs a third; the three identical RGB channels are produced at normalisation.
    """
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.uint16)
        return Image.fromarray((arr >> 8).astype(np.uint8), mode="L")
    if mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8), mode="L")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        gray = img.mode in ("LA", "La")
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(background, rgba)
        return flat.convert("L") if gray else flat.convert("RGB")
    return img.convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see :func:`to_l_or_rgb` for how each mode is treated)."""
    img = to_l_or_rgb(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file, apply its EXIF orientation and return it as 8-bit L or RGB (fully decoded).

    Raises:
        ImageError: the file is missing, empty, not an image, truncated or a decompression bomb.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.seek(0)
                img.load()
                img = ImageOps.exif_transpose(img) or img
                return to_l_or_rgb(img)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: image file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: image too large (decompression bomb guard)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode image ({short_reason(exc)})") from None


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """:func:`open_image` converted to 8-bit RGB (for training augmentation).

    Raises:
        ImageError: see :func:`open_image`.
    """
    return to_rgb(open_image(path))


def _resize(img: Image.Image, size_hw: tuple[int, int], resample: int) -> Image.Image:
    return img.resize((size_hw[1], size_hw[0]), resample)


def _center_crop_or_pad(img: Image.Image, size_hw: tuple[int, int], fill: tuple[int, ...]) -> Image.Image:
    crop_h, crop_w = size_hw
    w, h = img.size
    if crop_w > w or crop_h > h:
        canvas = Image.new(img.mode, (max(w, crop_w), max(h, crop_h)), fill if img.mode == "RGB" else fill[0])
        canvas.paste(img, ((crop_w - w) // 2 if crop_w > w else 0, (crop_h - h) // 2 if crop_h > h else 0))
        img = canvas
        w, h = img.size
    top = round((h - crop_h) / 2.0)
    left = round((w - crop_w) / 2.0)
    return img.crop((left, top, left + crop_w, top + crop_h))


def resize_plan(size_wh: tuple[int, int], meta: ModelMeta) -> tuple[tuple[int, int], tuple[int, ...]]:
    """How timm's eval transform resizes an image of ``size_wh`` (width, height) pixels: the (height, width)
    it is resized to before the crop, and the RGB fill of the pad that ``border`` mode (or a crop larger than the
    resized image) adds. Shared by the exact and the fast (``runtime.decode``) paths."""
    _, out_h, out_w = meta.input_size
    scale_h, scale_w = (math.floor(out_h / meta.crop_pct), math.floor(out_w / meta.crop_pct))
    w, h = size_wh
    if meta.crop_mode == "squash":
        return (scale_h, scale_w), (0, 0, 0)
    if meta.crop_mode == "border":
        ratio = max(h / scale_h, w / scale_w)
        return (round(h / ratio), round(w / ratio)), tuple(round(255 * v) for v in meta.mean)
    if scale_h == scale_w:  # torchvision Resize(int): shorter side to scale, longer side truncated
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = scale_h, int(scale_h * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        return (new_h, new_w), (0, 0, 0)
    ratio = min(h / scale_h, w / scale_w)  # timm ResizeKeepRatio(longest=0): scale by the smaller ratio
    return (round(h / ratio), round(w / ratio)), (0, 0, 0)


def crop_to_input(img: Image.Image, meta: ModelMeta, fill: tuple[int, ...]) -> Image.Image:
    """Center crop (padding with ``fill`` where the image is smaller) to ``meta.input_size[1:]``."""
    return _center_crop_or_pad(img, tuple(meta.input_size[1:]), fill)  # type: ignore[arg-type]


def resize_and_crop(img: Image.Image, meta: ModelMeta) -> Image.Image:
    """Resize and crop an L or RGB image to ``meta.input_size[1:]`` the way timm's eval transform does."""
    size_hw, fill = resize_plan(img.size, meta)
    return crop_to_input(_resize(img, size_hw, PIL_FILTERS[meta.interpolation]), meta, fill)


@functools.lru_cache(maxsize=16)
def _lut(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32 table of ``(v / 255 - mean[c]) / std[c]``, computed in float32 like the direct form."""
    v = np.arange(256, dtype=np.float32) / np.float32(255.0)
    m, s = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray((v[None, :] - m[:, None]) / s[:, None])


def normalize(img: Image.Image, meta: ModelMeta) -> np.ndarray:
    """L or RGB uint8 image -> float32 array (3, H, W): ``(x / 255 - mean) / std`` per channel (by table lookup;
    an L image gives three equal channels before normalisation, as ``convert("RGB")`` would)."""
    lut = _lut(tuple(meta.mean), tuple(meta.std))
    arr = np.asarray(img)
    if arr.ndim == 2:
        return lut[:, arr]
    return np.stack([lut[c][arr[..., c]] for c in range(3)])


def eval_transform(img: Image.Image, meta: ModelMeta) -> np.ndarray:
    """Eval transform of a decoded image: float32 array of shape ``meta.input_size`` (3, H, W)."""
    img = to_l_or_rgb(img)
    if img.mode == "L" and meta.crop_mode == "border":
        img = img.convert("RGB")  # the border fill differs per channel
    return normalize(resize_and_crop(img, meta), meta)


def preprocess_image(path: str | os.PathLike, meta: ModelMeta) -> np.ndarray:
    """Read ``path`` and apply the eval transform: float32 (3, H, W), normalised.

    Raises:
        ImageError: the file cannot be read (see :func:`open_image`).
    """
    return eval_transform(open_image(path), meta)
