"""``python -m train.prepare_elpv`` (``make data``): write the ELPV solar-cell dataset in the contest layout.

Source: the installed PyPI package ``elpv-dataset`` (Deitsch et al., Solar Energy 185, 2019; images
CC-BY-NC-SA-4.0, read from the package, never committed). 2,624 greyscale 300x300 PNGs; the defect
probability {0, 1/3, 2/3, 1} becomes four classes ``defect_000``, ``defect_033``, ``defect_067``,
``defect_100``. The held-out 25% is a seeded split stratified by defect level and cell type (mono/poly), as in
the paper. Output (``data/elpv/``)::

    train/  test/          PNG files
    train.csv              image_id,label
    test.csv               image_id
    test_labels.csv        image_id,label   (held-out labels, for scoring only)
"""

from __future__ import annotations

import importlib.resources
import shutil
import sys
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from runtime.atomic import atomic_path
from runtime.errors import ArgumentParser, UserError, description, run_cli

LEVEL_NAMES = ("defect_000", "defect_033", "defect_067", "defect_100")
OUTPUT_FILES = ("train.csv", "test.csv", "test_labels.csv")


def elpv_table() -> tuple[pd.DataFrame, Path]:
    """ELPV labels as a DataFrame (``image_id``, ``label``, ``cell_type``, ``source``) and the data folder.

    Raises:
        UserError: the ``elpv-dataset`` package is not installed.
    """
    try:
        root = Path(str(importlib.resources.files("elpv_dataset"))) / "data"
    except ModuleNotFoundError:
        raise UserError("the ELPV data needs the 'demo' extra: pip install '.[demo]'") from None
    table = pd.read_csv(root / "labels.csv", sep=r"\s+", header=None, names=["path", "probability", "type"])
    levels = (table["probability"] * 3).round().astype(int)
    return (
        pd.DataFrame(
            {
                "image_id": table["path"].map(lambda p: Path(p).name),
                "label": [LEVEL_NAMES[i] for i in levels],
                "cell_type": table["type"],
                "source": table["path"],
            }
        ),
        root,
    )


def _stratified_split(df: pd.DataFrame, test_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split stratified by level x cell type; by level alone when a small subset leaves a stratum too small."""
    key = df["label"] + "/" + df["cell_type"]
    n_test = round(len(df) * test_fraction)
    if key.value_counts().min() < 2 or n_test < key.nunique():
        key = df["label"]
    train, test = train_test_split(df, test_size=test_fraction, random_state=seed, stratify=key)
    return train.sort_values("image_id"), test.sort_values("image_id")


def is_complete(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds the three CSVs and every image they list."""
    if not all((out_dir / f).is_file() for f in OUTPUT_FILES):
        return False
    for split in ("train", "test"):
        ids = pd.read_csv(out_dir / f"{split}.csv", dtype=str)["image_id"]
        if not all((out_dir / split / i).is_file() for i in ids):
            return False
    return True


def prepare(
    out_dir: str | Path,
    test_fraction: float = 0.25,
    seed: int = 0,
    per_class: int | None = None,
    force: bool = False,
) -> Path:
    """Write ELPV in the contest layout to ``out_dir`` (atomically: built beside it, then renamed).

    Args:
        out_dir: target folder, e.g. ``data/elpv``.
        test_fraction: held-out share (0.25 as in Deitsch et al. 2019).
        seed: split seed.
        per_class: keep only this many images per class (seeded); for tests and quick trials.
        force: rebuild even if ``out_dir`` is already complete.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        UserError: bad arguments or missing package.
    """
    out_dir = Path(out_dir)
    if not 0 < test_fraction < 1:
        raise UserError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not force and is_complete(out_dir):
        print(f"{out_dir}: already prepared (use --force to rebuild)", file=sys.stderr)
        return out_dir
    df, root = elpv_table()
    if per_class is not None:
        if per_class < 4:
            raise UserError(f"per_class must be >= 4, got {per_class}")
        df = df.groupby("label", group_keys=False).sample(n=per_class, random_state=seed)
    train, test = _stratified_split(df, test_fraction, seed)
    with atomic_path(out_dir) as tmp:
        for split, rows in (("train", train), ("test", test)):
            (tmp / split).mkdir(parents=True)
            for image_id, source in zip(rows["image_id"], rows["source"], strict=False):
                shutil.copyfile(root / source, tmp / split / image_id)
        train[["image_id", "label"]].to_csv(tmp / "train.csv", index=False)
        test[["image_id"]].to_csv(tmp / "test.csv", index=False)
        test[["image_id", "label"]].to_csv(tmp / "test_labels.csv", index=False)
    print(f"{out_dir}: {len(train)} train / {len(test)} test images, 4 classes", file=sys.stderr)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m train.prepare_elpv``."""
    p = ArgumentParser(prog="python -m train.prepare_elpv", description=description(__doc__))
    p.add_argument("--out", default="data/elpv", help="output folder (default: data/elpv)")
    p.add_argument("--test-fraction", type=float, default=0.25, help="held-out share (default: 0.25)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    p.add_argument("--per-class", type=int, default=None, help="keep N images per class (quick trials)")
    p.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    args = p.parse_args(argv)
    prepare(args.out, args.test_fraction, args.seed, args.per_class, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
