"""Atomic file writes: write to a temporary name in the same folder, then rename over the target."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: file written into every output folder, so that a later run may replace the folder (and no other)
OUTPUT_MARKER = ".imgcls-output"


def check_replaceable(target: Path) -> None:
    """Raise UserError if ``target`` is a non-empty folder without this tool's marker (see :func:`atomic_path`)."""
    if target.is_dir() and any(target.iterdir()) and not (target / OUTPUT_MARKER).is_file():
        from runtime.errors import UserError

        raise UserError(
            f"{target}: folder exists, is not empty and was not written by this tool; choose another folder"
        )


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``.

    The caller writes the whole file (or folder) to the yielded path. If the block raises, the temporary
    file is removed and ``target`` is left exactly as it was, so no half-written output ever replaces a
    good one. If the block writes nothing at the temporary path, ``target`` is left untouched. ``suffix``
    keeps a file extension on the temporary name for writers that look at it (e.g. ``.onnx``). Works for
    files and for folders: a folder output gets a marker file, and an existing folder is replaced only when it
    carries that marker (or is empty), so a user's folder is never wiped.

    Raises:
        runtime.errors.UserError: ``target`` is a non-empty folder this tool did not write, or has no name.
    """
    target = Path(target)
    if target.name in ("", ".", ".."):
        from runtime.errors import UserError

        raise UserError(f"{target}: give a file or folder name")
    check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if not tmp.exists():
            return  # the caller wrote nothing: leave the target as it is
        if tmp.is_dir():
            (tmp / OUTPUT_MARKER).write_text("written by imgcls-deploy; this folder is replaced on the next run\n")
            check_replaceable(target)  # the target may have been filled meanwhile
        if target.is_dir() and tmp.is_dir():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
