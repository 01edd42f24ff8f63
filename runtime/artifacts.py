"""Where each engine x precision artifact lives inside ``artifacts/<model>/``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8")

#: (engine, precision) -> path relative to the model folder
ARTIFACT_FILES: dict[tuple[str, str], str] = {
    ("torch", "fp32"): "best.pt",
    ("onnx", "fp32"): "model.onnx",
    ("onnx", "fp16"): "model.fp16.onnx",
    ("onnx", "int8"): "model.int8.onnx",
    ("openvino", "fp32"): "openvino/model.xml",
    ("openvino", "int8"): "model.int8.onnx",  # OpenVINO compiles the QDQ ONNX to its INT8 kernels
    ("trt", "fp32"): "model.fp32.engine",
    ("trt", "fp16"): "model.fp16.engine",
    ("trt", "int8"): "model.int8.engine",
}


def artifact_file(model_dir: str | os.PathLike, engine: str, precision: str) -> Path | None:
    """``model_dir / <file>`` for ``engine`` at ``precision``, or ``None`` when that pair does not exist."""
    rel = ARTIFACT_FILES.get((engine, precision))
    return None if rel is None else Path(model_dir) / rel


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
