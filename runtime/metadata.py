"""The artifact contract: the metadata every checkpoint, ONNX file and engine sidecar carries.

It is stored in the checkpoint dict (key ``meta``), in ONNX ``metadata_props`` under :data:`ONNX_META_KEY`
(JSON) and, for TensorRT engines, in a JSON sidecar. No later step needs a separate config to use an artifact.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from runtime.errors import UserError

ONNX_META_KEY = "imgcls.meta"
FORMAT_VERSION = 1
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
CROP_MODES = ("center", "squash", "border")


@dataclasses.dataclass
class ModelMeta:
    """Self-description of a trained classifier.

    Attributes:
        architecture: timm model name, e.g. ``"resnet50"``.
        class_names: class names in logit order (index = position in the sorted unique training labels).
        input_size: ``(C, H, W)`` of the network input, pixels.
        mean, std: per-channel normalisation applied to RGB values scaled to [0, 1].
        interpolation: PIL resize filter name (one of :data:`INTERPOLATIONS`).
        crop_pct: eval resize factor: the image is resized to ``floor(H / crop_pct)`` before the crop.
        crop_mode: ``center``, ``squash`` or ``border`` (timm's eval crop modes).
        metrics: validation metrics of the checkpoint (``f1_micro``, ``f1_macro``, ``epoch``, ...).
        checkpoint_sha256: SHA-256 of the source checkpoint (set on exported artifacts).
        export: for exported files: ``opset``, ``exporter``, ``precision``, tool versions.
    """

    architecture: str
    class_names: list[str]
    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    checkpoint_sha256: str = ""
    export: dict[str, Any] = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``class_names``)."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (lists, not tuples), safe for JSON and ``torch.load(weights_only=True)``."""
        d = dataclasses.asdict(self)
        for key in ("input_size", "mean", "std"):
            d[key] = list(d[key])
        return d

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> ModelMeta:
        """Build and validate metadata read from ``source`` (a file name, for messages).

        Raises:
            UserError: a required key is missing, a key is unknown, or a value is invalid.
        """
        if not isinstance(data, dict):
            raise UserError(f"{source}: artifact metadata is not a mapping; re-export the artifact")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{source}: unknown metadata key {unknown[0]!r}; artifact from a newer version?")
        for f in dataclasses.fields(cls):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in data:
                raise UserError(f"{source}: artifact metadata lacks {f.name!r}; re-export the artifact")
        d = dict(data)
        for key in ("input_size", "mean", "std"):
            d[key] = tuple(d[key])
        d["class_names"] = [str(c) for c in d["class_names"]]
        meta = cls(**d)
        meta.validate(source)
        return meta

    @classmethod
    def from_json(cls, text: str, source: str) -> ModelMeta:
        """Parse JSON written by :meth:`to_json`.

        Raises:
            UserError: not JSON, or see :meth:`from_dict`.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise UserError(f"{source}: artifact metadata is not valid JSON; re-export the artifact") from None
        return cls.from_dict(data, source)

    def validate(self, source: str) -> None:
        """Check value ranges.

        Raises:
            UserError: naming the bad field.
        """
        if self.format_version > FORMAT_VERSION:
            raise UserError(f"{source}: metadata format {self.format_version} is newer than this tool's")
        if len(self.input_size) != 3 or self.input_size[0] != 3 or min(self.input_size) <= 0:
            raise UserError(f"{source}: input_size must be (3, H, W), got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise UserError(f"{source}: mean/std must have 3 values and std > 0")
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"{source}: interpolation {self.interpolation!r} not in {INTERPOLATIONS}")
        if self.crop_mode not in CROP_MODES:
            raise UserError(f"{source}: crop_mode {self.crop_mode!r} not in {CROP_MODES}")
        if not 0 < self.crop_pct <= 1.5:
            raise UserError(f"{source}: crop_pct must be in (0, 1.5], got {self.crop_pct}")
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise UserError(f"{source}: class_names must hold at least 2 distinct names")
