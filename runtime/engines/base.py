"""The one engine interface every backend implements (after polygraphy's runners)."""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from runtime.errors import UserError
from runtime.metadata import ModelMeta


class Engine(abc.ABC):
    """Runs one artifact on one device.

    Subclasses open the artifact in ``__init__`` (raising :class:`runtime.errors.UserError` when the artifact or
    the request cannot be honoured), set :attr:`meta`, and implement :meth:`run`. An engine never silently runs
    something other than what was asked (another provider, device or precision): it raises instead.

    Args:
        artifact: path of the artifact file this backend reads.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
        threads: intra-op CPU threads; ``None`` leaves the library default.
        options: backend-specific options (e.g. ``channels_last`` for torch, provider options for onnx);
            an option a backend does not know is an error.
    """

    name: str = ""

    #: options this backend accepts, with their defaults
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, artifact: str | os.PathLike, device: str = "cpu", threads: int | None = None, **options: Any
    ) -> None:
        unknown = sorted(set(options) - set(self.default_options))
        if unknown:
            known = ", ".join(self.default_options) or "none"
            raise UserError(f"engine {self.name!r}: unknown option {unknown[0]!r} (known: {known})")
        for key, value in options.items():
            default = self.default_options[key]
            if isinstance(default, bool) and not isinstance(value, bool):
                raise UserError(f"engine {self.name!r}: option {key!r} must be true or false, got {value!r}")
            if isinstance(default, dict) and not isinstance(value, dict):
                raise UserError(f"engine {self.name!r}: option {key!r} must be a mapping, got {value!r}")
        self.artifact = Path(artifact)
        self.device = device
        self.threads = threads
        self.options = {**self.default_options, **options}
        self.meta: ModelMeta

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Forward a batch.

        Args:
            batch: float32 array (N, 3, H, W), preprocessed by :func:`runtime.preprocess.eval_transform`.

        Returns:
            float32 logits (N, num_classes).
        """

    @property
    def in_flight(self) -> int:
        """Batches :meth:`run_stream` keeps in flight at once (1 here; OpenVINO: one per infer request)."""
        return 1

    def run_features(self, batch: np.ndarray) -> np.ndarray:
        """Pooled pre-logit features of a batch (timm ``forward_head(x, pre_logits=True)``).

        Args:
            batch: float32 array (N, 3, H, W), preprocessed.

        Returns:
            float32 features (N, D).

        Raises:
            UserError: the artifact carries no ``features`` output (re-export it).
        """
        raise UserError(f"engine {self.name!r} cannot produce features")

    def run_stream(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Logits of each batch of ``batches``, in order: float32 (N_i, num_classes) per float32 (N_i, 3, H, W).

        A backend that can keep several batches in flight (OpenVINO's infer requests) overrides this, so a
        stream of batches runs at the backend's throughput; here they run one after another through
        :meth:`run`. ``batches`` is read lazily (at most a few batches ahead of the results).
        """
        for batch in batches:
            yield self.run(batch)

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What actually runs: ``engine``, ``provider``, ``device``, ``precision``, ``threads``."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release the backend's resources (idempotent)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
