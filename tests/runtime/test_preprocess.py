"""The runtime eval transform equals timm's eval transform, and image decoding handles every PIL mode."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import timm.data
from PIL import Image

from runtime.metadata import ModelMeta
from runtime.preprocess import ImageError, eval_transform, open_rgb, preprocess_image, to_rgb

CONFIGS = [
    dict(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.875, crop_mode="center"),
    dict(input_size=(3, 64, 64), interpolation="bilinear", crop_pct=1.0, crop_mode="center"),
    dict(input_size=(3, 96, 128), interpolation="bicubic", crop_pct=0.9, crop_mode="center"),
    dict(input_size=(3, 160, 160), interpolation="bilinear", crop_pct=0.95, crop_mode="squash"),
    dict(input_size=(3, 112, 112), interpolation="bicubic", crop_pct=0.95, crop_mode="border"),
    dict(input_size=(3, 384, 384), interpolation="bicubic", crop_pct=1.0, crop_mode="center"),
]


def _meta(**cfg) -> ModelMeta:
    return ModelMeta(
        architecture="resnet18",
        class_names=["a", "b"],
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        **cfg,
    )


def _images(elpv_small: Path) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    real = Image.open(sorted((elpv_small / "train").iterdir())[0])
    photo = Image.fromarray(rng.integers(0, 256, (217, 333, 3), dtype=np.uint8))
    tall = Image.fromarray(rng.integers(0, 256, (401, 150, 3), dtype=np.uint8))
    tiny = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    return [real, photo, tall, tiny]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['crop_mode']}-{c['input_size'][1]}x{c['input_size'][2]}")
def test_eval_transform_matches_timm(cfg: dict, elpv_small: Path) -> None:
    meta = _meta(**cfg)
    reference = timm.data.create_transform(
        input_size=meta.input_size,
        is_training=False,
        interpolation=meta.interpolation,
        mean=meta.mean,
        std=meta.std,
        crop_pct=meta.crop_pct,
        crop_mode=meta.crop_mode,
    )
    for img in _images(elpv_small):
        ours = eval_transform(img, meta)
        theirs = reference(img.convert("RGB")).numpy()
        assert ours.dtype == np.float32
        assert ours.shape == meta.input_size
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_modes_convert_to_rgb() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white background
    opaque = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    assert to_rgb(opaque).getpixel((0, 0)) == (10, 20, 30)
    la = Image.new("LA", (2, 2), (100, 255))
    assert to_rgb(la).getpixel((0, 0)) == (100, 100, 100)
    p = Image.new("P", (2, 2), 0)
    p.putpalette([1, 2, 3] * 256)
    p.info["transparency"] = 0
    assert to_rgb(p).getpixel((0, 0)) == (255, 255, 255)
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 255, 255)
    i16 = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    assert i16.mode.startswith("I;16")
    assert to_rgb(i16).getpixel((0, 0)) == (255, 255, 255)
    for img in (rgba, la, p, cmyk, i16, Image.new("L", (2, 2), 7)):
        assert to_rgb(img).mode == "RGB"


def test_exif_orientation_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes())
    assert open_rgb(path).size == (20, 40)


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    r, _, b = open_rgb(path).getpixel((0, 0))
    assert r > 200 and b < 50


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty file"), (b"not an image at all", "cannot decode"), (None, "not found")],
    ids=["empty", "text", "missing"],
)
def test_bad_files_raise_image_error(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as info:
        preprocess_image(path, _meta(**CONFIGS[1]))
    assert str(path) in str(info.value)


def test_truncated_png_raises_image_error(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    path = tmp_path / "truncated.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"truncated\.png"):
        open_rgb(path)
