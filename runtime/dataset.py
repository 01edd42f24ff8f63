"""Datasets in the contest layout: ``train/`` and ``test/`` image folders, ``train.csv`` (``image_id,label``),
``test.csv`` (``image_id``). CSV reading and image-path resolution, with one-line errors for bad input.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd

from runtime.errors import UserError, short_reason

ID_COLUMN = "image_id"
LABEL_COLUMN = "label"


def require_dir(path: str | os.PathLike, what: str = "dataset folder") -> Path:
    """Return ``path`` as a Path.

    Raises:
        UserError: it is not an existing folder.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: {what} not found")
    return path


def read_csv(path: str | os.PathLike, require_label: bool = False, allow_empty_ids: bool = False) -> pd.DataFrame:
    """Read a CSV of image ids (and labels).

    Handles a UTF-8 BOM, CRLF line ends, surrounding whitespace and extra columns (kept, ignored here).

    Returns:
        DataFrame with a string ``image_id`` column (and a string ``label`` column when present), in file
        order.

    Raises:
        UserError: the file is missing or unreadable, has no ``image_id`` column (or no ``label`` column when
            ``require_label``), is empty, or has empty ids (unless ``allow_empty_ids``: prediction lists them).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: CSV file not found")
    try:
        df = pd.read_csv(path, dtype=str, encoding="utf-8-sig", skipinitialspace=True, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot parse CSV ({short_reason(exc)})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if ID_COLUMN not in df.columns:
        raise UserError(f"{path}: no {ID_COLUMN!r} column (found: {', '.join(df.columns) or 'none'})")
    if require_label and LABEL_COLUMN not in df.columns:
        raise UserError(f"{path}: no {LABEL_COLUMN!r} column (found: {', '.join(df.columns)})")
    for col in (ID_COLUMN, LABEL_COLUMN):
        if col in df.columns:
            df[col] = df[col].astype(str).str.strip()
    if df.empty:
        raise UserError(f"{path}: no rows")
    empty = df.index[df[ID_COLUMN] == ""]
    if len(empty) and not allow_empty_ids:
        raise UserError(f"{path}: empty {ID_COLUMN} on data row {int(empty[0]) + 1}")
    if require_label:
        empty = df.index[df[LABEL_COLUMN] == ""]
        if len(empty):
            raise UserError(f"{path}: empty {LABEL_COLUMN} on data row {int(empty[0]) + 1}")
    return df.reset_index(drop=True)


def image_dir_for(data_dir: str | os.PathLike, csv_name: str) -> Path:
    """Folder holding the images a CSV refers to, by the contest layout.

    ``test.csv`` -> ``<data>/test/``; any other CSV (``train.csv``, ``train_.csv``, ``valid_.csv``) ->
    ``<data>/<csv stem>/`` when that folder exists, else ``<data>/train/``.
    """
    data_dir = Path(data_dir)
    stem = Path(csv_name).stem
    candidate = data_dir / stem
    return candidate if candidate.is_dir() else data_dir / "train"


def resolve_ids(image_dir: str | os.PathLike, ids: list[str]) -> list[Path | UserError]:
    """Path of each id inside ``image_dir``, or a :class:`UserError` for an id that is absolute or leaves the
    folder (``..``), so a caller can skip it and go on. The check is on the path text: symbolic links inside
    the folder are the user's to make and are followed when the image is read."""
    image_dir = Path(image_dir)
    root = os.path.abspath(image_dir)
    out: list[Path | UserError] = []
    for image_id in ids:
        full = os.path.normpath(os.path.join(root, image_id))
        if not image_id:
            out.append(UserError("empty image id"))
        elif os.path.isabs(image_id) or not full.startswith(root + os.sep):
            out.append(UserError(f"image id {image_id!r} points outside {image_dir}"))
        else:
            out.append(image_dir / image_id)
    return out


def image_paths(image_dir: str | os.PathLike, ids: list[str]) -> list[Path]:
    """Paths of ``ids`` inside ``image_dir``.

    Raises:
        UserError: an id is absolute or leaves the folder (``..``).
    """
    paths = resolve_ids(image_dir, ids)
    for p in paths:
        if isinstance(p, UserError):
            raise p
    return paths  # type: ignore[return-value]


def require_unique_ids(df: pd.DataFrame, source: str | os.PathLike) -> None:
    """Raise UserError naming the first ``image_id`` that occurs twice in ``df`` (read from ``source``)."""
    duplicated = df["image_id"][df["image_id"].duplicated()]
    if len(duplicated):
        raise UserError(f"{source}: duplicate image_id {duplicated.iloc[0]!r}")


def read_class_map(path: str | os.PathLike) -> list[str]:
    """Read a class-map JSON (``{class name: index}``) and return the names ordered by index.

    Raises:
        UserError: missing file, not JSON, or indices that are not exactly 0..K-1.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: class map not found (run `make split` first)")
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(f"{path}: not valid JSON") from None
    if not isinstance(mapping, dict) or sorted(mapping.values()) != list(range(len(mapping))):
        raise UserError(f"{path}: expected {{class name: index}} with indices 0..K-1")
    return [name for name, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def class_map(names: list[str]) -> dict[str, int]:
    """Class map of the contest: sorted unique names -> index."""
    return {name: i for i, name in enumerate(sorted(set(names)))}


def encode_labels(labels: list[str], class_names: list[str], source: str) -> list[int]:
    """Map label names to indices of ``class_names``.

    Raises:
        UserError: a label is not one of ``class_names`` (names the first unknown one).
    """
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [lbl for lbl in labels if lbl not in index]
    if unknown:
        raise UserError(f"{source}: label {unknown[0]!r} is not in the class map ({len(class_names)} classes)")
    return [index[lbl] for lbl in labels]


def discover_inputs(
    data: str | os.PathLike | None, csv: str | os.PathLike | None, images: str | os.PathLike | None
) -> tuple[list[str], Path]:
    """(image ids in input order, image folder) of a prediction's input: a contest-layout dataset ``data``
    (``csv`` inside it, default ``test.csv``; images in :func:`image_dir_for`), a CSV with an ``image_id``
    column plus its image folder ``images``, or a folder ``images`` alone (every image under it, sorted by path).

    Raises:
        UserError: missing folders or CSV, no input given, or a folder without images.
    """
    if data is None and csv is None and images is None:
        raise UserError("give --data (contest layout), --csv with --images, or --images alone (a folder)")
    if data is None and csv is None:
        from PIL import Image

        folder = require_dir(images, "image folder")
        exts = {e.lower() for e, f in Image.registered_extensions().items() if f in Image.OPEN}
        ids = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix.lower() in exts and p.is_file())
        if not ids:
            raise UserError(f"{folder}: no image files found")
        return ids, folder
    base = require_dir(data) if data is not None else Path(".")
    csv_path = base / (csv or "test.csv")
    ids = read_csv(csv_path, allow_empty_ids=True)[ID_COLUMN].tolist()
    for note in csv_notes(csv_path, ids):
        print(f"note: {note}", file=sys.stderr)
    if images is not None:
        folder = Path(images)
    elif data is not None:
        folder = image_dir_for(base, csv_path.name)
    else:
        raise UserError("--csv without --data needs --images (the folder the ids are in)")
    return ids, require_dir(folder, "image folder")


def csv_notes(path: str | os.PathLike, ids: list[str]) -> list[str]:
    """One-line notes on what prediction does with the odd rows of the CSV at ``path`` whose ids are ``ids``:
    blank lines (skipped: they are no rows) and repeated image ids (predicted once per row, so the output keeps
    the input's rows)."""
    notes = []
    lines = Path(path).read_text(encoding="utf-8-sig", errors="replace").splitlines()[1:]
    if blank := sum(1 for line in lines if not line.strip()):
        notes.append(f"{path}: {blank} blank line(s) skipped")
    series = pd.Series(ids, dtype=str)
    repeated = series[series.duplicated() & (series != "")]
    if len(repeated):
        notes.append(
            f"{path}: {len(repeated)} repeated image_id row(s) (first {repeated.iloc[0]!r}), "
            "each predicted once per row"
        )
    return notes


def labelled_images(
    data: str | os.PathLike, csv_name: str, labels_csv: str | None = None, limit: int | None = None
) -> tuple[list[Path], list[str]]:
    """Image paths and labels of ``<data>/<csv_name>`` in file order (the first ``limit`` rows): labels from
    the CSV's own ``label`` column, or from ``<data>/<labels_csv>`` (e.g. ``test.csv`` + ``test_labels.csv``).
    Images are looked up in :func:`image_dir_for`; encode labels with :func:`encode_labels`.

    Raises:
        UserError: missing dataset, CSV or image folder, no image ids, or an image without a label.
    """
    data = require_dir(data)
    df = read_csv(data / csv_name, require_label=labels_csv is None)
    if limit is not None:
        df = df.head(limit)
    ids = df[ID_COLUMN].tolist()
    if not ids:
        raise UserError(f"{data / csv_name}: no image ids")
    if labels_csv is None:
        labels = df[LABEL_COLUMN].tolist()
    else:
        truth = read_csv(data / labels_csv, require_label=True).set_index(ID_COLUMN)[LABEL_COLUMN]
        missing = [i for i in ids if i not in truth.index]
        if missing:
            raise UserError(f"{data / labels_csv}: no label for image {missing[0]!r} of {csv_name}")
        labels = truth.loc[ids].tolist()
    return image_paths(require_dir(image_dir_for(data, csv_name), "image folder"), ids), labels


def labelled_indices(
    data: str | os.PathLike, csv_name: str, class_names: list[str], limit: int | None = None
) -> tuple[list[Path], list[int]]:
    """:func:`labelled_images` with the labels encoded as indices into ``class_names``.

    Raises:
        UserError: what :func:`labelled_images` raises, or a label that is not one of ``class_names``.
    """
    paths, labels = labelled_images(data, csv_name, limit=limit)
    return paths, encode_labels(labels, class_names, str(Path(data) / csv_name))
