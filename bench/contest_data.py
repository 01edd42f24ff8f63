"""A small generated dataset in the contest layout (``python -m bench.contest_data --out DIR``).

30 classes whose names mix case and hyphens (``Cls-Ab-00`` .. ``Cls-Ab-29``), ``<uuid4>.jpeg`` image ids, RGB JPEGs
of varying sizes (48..160 px a side, not square; ``--sizes 300 1600`` for contest-like photo sizes, the JPEG set
of the decode benchmark). Each class has its own colour and stripe frequency plus noise,
so a network can learn something in one epoch. Output::

    train/  test/          JPEG files
    train.csv              image_id,label
    test.csv               image_id
    test_labels.csv        image_id,label
    .imgcls-output         marker: written by this tool (``make clean`` may remove it)
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from runtime.atomic import atomic_path
from runtime.errors import ArgumentParser, UserError, description, positive_int, run_cli

CLASS_COUNT = 30


def class_names(count: int = CLASS_COUNT) -> list[str]:
    """Class names with hyphens and mixed case: ``Cls-Ab-00``, ``cLS-aB-01``, ..."""
    styles = ("Cls-Ab", "cLS-aB", "CLS-ab", "cls-AB")
    return [f"{styles[i % len(styles)]}-{i:02d}" for i in range(count)]


#: side lengths (px) of the default set, and of the contest-like photo set (``--sizes 300 1600``)
SMALL_SIZES, PHOTO_SIZES = (48, 160), (300, 1600)


def class_image(rng: np.random.Generator, k: int, height: int, width: int) -> Image.Image:
    """The RGB image of class ``k`` at ``height`` x ``width`` px: its colour and stripe frequency, plus noise."""
    h, w = height, width
    colour = np.array([(k * 37) % 256, (k * 91) % 256, (k * 53) % 256], dtype=np.float32)
    stripes = np.sin(np.arange(w, dtype=np.float32) * (1 + k % 6) * np.pi / w * 4)[None, :, None]
    pixels = colour[None, None, :] * (0.6 + 0.4 * stripes) + rng.normal(0, 20, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _image(rng: np.random.Generator, k: int, sizes: tuple[int, int] = SMALL_SIZES) -> Image.Image:
    h, w = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, size=2))
    return class_image(rng, k, h, w)


def generate(out_dir: str | Path, per_class: int = 12, test_per_class: int = 2, seed: int = 0,
             sizes: tuple[int, int] = SMALL_SIZES) -> Path:  # fmt: skip
    """Write the dataset to ``out_dir`` (replaced as a whole, atomically); returns it. ``sizes``: the range of
    each side in pixels (height and width drawn independently).

    Raises:
        runtime.errors.UserError: ``out_dir`` is a folder this tool did not write (see ``atomic_path``).
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    with atomic_path(out) as tmp:
        for split, n in (("train", per_class), ("test", test_per_class)):
            (tmp / split).mkdir(parents=True)
            for k, name in enumerate(class_names()):
                for _ in range(n):
                    image_id = f"{uuid.UUID(bytes=rng.bytes(16), version=4)}.jpeg"
                    _image(rng, k, sizes).save(tmp / split / image_id, "JPEG", quality=90)
                    rows[split].append((image_id, name))
        train = pd.DataFrame(rows["train"], columns=["image_id", "label"]).sample(frac=1.0, random_state=seed)
        test = pd.DataFrame(rows["test"], columns=["image_id", "label"])
        train.to_csv(tmp / "train.csv", index=False)
        test[["image_id"]].to_csv(tmp / "test.csv", index=False)
        test.to_csv(tmp / "test_labels.csv", index=False)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.contest_data``."""
    p = ArgumentParser(prog="python -m bench.contest_data", description=description(__doc__))
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--per-class", type=positive_int, default=12, help="training images per class (default 12)")
    p.add_argument("--test-per-class", type=positive_int, default=2, help="test images per class (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sizes",
        type=positive_int,
        nargs=2,
        default=SMALL_SIZES,
        metavar=("MIN", "MAX"),
        help="range of each image side in px (default 48 160; contest-like photos: 300 1600)",
    )
    args = p.parse_args(argv)
    if args.sizes[0] > args.sizes[1]:
        raise UserError(f"--sizes {args.sizes[0]} {args.sizes[1]}: MIN is larger than MAX")
    out = generate(args.out, args.per_class, args.test_per_class, args.seed, tuple(args.sizes))
    print(
        f"{out}: {CLASS_COUNT * args.per_class} train / {CLASS_COUNT * args.test_per_class} test images",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
