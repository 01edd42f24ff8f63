"""The fast decode path (runtime.decode) against the exact one: every mode, EXIF orientation with DCT scaling,
the bad-input corpus, agreement on a generated JPEG set, and its one-line refusal without its libraries.

Tolerance (stated, measured on these noisy test patterns): where libjpeg-turbo scales the DCT (a JPEG at least
twice the resize target) the mean absolute difference of the normalised (3, H, W) arrays is below 0.03 (about
1.7 grey levels of 255 at std 0.225; measured 0.009..0.019) and no element differs by more than 0.25 (measured
<= 0.14). Everywhere else (smaller JPEGs, every lossless format and mode) the arrays are equal. A wrong
orientation differs by 0.7 or more on the test pattern.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import decode
from runtime.errors import UserError
from runtime.metadata import ModelMeta
from runtime.preprocess import ImageError, preprocess_image

MEAN_TOL, MAX_TOL = 0.03, 0.25
META = ModelMeta("resnet18", ["a", "b"], (3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SMALL = ModelMeta("resnet18", ["a", "b"], (3, 128, 128), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), crop_pct=1.0)


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """An asymmetric test pattern (gradients in x and y, a texture, noise): every orientation looks different."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    pixels = np.stack([x / w * 255, y / h * 255, 128 + 100 * np.sin(x / 13) * np.cos(y / 17)], -1)
    return Image.fromarray(np.clip(pixels + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8))


def _close(path: Path, meta: ModelMeta = META) -> float:
    exact, fast = preprocess_image(path, meta), decode.fast_preprocess(path, meta)
    assert fast.dtype == np.float32 and fast.shape == exact.shape == meta.input_size
    diff = np.abs(exact - fast)
    assert diff.mean() < MEAN_TOL and diff.max() < MAX_TOL, (path.name, diff.mean(), diff.max())
    return float(diff.mean())


def _modes() -> dict[str, Image.Image]:
    base = _photo(640, 480)
    grey = base.convert("L")
    p = base.convert("P")
    p.info["transparency"] = 0
    return {"rgb.jpg": base, "l.jpg": grey, "cmyk.jpg": base.convert("CMYK"), "rgb.png": base, "l.png": grey,
            "rgba.png": base.convert("RGBA"), "la.png": base.convert("LA"), "p.png": base.convert("P"),
            "p-transparent.png": p, "i16.png": Image.fromarray(np.asarray(grey).astype(np.uint16) * 257),
            "rgb.webp": base, "rgb.bmp": base, "p.gif": base,
            "one-bit.png": grey.convert("1", dither=Image.Dither.NONE)}  # fmt: skip


@pytest.mark.parametrize("name", list(_modes()))
def test_every_mode_decodes_like_the_exact_path(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    _modes()[name].save(path)
    _close(path)
    # 640x480 is under twice the 256 px resize target: no DCT scaling, so every mode gives the exact array
    np.testing.assert_array_equal(decode.fast_preprocess(path, META), preprocess_image(path, META))


@pytest.mark.parametrize("meta", [SMALL, ModelMeta("r", ["a"], (3, 112, 96), (0.5,) * 3, (0.2,) * 3, "bilinear",
                                                   0.95, "border")], ids=["center", "border"])  # fmt: skip
def test_greyscale_png_and_crop_modes(tmp_path: Path, meta: ModelMeta) -> None:
    for i, (w, h) in enumerate([(300, 300), (500, 375), (90, 60)]):
        path = tmp_path / f"{i}.png"
        _photo(w, h, i).convert("L").save(path)
        _close(path, meta)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_with_dct_scaling(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    _photo(1280, 960).save(path, exif=exif.tobytes(), quality=90)  # 1280x960 -> DCT-scaled by 1/2 for 224
    assert _close(path) > 0  # not bit-equal: the DCT-scaled decode was taken
    if orientation != 1:  # the tag is honoured: ignoring it would differ by far more than the tolerance
        plain = tmp_path / "plain.jpg"
        _photo(1280, 960).save(plain, quality=90)
        wrong = np.abs(decode.fast_preprocess(plain, META) - preprocess_image(path, META)).mean()
        assert wrong > 10 * MEAN_TOL


def test_agreement_on_a_generated_contest_size_jpeg_set(tmp_path: Path) -> None:
    sizes = [(300, 300), (500, 375), (375, 500), (800, 600), (1024, 768), (1600, 1200), (1200, 1600)]
    means = []
    for i, (w, h) in enumerate(sizes):
        path = tmp_path / f"{i}.jpg"
        _photo(w, h, i).save(path, quality=90)
        means.append(_close(path))
    assert np.mean(means) < MEAN_TOL / 2


def _png_bomb() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _bad_inputs() -> dict[str, bytes | None]:
    jpeg, png = io.BytesIO(), io.BytesIO()
    _photo(400, 300).save(jpeg, "JPEG")
    _photo(64, 64).save(png, "PNG")
    return {"zero.png": b"", "text.png": b"not an image at all", "missing.png": None, "bomb.png": _png_bomb(),
            "truncated.png": png.getvalue()[: len(png.getvalue()) // 2],
            "truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 3],
            "header-only.jpg": jpeg.getvalue()[:200]}  # fmt: skip


@pytest.mark.parametrize("name", list(_bad_inputs()))
def test_bad_inputs_skip_with_the_exact_paths_reason(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    content = _bad_inputs()[name]
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError) as exact:
        preprocess_image(path, META)
    with pytest.raises(ImageError) as fast:
        decode.fast_preprocess(path, META)
    assert str(fast.value) == str(exact.value)
    assert "\n" not in str(fast.value) and str(path) in str(fast.value)


def test_fast_refuses_with_one_line_without_its_libraries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    _photo(64, 48).save(path)
    decode._libraries.cache_clear()
    monkeypatch.setitem(sys.modules, "simplejpeg", None)
    try:
        with pytest.raises(UserError, match="simplejpeg") as info:
            decode.loader_for("fast")
        assert "\n" not in str(info.value) and "--decode exact" in str(info.value)
        with pytest.raises(UserError):
            decode.resolve_mode("fast", [])
        assert decode.resolve_mode("auto", []) == "exact"
        assert decode.loader_for("exact")(path, META).shape == META.input_size  # exact still works
    finally:
        decode._libraries.cache_clear()


def test_auto_is_fast_only_where_the_decode_check_passed(tmp_path: Path) -> None:
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"")
    assert decode.resolve_mode("auto", [artifact]) == "exact"
    record = tmp_path / "verify.json"
    record.write_text('{"decode (fast)": {"passed": false}}')
    assert decode.resolve_mode("auto", [artifact]) == "exact"
    record.write_text('{"decode (fast)": {"passed": true}}')
    assert decode.resolve_mode("auto", [artifact]) == "fast"
    assert decode.resolve_mode("exact", [artifact]) == "exact"
    with pytest.raises(UserError, match="unknown decode mode"):
        decode.resolve_mode("quick", [artifact])


def test_png_exif_orientation_goes_the_pillow_way(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.png"
    _photo(400, 300).save(path, exif=exif.tobytes())
    _close(path)
    assert decode.fast_image(path, META).size == (224, 224)


def test_five_crop_tta_refuses_fast() -> None:
    from runtime.members import Member
    from runtime.predictor import Predictor

    with pytest.raises(UserError, match="five-crop TTA decodes with the exact path"):
        Predictor([Member("nowhere", "onnx", "fp32")], "five-crop", decode="fast")
