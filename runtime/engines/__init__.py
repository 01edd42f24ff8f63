"""Engine registry: backends are looked up by name and imported only when used.

``runtime`` must work without torch: the torch backend is imported only when ``--engine torch`` is asked for.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from runtime.engines.base import Engine
from runtime.errors import UserError

# name -> (module, class, pip extra that provides its library)
_BACKENDS: dict[str, tuple[str, str, str]] = {
    "torch": ("runtime.engines.pytorch", "TorchEngine", "train"),
    "onnx": ("runtime.engines.onnxrt", "OnnxEngine", "cpu"),
}

ENGINE_NAMES = tuple(_BACKENDS)


def engine_class(name: str) -> type[Engine]:
    """The Engine subclass registered as ``name``.

    Raises:
        UserError: unknown name, or its library is not installed (the message names the pip extra).
    """
    if name not in _BACKENDS:
        raise UserError(f"unknown engine {name!r} (choose from: {', '.join(_BACKENDS)})")
    module_name, class_name, extra = _BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(
            f"engine {name!r} needs the missing module '{exc.name or exc}': pip install '.[{extra}]'"
        ) from None
    return getattr(module, class_name)


def resolve_artifact(name: str, model: str | os.PathLike) -> Path:
    """The artifact file for engine ``name``: ``model`` itself if it is a file, else the engine's default
    file inside the folder ``model`` (e.g. ``artifacts/<m>/model.onnx``).

    Raises:
        UserError: nothing found at that path.
    """
    model = Path(model)
    path = model / engine_class(name).artifact_name if model.is_dir() else model
    if not path.is_file():
        hint = " (run `make train` / `make export` first)" if model.is_dir() or not model.exists() else ""
        raise UserError(f"{path}: artifact for engine {name!r} not found{hint}")
    return path


def create_engine(name: str, model: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> Engine:
    """Open ``model`` (an artifact file or a model folder) with backend ``name``.

    Raises:
        UserError: unknown engine, missing library, missing or mismatched artifact.
    """
    cls = engine_class(name)
    return cls(resolve_artifact(name, model), device=device, threads=threads)
