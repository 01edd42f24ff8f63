"""YAML configs mapped onto dataclasses, with unknown keys and bad values reported by name.

Every entry point loads its config through :func:`load_config`: a YAML file (optional), then
``key=value`` overrides from the command line, checked against the fields of a dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from runtime.errors import UserError

T = TypeVar("T")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``.

    Raises:
        UserError: the file is missing, is not valid YAML, or its top level is not a mapping.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a YAML config file")
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--set key=value [key=value ...]`` (repeatable) on ``parser``; read the result with :func:`parse_overrides`."""
    parser.add_argument(
        "--set", action="extend", nargs="+", metavar="KEY=VALUE",
        help="override keys of the config file (its YAML lists each with a comment), e.g. --set batch_size=16",
    )  # fmt: skip


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse ``["key=value", ...]`` (values read as YAML scalars/lists) into a dict.

    Raises:
        UserError: an item has no ``=``.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _check_type(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(_check_type(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def from_dict(cls: type[T], values: dict[str, Any], source: str) -> T:
    """Build dataclass ``cls`` from ``values``; ``source`` names the file in error messages.

    Raises:
        UserError: an unknown key (the message lists the known ones), a missing required key, or a value of
            the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            raise UserError(f"{source}: unknown key {key!r} (known keys: {', '.join(sorted(fields))})")
        if not _check_type(value, hints[key]):
            nested = isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value))
            hint = " (YAML read 'a: b' or 'a:' as a mapping: quote such an item, e.g. 'folds:m')" if nested else ""
            raise UserError(f"{source}: key {key!r} has value {value!r}, expected {_type_name(hints[key])}{hint}")
    missing = [
        n
        for n, f in fields.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise UserError(f"{source}: missing required key {missing[0]!r}")
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(source)
    return obj


def _type_name(hint: Any) -> str:
    if hint is bool:
        return "true or false"
    return str(hint).replace("typing.", "") if not isinstance(hint, type) else hint.__name__


def load_config(cls: type[T], path: str | Path | None, overrides: dict[str, Any] | None = None) -> T:
    """Load ``path`` (if given), apply ``overrides`` and build ``cls``.

    Raises:
        UserError: see :func:`read_yaml` and :func:`from_dict`.
    """
    values = read_yaml(path) if path is not None else {}
    values.update(overrides or {})
    source = str(path) if path is not None else "command line"
    if overrides and path is not None:
        source = f"{path} (with command-line overrides)"
    return from_dict(cls, values, source)
