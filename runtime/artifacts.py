"""Where each engine x precision artifact lives inside ``artifacts/<model>/``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from runtime.errors import UserError

PRECISIONS = ("fp32", "fp16", "int8")

#: (engine, precision) -> path relative to the model folder
ARTIFACT_FILES: dict[tuple[str, str], str] = {
    ("torch", "fp32"): "best.pt",
    ("onnx", "fp32"): "model.onnx",
    ("onnx", "fp16"): "model.fp16.onnx",
    ("onnx", "int8"): "model.int8.onnx",
    ("openvino", "fp32"): "openvino/model.xml",
    ("openvino", "int8"): "openvino/model.int8.xml",  # NNCF's INT8 IR (export target openvino-int8)
    ("trt", "fp32"): "model.fp32.engine",
    ("trt", "fp16"): "model.fp16.engine",
    ("trt", "int8"): "model.int8.engine",
}


#: (file, engine, precision): a file made for one engine that another also reads (given the file's path); the
#: export and ``make verify`` check that reading too and record it as ``"<file> (<engine>)"`` (OpenVINO compiles
#: ONNX Runtime's QDQ file to its INT8 kernels, but loses accuracy on it: README, "OpenVINO INT8")
CROSS_READS: list[tuple[str, str, str]] = [("model.int8.onnx", "openvino", "int8")]


def artifact_file(model_dir: str | os.PathLike, engine: str, precision: str) -> Path | None:
    """``model_dir / <file>`` for ``engine`` at ``precision``, or ``None`` when that pair does not exist."""
    rel = ARTIFACT_FILES.get((engine, precision))
    return None if rel is None else Path(model_dir) / rel


#: the verification record of a model folder: artifact key (:func:`record_key`) -> result, written by the export
VERIFY_RECORD = "verify.json"


def record_key(rel: str, engine: str) -> str:
    """``verify.json`` key of an artifact checked with ``engine``: the file name for the engine the file is made
    for (the first one listed in ``ARTIFACT_FILES``), ``"<file> (<engine>)"`` for another engine reading it."""
    primary = next(e for (e, _), r in ARTIFACT_FILES.items() if r == rel)
    return rel if engine == primary else f"{rel} ({engine})"


def precisions_for(engine: str) -> list[str]:
    """Precisions an engine can run."""
    return [p for (e, p) in ARTIFACT_FILES if e == engine]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: summary written by ``make train FOLDS=k`` once every fold is trained (``train.kfold``)
CV_SUMMARY = "cv.json"
#: suffix of the model folder ``python -m train --pretrained-only`` writes (pretrained backbone, untrained head:
#: for features only, so the bench skips it when it picks every trained model)
PRETRAINED_SUFFIX = "_pretrained"


def is_fold_dir(path: Path) -> bool:
    """True for a k-fold model folder name, ``fold<k>``."""
    return path.name.startswith("fold") and path.name[4:].isdigit()


def _read_cv_summary(path: Path, train_cmd: str) -> tuple[dict, int]:
    """(the ``cv.json`` mapping, its number of folds K).

    Raises:
        UserError: unreadable or without an integer ``folds``.
    """
    try:
        summary = json.loads(path.read_text())
        return summary, int(summary["folds"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: unreadable k-fold summary ({exc}); train again with {train_cmd}") from None


def fold_dirs(model_dir: str | os.PathLike, folds: int | None = None) -> list[Path]:
    """The k-fold models ``fold0/ .. fold<K-1>/`` of ``model_dir``, K read from its ``cv.json``.

    ``cv.json`` is written when ``make train MODEL=<m> FOLDS=K`` finishes, so folders left by an earlier run with
    more folds are not included. When ``cv.json`` records each fold's ``best.pt`` SHA-256, a fold retrained since
    (an unfinished later k-fold run) is refused; a folder without ``best.pt`` (exported files only) is not checked.

    Args:
        folds: expected K (``make export FOLDS=K``); ``None`` accepts what ``cv.json`` says.

    Raises:
        UserError: no or unreadable ``cv.json``, K differs from ``folds``, a missing fold folder, or a
            fold whose ``best.pt`` changed since ``cv.json`` was written.
    """
    model_dir = Path(model_dir)
    summary_path = model_dir / CV_SUMMARY
    train_cmd = f"`make train MODEL={model_dir.name} FOLDS=k`"
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: no such model folder")
    if is_fold_dir(model_dir):
        raise UserError(f"{model_dir}: one fold model; give the folder holding the folds ({model_dir.parent})")
    if not summary_path.is_file():
        raise UserError(f"{model_dir}: no {CV_SUMMARY}, so no finished k-fold run; train with {train_cmd} first")
    summary, count = _read_cv_summary(summary_path, train_cmd)
    if folds is not None and folds != count:
        raise UserError(f"{summary_path}: the finished k-fold run has {count} folds, not {folds}")
    hashes = summary.get("checkpoints_sha256") or [None] * count
    out = []
    for k in range(count):
        folder = model_dir / f"fold{k}"
        if not folder.is_dir():
            raise UserError(f"{folder}: missing fold model (listed in {summary_path})")
        best = folder / "best.pt"
        if hashes[k] and best.is_file() and file_sha256(best) != hashes[k]:
            raise UserError(
                f"{best} was retrained after {summary_path} (an unfinished k-fold run): finish it with "
                f"`make train MODEL={model_dir.name} FOLDS={count} RESUME=1`"
            )
        out.append(folder)
    return out


def export_command(checkpoint: Path) -> str:
    """The ``make export`` command that rebuilds the artifacts of ``checkpoint`` (a fold model: all folds, K read
    from the run's ``cv.json``; ``FOLDS=k`` when it cannot be read)."""
    folder = checkpoint.parent
    if is_fold_dir(folder):
        try:
            count = str(_read_cv_summary(folder.parent / CV_SUMMARY, "")[1])
        except UserError:
            count = "k"
        return f"make export MODEL={folder.parent.name} FOLDS={count}"
    return f"make export MODEL={folder.name}"


def failed_gate(artifact: str | os.PathLike, engine: str, export: dict) -> bool:
    """Whether ``artifact`` failed its verification gate when read by ``engine``: the result embedded in its
    metadata (``export["verification"]``, for its own engine) or the record in the ``verify.json`` of its model
    folder (:func:`record_key`; e.g. OpenVINO running ``model.int8.onnx``). Unreadable records count as no."""
    if export.get("verification", {}).get("passed") is False:
        return True
    path = Path(artifact)
    for root in (path.parent, path.parent.parent):
        record = root / VERIFY_RECORD
        if not record.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if rel not in ARTIFACT_FILES.values():
            return False
        try:
            entry = json.loads(record.read_text()).get(record_key(rel, engine), {})
        except (OSError, ValueError, AttributeError):
            return False
        return isinstance(entry, dict) and entry.get("passed") is False
    return False
