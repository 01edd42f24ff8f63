"""INT8 calibration ranges, streamed, in bounded memory: ONNX Runtime's own calibrators, run stride by stride on a
session whose execution order frees each activation after its last use.

ONNX Runtime calibrates by adding a ReduceMin and a ReduceMax (MinMax) or a graph output (entropy, percentile) to
every tensor it calibrates. With the library's session (default execution order) the reductions of a tensor run
long after the tensor is made, so most activations of the batch are alive at once: measured here on swin_base
(224 px, 663 MiB of summed activations per image), one calibration forward at batch 8 grew the process by 2.9 GB,
against 0.5 GB for the plain model. ``ExecutionOrder.PRIORITY_BASED`` runs each reduction as soon as its input
exists: the same forward needed no memory beyond the loaded session, and ran 3 x faster (2.5 s vs 7.9 s).
``quantize_static`` builds its session internally, so this module makes the calibrator the way it does
(``create_calibrator`` with its defaults for our options), replaces the session, feeds the images one stride at a
time (``collect_data`` per range, what ``CalibStridedMinMax`` does: ranges merged and histograms accumulated per
stride, the activations dropped), and writes ONNX Runtime's calibration cache (``save_tensors_data``), which
``quantize_static(calibration_cache_path=...)`` then reads instead of calibrating again.
"""

from __future__ import annotations

import gc
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

from runtime.metadata import ModelMeta
from runtime.pipeline import iter_batches

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds preprocessed real images to ONNX Runtime's calibrator, ``batch_size`` at a time, from the range set
    by ``set_range`` (all images until then): ONNX Runtime's strided calibration reads one range per stride.

    Args:
        paths: image files (e.g. the first N training images).
        meta: artifact metadata: the eval transform's size, mean/std, interpolation and crop.
        input_name: the graph input (``"input"``).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], meta: ModelMeta, input_name: str, batch_size: int = 16):
        self.paths, self.meta, self.input_name, self.batch_size = list(paths), meta, input_name, batch_size
        self._batches: Iterator[np.ndarray] | None = None
        self._range = (0, len(self.paths))

    def __len__(self) -> int:
        """Number of calibration images."""
        return len(self.paths)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read images ``start_index:end_index`` next (from the first of them)."""
        self._range = (start_index, end_index)
        self._batches = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next ``{input_name: float32 (n, 3, H, W)}`` or ``None`` when the images are exhausted."""
        if self._batches is None:
            start, end = self._range
            self._batches = iter_batches(self.paths[start:end], self.meta, self.batch_size)
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        """Start again from the first image."""
        self._batches = None


def _calibration_session(path: str) -> ort.InferenceSession:
    """The calibrator's session: graph optimisations off as in ONNX Runtime's own (a fused graph would lose
    calibrated tensors), each reduction run as soon as its input exists (see the module docstring)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def calibrate(
    model: str | os.PathLike,
    reader: ImageCalibrationReader,
    method: str,
    op_types: Sequence[str],
    stride: int,
    cache: str | os.PathLike,
) -> None:
    """Calibrate ``model`` (a pre-processed FP32 ONNX file) on the reader's images, ``stride`` at a time, and
    write the ranges to ``cache`` (ONNX Runtime's calibration-cache JSON, for ``quantize_static``).

    Args:
        method: a :data:`CALIBRATION_METHODS` name; ONNX Runtime's defaults for it (MinMax: asymmetric,
            per tensor; entropy: 128 bins; percentile: 99.999, 2048 bins), as ``quantize_static`` uses them.
        op_types: node types whose inputs and outputs are calibrated (those to be quantized).
        stride: images run and reduced at a time (>= 1; a last range may be shorter; ``quantize_int8`` checks
            its arguments before the costly pre-processing).
    """
    with tempfile.TemporaryDirectory(prefix="calib-") as tmp:
        calibrator = create_calibrator(
            Path(model), list(op_types), str(Path(tmp) / "augmented.onnx"), CALIBRATION_METHODS[method]
        )
        calibrator.infer_session = None  # the library's session goes before ours is made: one copy of the weights
        gc.collect()
        calibrator.infer_session = _calibration_session(calibrator.augmented_model_path)
        for start in range(0, len(reader), stride):
            reader.set_range(start, start + stride)
            calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache)
