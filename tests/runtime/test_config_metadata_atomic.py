"""Config validation, the artifact metadata contract, atomic writes and one-line errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from runtime.atomic import atomic_path, write_text
from runtime.config import load_config, parse_overrides
from runtime.errors import UserError, one_line
from runtime.metadata import ModelMeta


@dataclasses.dataclass
class _Cfg:
    name: str
    size: int = 3
    scale: float = 1.0
    items: list[int] = dataclasses.field(default_factory=list)
    opt: str | None = None
    flag: bool = False


def test_config_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nsizee: 4\n")
    with pytest.raises(UserError, match=r"c\.yaml: unknown key 'sizee'"):
        load_config(_Cfg, path)


def test_config_types_checked_and_overrides_applied(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nsize: 4\n")
    cfg = load_config(_Cfg, path, parse_overrides(["scale=2", "items=[1, 2]", "opt=hello"]))
    assert (cfg.name, cfg.size, cfg.scale, cfg.items, cfg.opt) == ("x", 4, 2, [1, 2], "hello")
    with pytest.raises(UserError, match="'size'"):
        load_config(_Cfg, path, {"size": "big"})
    with pytest.raises(UserError, match="missing required key 'name'"):
        load_config(_Cfg, None, {})
    with pytest.raises(UserError, match="key=value"):
        parse_overrides(["novalue"])
    with pytest.raises(UserError, match="'flag' has value 'maybe', expected true or false"):
        load_config(_Cfg, path, parse_overrides(["flag=maybe"]))


def test_config_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(_Cfg, path)
    with pytest.raises(UserError, match="not found"):
        load_config(_Cfg, tmp_path / "missing.yaml")


def _meta() -> ModelMeta:
    return ModelMeta("resnet18", ["a", "b"], (3, 64, 64), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear", 1.0)


def test_metadata_round_trip_and_validation() -> None:
    meta = _meta()
    again = ModelMeta.from_json(meta.to_json(), "x")
    assert again == meta
    data = meta.to_dict()
    del data["class_names"]
    with pytest.raises(UserError, match="lacks 'class_names'"):
        ModelMeta.from_dict(data, "model.onnx")
    with pytest.raises(UserError, match="interpolation"):
        ModelMeta.from_dict({**meta.to_dict(), "interpolation": "magic"}, "model.onnx")
    with pytest.raises(UserError, match="not valid JSON"):
        ModelMeta.from_json("{", "model.onnx")


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_one_line_strips_worker_tracebacks() -> None:
    exc = UserError("Caught ImageError in DataLoader worker.\nTraceback...\nruntime.preprocess.ImageError: a.png: bad")
    assert one_line(exc) == "a.png: bad"
    assert one_line(UserError("plain")) == "plain"


def test_failed_gate_reads_the_artifact_and_the_record_of_another_engine(tmp_path: Path) -> None:
    """OpenVINO reading model.int8.onnx failed in verify.json while ONNX Runtime passed: only OpenVINO warns."""
    from runtime.artifacts import failed_gate

    int8, xml = tmp_path / "model.int8.onnx", tmp_path / "openvino" / "model.xml"
    xml.parent.mkdir()
    int8.write_bytes(b"x")
    xml.write_bytes(b"x")
    assert not failed_gate(int8, "openvino", {})  # no verify.json yet
    record = {"model.int8.onnx": {"passed": True}, "model.int8.onnx (openvino)": {"passed": False},
              "openvino/model.xml": {"passed": True}}  # fmt: skip
    (tmp_path / "verify.json").write_text(json.dumps(record))
    assert failed_gate(int8, "openvino", {}) and not failed_gate(int8, "onnx", {"verification": {"passed": True}})
    assert not failed_gate(xml, "openvino", {})
    assert failed_gate(int8, "onnx", {"verification": {"passed": False}})  # the embedded result counts too
    (tmp_path / "verify.json").write_text("{broken")
    assert not failed_gate(int8, "openvino", {})
