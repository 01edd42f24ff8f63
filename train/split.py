"""``python -m train.split`` (``make split``): seeded, stratified train/valid CSVs and the class map.

The seed project's splitting step. Reads ``<dataset>/<csv>`` (``image_id,label``) and writes, beside it,
``train_.csv``, ``valid_.csv`` and ``encode_classes.json`` (sorted class names -> index). Parameters come from
``configs/split.yaml``; any key can be overridden with ``--set key=value``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from sklearn.model_selection import train_test_split

from runtime.atomic import atomic_path, write_text
from runtime.config import add_set_argument, load_config, parse_overrides
from runtime.dataset import class_map, read_csv, require_dir
from runtime.errors import ArgumentParser, UserError, description, run_cli

TRAIN_SPLIT = "train_.csv"
VALID_SPLIT = "valid_.csv"
CLASS_MAP = "encode_classes.json"


@dataclasses.dataclass
class SplitConfig:
    """Keys of ``configs/split.yaml``."""

    dataset: str = "data/elpv"
    csv: str = "train.csv"
    valid_fraction: float = 0.2
    seed: int = 42

    def validate(self, source: str) -> None:
        """Raises UserError for a fraction outside (0, 1)."""
        if not 0 < self.valid_fraction < 1:
            raise UserError(f"{source}: valid_fraction must be in (0, 1), got {self.valid_fraction}")


def split(cfg: SplitConfig) -> tuple[Path, Path, Path]:
    """Write the train/valid split and class map; returns their paths.

    Raises:
        UserError: missing dataset or CSV, a class with fewer than 2 images, or too few images for the
            requested valid fraction.
    """
    data = require_dir(cfg.dataset)
    csv_path = data / cfg.csv
    df = read_csv(csv_path, require_label=True)
    dup = df["image_id"].duplicated(keep=False)
    if dup.any():
        rows = [int(i) + 2 for i in df.index[dup][:2]]  # +2: header line and 1-based numbering
        raise UserError(f"{csv_path}: image_id {df['image_id'][dup].iloc[0]!r} appears more than once (lines {rows})")
    counts = df["label"].value_counts()
    if counts.min() < 2:
        raise UserError(f"{csv_path}: class {counts.idxmin()!r} has only 1 image; stratified split needs >= 2")
    n_valid = round(len(df) * cfg.valid_fraction)
    if n_valid < len(counts) or len(df) - n_valid < len(counts):
        raise UserError(
            f"{csv_path}: {len(df)} images cannot hold every one of {len(counts)} classes in both splits "
            f"at valid_fraction={cfg.valid_fraction}"
        )
    train, valid = train_test_split(df, test_size=n_valid, random_state=cfg.seed, stratify=df["label"])
    outputs = (data / TRAIN_SPLIT, data / VALID_SPLIT, data / CLASS_MAP)
    for frame, path in zip((train, valid), outputs[:2], strict=False):
        with atomic_path(path, suffix=".csv") as tmp:
            frame[["image_id", "label"]].to_csv(tmp, index=False)
    write_text(outputs[2], json.dumps(class_map(df["label"].tolist()), indent=2) + "\n")
    print(
        f"{data}: {len(train)} train / {len(valid)} valid images, {len(counts)} classes -> "
        f"{', '.join(p.name for p in outputs)}",
        file=sys.stderr,
    )
    return outputs


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m train.split``."""
    p = ArgumentParser(prog="python -m train.split", description=description(__doc__))
    p.add_argument("--config", default="configs/split.yaml", help="YAML config (default: configs/split.yaml)")
    add_set_argument(p)
    args = p.parse_args(argv)
    split(load_config(SplitConfig, args.config, parse_overrides(args.set)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
