"""Prediction outputs: rows streamed to a partial file as batches finish (so a killed run can ``--resume``),
then converted atomically to the requested format, with unreadable inputs listed in ``<out>.errors.csv``."""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from runtime import gallery
from runtime.atomic import atomic_path
from runtime.errors import UserError
from runtime.gallery import Figure

FORMATS = ("csv", "jsonl", "parquet")
#: columns of the partial file that never reach the final output
INTERNAL = ("confidence", "error")
CHUNK_ROWS = 10_000


def partial_path(out: str | os.PathLike) -> Path:
    """``submission.csv`` -> ``submission.csv.partial.csv``."""
    return Path(f"{out}.partial.csv")


def errors_path(out: str | os.PathLike) -> Path:
    """``submission.csv`` -> ``submission.csv.errors.csv``."""
    return Path(f"{out}.errors.csv")


class PartialOutput:
    """Append-only CSV of finished rows (``image_id``, ``label``, extra columns, ``confidence``, ``error``).

    Each batch is appended and flushed, so after a kill every complete line is a finished row.

    Args:
        out: the final output path; the partial file lives beside it.
        columns: the row columns, in order.
    """

    def __init__(self, out: str | os.PathLike, columns: list[str]) -> None:
        self.path = partial_path(out)
        self.columns = columns
        self._fh = None

    def open(self, resume: bool, signature: dict | None = None) -> int:
        """Start (or, with ``resume``, continue) the partial file; returns the number of rows already done.

        ``signature`` (model, precision, engine, inputs, ...) is stored beside the partial file; a resume with a
        different one is refused, so rows of two different runs are never mixed.

        Raises:
            UserError: ``resume`` with a partial file written by another run (options, model or inputs).
        """
        sig_path = Path(f"{self.path}.json")
        if resume and self.path.is_file() and signature is not None:
            saved = json.loads(sig_path.read_text()) if sig_path.is_file() else None
            if saved != json.loads(json.dumps(signature)):
                diff = sorted(
                    k for k in signature if saved is None or saved.get(k) != json.loads(json.dumps(signature[k]))
                )
                raise UserError(
                    f"{self.path}: written by another run ({', '.join(diff)} differ); rerun without --resume"
                )
        if signature is not None and not (resume and self.path.is_file()):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            sig_path.write_text(json.dumps(signature) + "\n")
        if resume and self.path.is_file():
            data = self.path.read_bytes()
            cut = data.rfind(b"\n") + 1  # drop a line cut by the kill
            lines = data[:cut].decode("utf-8").splitlines()
            if not lines or lines[0] != pd.DataFrame(columns=self.columns).to_csv(index=False).strip():
                raise UserError(f"{self.path}: written with other options (columns differ); rerun without --resume")
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)
            self._fh = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - held across batches
            return len(lines) - 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - held across batches
        pd.DataFrame(columns=self.columns).to_csv(self._fh, index=False)
        self._fh.flush()
        return 0

    def append(self, rows: pd.DataFrame) -> None:
        """Append finished rows and flush them to the OS."""
        assert self._fh is not None
        rows[self.columns].to_csv(self._fh, header=False, index=False)
        self._fh.flush()

    def close(self) -> None:
        """Close the file (it stays on disk until :func:`finalize`)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def discard(self) -> None:
        """Remove the partial file and its signature."""
        self.close()
        for path in (self.path, Path(f"{self.path}.json")):
            path.unlink(missing_ok=True)


def read_partial(path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Chunks of a partial file: ids, labels and errors as strings (empty, not NaN), probabilities as floats."""
    text_cols = {"image_id": str, "label": str, "error": str}
    yield from pd.read_csv(path, dtype=text_cols, keep_default_na=False, na_values={"confidence": [""]},
                           chunksize=chunk_rows)  # fmt: skip


class _Writer:
    """Writes DataFrame chunks to one file in ``csv``, ``jsonl`` or ``parquet``."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt, self._first, self._pq = path, fmt, True, None
        if fmt == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise UserError("--format parquet needs pyarrow: pip install pyarrow") from None
        self._fh = None if fmt == "parquet" else open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115

    def write(self, df: pd.DataFrame) -> None:
        if self.fmt == "csv":
            df.to_csv(self._fh, header=self._first, index=False)
        elif self.fmt == "jsonl":
            if len(df):
                text = df.to_json(orient="records", lines=True, force_ascii=False)
                self._fh.write(text if text.endswith("\n") else text + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if self._pq is None:
                self._pq = pq.ParquetWriter(str(self.path), table.schema)
            self._pq.write_table(table)
        self._first = False

    def close(self, columns: list[str]) -> None:
        if self.fmt == "parquet":
            if self._pq is None:  # no rows at all: still write a valid empty file with the columns
                import pyarrow as pa
                import pyarrow.parquet as pq

                empty = pd.DataFrame({c: pd.Series(dtype=str) for c in columns})
                pq.write_table(pa.Table.from_pandas(empty, preserve_index=False), str(self.path))
            else:
                self._pq.close()
        else:
            if self._first and self.fmt == "csv":
                pd.DataFrame(columns=columns).to_csv(self._fh, index=False)
            self._fh.close()


def finalize(out: str | os.PathLike, fmt: str) -> tuple[int, int]:
    """Turn the partial file into ``out`` (format ``fmt``) and ``<out>.errors.csv``, atomically; remove the
    partial file. Returns (rows written, rows skipped).

    Raises:
        UserError: unknown format, or parquet without pyarrow.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown output format {fmt!r} (choose from {', '.join(FORMATS)})")
    out = Path(out)
    src = partial_path(out)
    n_ok = n_err = 0
    columns: list[str] = []
    with atomic_path(out, suffix=f".{fmt}") as tmp_out, atomic_path(errors_path(out), suffix=".csv") as tmp_err:
        writer = _Writer(tmp_out, fmt)
        with open(tmp_err, "w", encoding="utf-8", newline="") as err_fh:
            pd.DataFrame(columns=["image_id", "reason"]).to_csv(err_fh, index=False)
            for chunk in read_partial(src):
                columns = [c for c in chunk.columns if c not in INTERNAL]
                bad = chunk["error"] != ""
                writer.write(chunk.loc[~bad, columns])
                chunk.loc[bad, ["image_id", "error"]].to_csv(err_fh, header=False, index=False)
                n_ok += int((~bad).sum())
                n_err += int(bad.sum())
        writer.close(columns or ["image_id", "label"])
        if n_err == 0:
            tmp_err.unlink()
    if n_err == 0 and errors_path(out).exists():
        errors_path(out).unlink()  # a stale list from an earlier run would mislead
    src.unlink()
    Path(f"{src}.json").unlink(missing_ok=True)
    return n_ok, n_err


def write_gallery(folder: str | os.PathLike, rows: pd.DataFrame, image_dir: Path) -> Path:
    """Copy each predicted image into ``folder/<label>/`` and write ``folder/index.html``, a gallery grouped by
    class with confidences (the seed's review feature). Built beside ``folder`` and renamed into place.

    Args:
        rows: ``image_id``, ``label`` and ``confidence`` (probability of the label, 0..1) of successful rows.
    """
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        sections = []
        for label, group in rows.sort_values(["label", "confidence"], ascending=[True, False]).groupby("label"):
            (tmp / label).mkdir()
            figures = []
            used: set[str] = set()
            for n, (image_id, conf) in enumerate(zip(group["image_id"], group["confidence"], strict=True)):
                name = Path(image_id).name
                if name in used:  # the same file name in two sub-folders: keep both
                    name = f"{n}_{name}"
                used.add(name)
                shutil.copyfile(image_dir / image_id, tmp / label / name)
                figures.append(Figure(urllib.parse.quote(f"{label}/{name}"), [image_id, f"{conf:.1%}"]))
            sections.append(gallery.grid(f"{label} ({len(group)})", figures))
        page = gallery.page(f"Predictions: {len(rows)} images", sections)
        (tmp / "index.html").write_text(page, encoding="utf-8")
    return folder / "index.html"
