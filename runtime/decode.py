"""The fast decode path: libjpeg-turbo DCT-scaled JPEG decoding (simplejpeg) and OpenCV's PNG decoder.

``exact`` (:func:`runtime.preprocess.preprocess_image`) decodes at full size with Pillow and resizes with Pillow's
antialiased filter: it is timm's eval transform and the reference. ``fast`` (:func:`fast_preprocess`) gives the
same geometry (:func:`runtime.preprocess.resize_plan`, crop, pad, normalisation) from a cheaper decode:

* JPEG (8-bit greyscale or RGB): ``simplejpeg.decode_jpeg(min_height=, min_width=)`` lets libjpeg-turbo scale
  the DCT by 1/2, 1/4 or 1/8 while staying at least the resize target (:func:`_dct_size`, what Pillow's ``draft``
  does, with a faster decoder), in the *stored* orientation (the target is swapped first for a 90-degree EXIF
  orientation, which is then applied to the small decoded image). The exact path's Pillow filter then resizes
  the small image to the size planned from the full one. Below 2x the target no DCT scaling applies and the
  output equals the exact path's (both decoders are libjpeg-turbo with the same settings).
* PNG (8-bit greyscale or RGB): ``cv2.imdecode``; anything else (other modes and formats): Pillow's decode.
  These are lossless, so both decoders give the same pixels, and the exact path's resize follows.

Measured on the 256 verification images of ELPV saved as JPEG (quality 90), top-1 agreement with the exact path:
OpenCV ``INTER_AREA`` after DCT scaling 97.7% (resnet18_cpu) and 96.1% (efficientnet_lite0), Pillow's bicubic
after DCT scaling 100% for both; so the resize stays Pillow's (it costs about twice OpenCV's on these sizes).

The header is read by Pillow first, so the decompression-bomb guard, the format and mode checks and the EXIF
orientation are Pillow's; any decoder failure falls back to the exact reader, so an unreadable file is skipped
with the exact path's one-line reason. Whether the fast path may replace the exact one for an artifact is
measured (``export.verify``'s decode check), never assumed.
"""

from __future__ import annotations

import functools
import io
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from runtime.artifacts import VERIFY_RECORD
from runtime.errors import UserError
from runtime.metadata import ModelMeta
from runtime.preprocess import (
    PIL_FILTERS,
    ImageError,
    crop_to_input,
    normalize,
    open_image,
    preprocess_image,
    resize_and_crop,
    resize_plan,
    to_l_or_rgb,
)

DECODE_MODES = ("exact", "fast")
_ORIENTATION = 0x0112
#: EXIF orientations whose display is the stored image turned by 90 degrees (width and height swap)
_SWAPS = (5, 6, 7, 8)


@functools.cache
def _libraries() -> tuple[ModuleType, ModuleType]:
    """(simplejpeg, cv2), imported once; cv2 runs single-threaded (the decode pool is the parallelism).

    Raises:
        UserError: either is not installed (one line saying how to install it).
    """
    try:
        import cv2
        import simplejpeg
    except ImportError as exc:
        raise UserError(
            f"--decode fast needs simplejpeg and opencv-python-headless ({exc.name} is missing): "
            "pip install '.[fast]', or use --decode exact"
        ) from None
    cv2.setNumThreads(1)
    return simplejpeg, cv2


def check_fast() -> None:
    """Refuse the fast path when its libraries are missing.

    Raises:
        UserError: simplejpeg or cv2 cannot be imported.
    """
    _libraries()


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W[, C]) array, as ``PIL.ImageOps.exif_transpose`` does."""
    if orientation in (5, 6, 7, 8):
        arr = arr.swapaxes(0, 1)  # transpose; then flips turn it into each rotation
    flips = {2: (1,), 3: (0, 1), 4: (0,), 6: (1,), 7: (0, 1), 8: (0,)}.get(orientation, ())
    for axis in flips:
        arr = np.flip(arr, axis)
    return np.ascontiguousarray(arr)


def _dct_size(stored_hw: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) to ask libjpeg-turbo for: the stored size scaled by the smallest power-of-two factor
    (1, 1/2, 1/4, 1/8, as Pillow's ``draft``) that stays >= the resize target. simplejpeg's ``min_height`` /
    ``min_width`` alone would also pick M/8 factors (6/8 for 375 -> 256); measured on a noisy 500x375 pattern,
    those left 2.1 grey levels of mean difference from the exact path against 0.6 for a full decode, at the same
    speed."""
    k = 8
    while k > 1 and (stored_hw[0] / k < target_hw[0] or stored_hw[1] / k < target_hw[1]):
        k //= 2
    return -(-stored_hw[0] // k), -(-stored_hw[1] // k)


def _decode_jpeg(data: bytes, mode: str, min_hw: tuple[int, int]) -> np.ndarray | None:
    """uint8 (H, W) (``mode`` L) or (H, W, 3) (RGB) in the stored orientation, DCT-scaled to at least
    ``min_hw``; ``None`` when libjpeg-turbo reports an error or a warning (truncated data): the exact path decides."""
    simplejpeg, _ = _libraries()
    try:
        arr = simplejpeg.decode_jpeg(
            data, colorspace="GRAY" if mode == "L" else "RGB", min_height=min_hw[0], min_width=min_hw[1]
        )
    except ValueError:
        return None
    return arr[..., 0] if arr.ndim == 3 and mode == "L" else arr


def _decode_png(data: bytes, mode: str) -> Image.Image | None:
    """An 8-bit L or RGB PNG decoded by OpenCV (stored orientation: a PNG with EXIF goes the Pillow way), or
    ``None`` for other modes or a file OpenCV cannot decode."""
    if mode not in ("L", "RGB"):
        return None
    _, cv2 = _libraries()
    flag = (cv2.IMREAD_GRAYSCALE if mode == "L" else cv2.IMREAD_COLOR_RGB) | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error:
        return None
    return None if arr is None else Image.fromarray(arr, mode)


def _header(path: Path, data: bytes) -> tuple[str, str, tuple[int, int], int] | None:
    """(format, mode, stored (width, height), EXIF orientation) read by Pillow without decoding the pixels, or
    ``None`` when Pillow cannot identify the file (the exact reader then names the reason). Only JPEG's
    orientation is read (from its APP1 header); a PNG with an ``eXIf`` chunk (Pillow would decode the whole image
    to find one stored after the pixels) reports format ``"PNG+EXIF"``, which goes the Pillow way, like every
    other format.

    Raises:
        ImageError: empty, not an image, or a decompression bomb (the exact path's messages).
    """
    if not data:
        raise ImageError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = str(img.format)
                if fmt == "PNG" and b"eXIf" in data:
                    return "PNG+EXIF", img.mode, img.size, 1  # not PNG: decoded by Pillow
                orientation = img.getexif().get(_ORIENTATION, 1) if fmt == "JPEG" else 1
                return fmt, img.mode, img.size, int(orientation) if orientation in range(1, 9) else 1
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: image too large (decompression bomb guard)") from None
    except (OSError, SyntaxError, ValueError):
        return None


def fast_image(path: str | os.PathLike, meta: ModelMeta) -> Image.Image:
    """Decode ``path`` and resize + crop it for ``meta`` (the fast path): 8-bit L or RGB PIL image of
    ``meta.input_size[1:]``, in display orientation.

    Raises:
        ImageError: the file cannot be read (the exact path's reasons).
        UserError: simplejpeg or cv2 is missing.
    """
    _libraries()
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: image file not found") from None
    except OSError:
        return _exact_resize(open_image(path), meta)
    header = _header(path, data)
    if header is None:
        return _exact_resize(open_image(path), meta)
    fmt, mode, (w, h), orientation = header
    if fmt != "JPEG" or mode not in ("L", "RGB"):
        decoded = _decode_png(data, mode) if fmt == "PNG" else None
        return _exact_resize(open_image(path) if decoded is None else decoded, meta)
    swap = orientation in _SWAPS
    size_hw, fill = resize_plan((h, w) if swap else (w, h), meta)  # planned from the full size, as the exact path
    stored_hw = (size_hw[1], size_hw[0]) if swap else size_hw
    arr = _decode_jpeg(data, mode, _dct_size((h, w), stored_hw))
    if arr is None:
        return _exact_resize(open_image(path), meta)
    img = Image.fromarray(_orient(arr, orientation), mode)
    if img.mode == "L" and meta.crop_mode == "border":
        img = img.convert("RGB")  # the border fill differs per channel
    img = img.resize((size_hw[1], size_hw[0]), PIL_FILTERS[meta.interpolation])
    return crop_to_input(img, meta, fill)


def _exact_resize(img: Image.Image, meta: ModelMeta) -> Image.Image:
    """The exact path's resize and crop of a decoded image (lossless formats: OpenCV and Pillow decode the same
    pixels, so the fast path's output is the exact one's)."""
    img = to_l_or_rgb(img)
    if img.mode == "L" and meta.crop_mode == "border":
        img = img.convert("RGB")
    return resize_and_crop(img, meta)


def fast_preprocess(path: str | os.PathLike, meta: ModelMeta) -> np.ndarray:
    """The fast path's eval transform: float32 (3, H, W) of ``meta.input_size``, normalised like the exact one.

    Raises:
        ImageError: the file cannot be read (the exact path's reasons).
        UserError: simplejpeg or cv2 is missing.
    """
    return normalize(fast_image(path, meta), meta)


def loader_for(mode: str) -> Callable[[str | os.PathLike, ModelMeta], np.ndarray]:
    """The per-image loader of a decode mode: :func:`runtime.preprocess.preprocess_image` for ``exact``,
    :func:`fast_preprocess` for ``fast``.

    Raises:
        UserError: an unknown mode, or ``fast`` without its libraries.
    """
    if mode == "exact":
        return preprocess_image
    if mode == "fast":
        check_fast()
        return fast_preprocess
    raise UserError(f"unknown decode mode {mode!r} (choose from {', '.join(DECODE_MODES)})")


#: ``verify.json`` key of the fast-vs-exact decode check of a model folder (written by ``export.verify``)
DECODE_RECORD_KEY = "decode (fast)"
#: ``--decode`` choices: ``auto`` is ``fast`` where the artifact's decode check passed, else ``exact``
DECODE_CHOICES = ("auto", *DECODE_MODES)


def fast_verified(artifact: str | os.PathLike) -> bool:
    """Whether the ``verify.json`` of ``artifact``'s model folder (its folder or the one above) records a passed
    fast-vs-exact decode check (:data:`DECODE_RECORD_KEY`). Missing or unreadable records count as no."""
    path = Path(artifact)
    for root in (path.parent, path.parent.parent):
        record = root / VERIFY_RECORD
        if record.is_file():
            try:
                entry = json.loads(record.read_text()).get(DECODE_RECORD_KEY, {})
            except (OSError, ValueError, AttributeError):
                return False
            return isinstance(entry, dict) and entry.get("passed") is True
    return False


def resolve_mode(requested: str, artifacts: Sequence[str | os.PathLike]) -> str:
    """The decode mode a run uses: ``exact``/``fast`` as asked (``fast`` refused without its libraries);
    ``auto``: ``fast`` when every artifact's decode check passed and the libraries import, else ``exact``.

    Raises:
        UserError: an unknown mode, or ``fast`` without simplejpeg/cv2.
    """
    if requested == "auto":
        if not artifacts or not all(fast_verified(a) for a in artifacts):
            return "exact"
        try:
            check_fast()
        except UserError:
            return "exact"
        return "fast"
    loader_for(requested)
    return requested
