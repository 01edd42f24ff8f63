"""What runs: the members of a prediction (one model, repeated ``--model``, k folds, or an ensemble YAML).

An ensemble YAML lists ``members: [{model, engine, precision, weight, options}]``; missing keys take the
command line's values. Probabilities are averaged with the weights (:class:`runtime.predictor.Predictor`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from runtime.artifacts import fold_dirs
from runtime.errors import UserError

MEMBER_KEYS = ("model", "engine", "precision", "weight", "options")


@dataclasses.dataclass(frozen=True)
class Member:
    """One model of a prediction.

    Attributes:
        model: artifact file or model folder (``artifacts/<model>``).
        engine: a :data:`runtime.engines.ENGINE_NAMES` name.
        precision: artifact precision inside a model folder (``None``: fp32, or a file's own precision).
        weight: weight of its probabilities in the ensemble mean (> 0).
        options: engine options of this member (:attr:`runtime.engines.base.Engine.default_options`); options
            given for the whole run are applied under them.
    """

    model: str
    engine: str = "onnx"
    precision: str | None = None
    weight: float = 1.0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


def fold_models(folder: str | os.PathLike) -> list[str]:
    """The k-fold models of a model folder (``make train FOLDS=k``), in fold order
    (:func:`runtime.artifacts.fold_dirs`).

    Raises:
        UserError: no finished k-fold run there.
    """
    return [str(p) for p in fold_dirs(folder)]


def read_ensemble(path: str | os.PathLike, engine: str, precision: str | None) -> list[Member]:
    """Members of an ensemble YAML; ``engine``/``precision`` fill the keys a member leaves out.

    Raises:
        UserError: unreadable YAML, no ``members`` list, an unknown key, a missing model, a bad weight or options.
    """
    from runtime.config import read_yaml

    members = read_yaml(path).get("members")
    if not isinstance(members, list) or not members:
        raise UserError(f"{path}: expected 'members:' with a list of {{{', '.join(MEMBER_KEYS)}}}")
    out = []
    for i, m in enumerate(members, 1):
        keys = f"keys: {', '.join(MEMBER_KEYS)}"
        if not isinstance(m, dict):
            raise UserError(f"{path}: member {i} is not a mapping ({keys})")
        unknown = sorted(set(m) - set(MEMBER_KEYS))
        if unknown:
            raise UserError(f"{path}: member {i} has unknown key {unknown[0]!r} ({keys})")
        if "model" not in m:
            raise UserError(f"{path}: member {i} needs 'model' ({keys})")
        weight = m.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
            raise UserError(f"{path}: member {i} weight must be a number > 0, not {weight!r}")
        options = m.get("options") or {}
        if not isinstance(options, dict):
            raise UserError(f"{path}: member {i} options must be a mapping, not {options!r}")
        out.append(Member(str(m["model"]), str(m.get("engine", engine)), m.get("precision", precision),
                          float(weight), dict(options)))  # fmt: skip
    return out


def select_members(
    models: Sequence[str] | None,
    ensemble: str | None = None,
    engine: str = "onnx",
    precision: str | None = None,
    folds: bool = False,
) -> list[Member]:
    """Members from the command line: ``ensemble`` (a YAML) alone, or ``models`` (each expanded to its k folds
    with ``folds``), all on ``engine`` at ``precision`` with weight 1.

    Raises:
        UserError: both or neither given, or what :func:`read_ensemble` / :func:`fold_models` raise.
    """
    if ensemble and (models or folds):
        raise UserError("--ensemble lists its own models: give it alone, or --model (with --folds) instead")
    if ensemble:
        return read_ensemble(ensemble, engine, precision)
    if not models:
        raise UserError("give --model (or --ensemble)")
    names = [m for folder in models for m in fold_models(folder)] if folds else list(models)
    return [Member(m, engine, precision) for m in names]
