"""Engine registry: backends are looked up by name and imported only when used.

``runtime`` must work without torch: the torch backend is imported only when ``--engine torch`` is asked for,
and likewise OpenVINO and TensorRT.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from runtime.artifacts import CV_SUMMARY, artifact_file, export_command, file_sha256, precisions_for
from runtime.engines.base import Engine
from runtime.errors import UserError
from runtime.metadata import ModelMeta

# name -> file suffixes the backend reads
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "torch": (".pt", ".pth"),
    "onnx": (".onnx",),
    "openvino": (".xml", ".onnx"),
    "trt": (".engine", ".plan"),
}

# name -> (module, class, pip extra that provides its library)
_BACKENDS: dict[str, tuple[str, str, str]] = {
    "torch": ("runtime.engines.pytorch", "TorchEngine", "train"),
    "onnx": ("runtime.engines.onnxrt", "OnnxEngine", "cpu"),
    "openvino": ("runtime.engines.openvino", "OpenVINOEngine", "cpu"),
    "trt": ("runtime.engines.tensorrt", "TensorRTEngine", "gpu"),
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


def resolve_artifact(name: str, model: str | os.PathLike, precision: str | None = None) -> Path:
    """The artifact file for engine ``name``: ``model`` itself if it is a file, else the file for
    ``precision`` (default fp32) inside the folder ``model`` (e.g. ``artifacts/<m>/model.int8.onnx``).

    Raises:
        UserError: the engine has no such precision, or nothing is found at that path.
    """
    model = Path(model)
    if model.is_file():
        if model.suffix.lower() not in _SUFFIXES.get(name, (model.suffix.lower(),)):
            owner = next((e for e, sfx in _SUFFIXES.items() if model.suffix.lower() in sfx), None)
            hint = f"; use --engine {owner}" if owner else ""
            raise UserError(
                f"{model}: engine {name!r} reads {'/'.join(_SUFFIXES[name])} files, not {model.suffix}{hint}"
            )
        return model
    path = artifact_file(model, name, precision or "fp32")
    if path is None:
        raise UserError(f"engine {name!r} has no {precision} artifact (available: {', '.join(precisions_for(name))})")
    if not path.is_file():
        if (model / CV_SUMMARY).is_file():  # a k-fold run alone leaves no model at the top
            raise UserError(
                f"{path}: not found; {model} holds a k-fold run: predict with --folds, or use one fold "
                f"({model / 'fold0'}, MODEL={model.name}/fold0 for make)"
            )
        raise UserError(f"{path}: artifact for engine {name!r} not found (run `make train` / `make export` first)")
    return path


def create_engine(
    name: str,
    model: str | os.PathLike,
    device: str = "cpu",
    threads: int | None = None,
    precision: str | None = None,
    options: dict[str, Any] | None = None,
) -> Engine:
    """Open ``model`` (an artifact file or a model folder) with backend ``name``.

    ``precision`` picks the artifact inside a model folder; for a file it must match the file's own precision
    (``None`` accepts whatever the file holds).

    Raises:
        UserError: unknown engine, missing library, missing or mismatched artifact.
    """
    cls = engine_class(name)
    engine = cls(resolve_artifact(name, model, precision), device=device, threads=threads, **(options or {}))
    built = engine.meta.export.get("precision", "fp32")
    try:
        if precision is not None and built != precision:
            raise UserError(f"{engine.artifact}: holds a {built} model but {precision} was requested")
        if Path(model).is_dir() and name != "torch":
            check_fresh(engine.meta, Path(model) / "best.pt", engine.artifact)
    except UserError:
        engine.close()
        raise
    return engine


def check_fresh(meta: ModelMeta, checkpoint: Path, artifact: Path) -> None:
    """Refuse an exported artifact whose source checkpoint is not the ``best.pt`` beside it (retrained since).

    Skipped when there is no ``best.pt`` (a deployed folder holds only exported files).

    Raises:
        UserError: the checkpoint hashes differ.
    """
    if not checkpoint.is_file() or not meta.checkpoint_sha256:
        return
    if file_sha256(checkpoint) != meta.checkpoint_sha256:
        raise UserError(
            f"{artifact} was exported from an older {checkpoint.name} (retrained since): run "
            f"`{export_command(checkpoint)}`, or pass the file itself to use it anyway"
        )


def describe_members(descriptions: list[dict[str, Any]]) -> dict[str, Any]:
    """One :meth:`Engine.describe` dict for an ensemble: ``engine`` reads ``ensemble of N: <engine> <precision> +
    ...`` (in member order, repeats counted), and ``provider``/``device``/``precision``/``threads`` are the
    members' common value or their distinct values joined with `` + ``. One member: its own dict."""
    if len(descriptions) == 1:
        return dict(descriptions[0])

    def joined(key: str) -> Any:
        values = list(dict.fromkeys(str(d.get(key)) for d in descriptions))
        return descriptions[0].get(key) if len(values) == 1 else " + ".join(values)

    kinds = [f"{d.get('engine')} {d.get('precision')}" for d in descriptions]
    counted = [f"{kinds.count(k)}x {k}" if kinds.count(k) > 1 else k for k in dict.fromkeys(kinds)]
    return {
        "engine": f"ensemble of {len(descriptions)}: {' + '.join(counted)}",
        **{key: joined(key) for key in ("provider", "device", "precision", "threads")},
    }
