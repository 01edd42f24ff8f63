"""The private ``.export-*`` folder an export builds in, and the removal of those a killed export left behind.

A live export holds an exclusive ``flock`` on ``<folder>/.lock`` for as long as it runs; the kernel drops the lock
when the process dies, however it dies (``kill -9``, the OOM killer). So a folder whose lock can be taken is a dead
export's, and the next export removes it; one still locked belongs to an export running now and is left alone.
Installed artifacts live outside these folders and are never touched here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PREFIX = ".export-"
LOCK = ".lock"
#: a folder without a lock file younger than this may be one being created right now
_UNLOCKED_GRACE_S = 60


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _is_stale(folder: Path) -> bool:
    lock = folder / LOCK
    if not lock.is_file():
        return time.time() - folder.stat().st_mtime > _UNLOCKED_GRACE_S
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
    return True


def remove_stale(model_dir: Path) -> list[Path]:
    """Remove the ``.export-*`` folders of dead exports in ``model_dir``; prints one line if any; returns them."""
    if not model_dir.is_dir():
        return []
    removed, size = [], 0
    for folder in sorted(model_dir.glob(f"{PREFIX}*")):
        if folder.is_dir() and _is_stale(folder):
            size += _folder_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        names = ", ".join(p.name for p in removed)
        print(
            f"removed {len(removed)} leftover folder(s) of a killed export in {model_dir} ({names}, "
            f"{size / 2**20:.0f} MiB); installed artifacts untouched",
            file=sys.stderr,
        )
    return removed


@contextlib.contextmanager
def work_folder(model_dir: Path) -> Iterator[Path]:
    """A new locked ``model_dir/.export-*`` folder, removed on exit; stale ones are removed first."""
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(model_dir)
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=model_dir))
    try:
        with open(folder / LOCK, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
