"""OpenVINO's own INT8 (NNCF): the target's structure, its gate, the accuracy-control fallback, and its refusal
without ``nncf``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import openvino as ov
import pytest

import export.verify
from export.cli import main as export_main
from export.openvino_int8 import model_kind, nncf_settings, require_nncf
from runtime.engines import create_engine, resolve_artifact
from runtime.engines.openvino import read_meta
from runtime.errors import UserError, run_cli

ROOT = Path(__file__).resolve().parents[2]
REL = "openvino/model.int8.xml"


def _fake_quantize(xml: Path) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(xml)).get_ops())


def _export(tiny_model: dict[str, Path], artifacts: Path, *extra: str) -> int:
    (artifacts / "tiny").mkdir(parents=True)
    shutil.copy(tiny_model["artifacts"] / "best.pt", artifacts / "tiny" / "best.pt")
    args = ["--model", "tiny", "--data", str(tiny_model["data"]), "--targets", "openvino-int8",
            "--config", str(ROOT / "configs/export.yaml"), "--set", f"artifacts={artifacts}",
            "--set", "verify_images=36", "--set", "min_f1_ratio=0.5", *extra]  # fmt: skip
    return run_cli(export_main, args)


def test_nncf_ir_is_quantized_verified_and_what_openvino_int8_runs(tiny_model: dict[str, Path]) -> None:
    xml = tiny_model["artifacts"] / REL
    assert _fake_quantize(xml) > 0
    meta = read_meta(ov.Core().read_model(str(xml)), str(xml))
    assert meta.export["precision"] == "int8" and meta.export["format"] == "openvino"
    quantization = meta.export["quantization"]
    int8, total = (int(n) for n in quantization["int8_layers"].split(" of "))
    assert 0 < int8 <= total
    assert quantization["preset"] == "performance" and quantization["model_type"] is None  # a CNN
    assert meta.export["verification"]["passed"] is True
    record = json.loads((tiny_model["artifacts"] / "verify.json").read_text())
    assert record[REL]["passed"] is True and record[REL]["gate"] == meta.export["verification"]["gate"]
    assert resolve_artifact("openvino", tiny_model["artifacts"], "int8") == xml  # --engine openvino --precision int8
    with create_engine("openvino", tiny_model["artifacts"], precision="int8") as engine:
        assert engine.artifact == xml
    assert (tiny_model["artifacts"] / "model.int8.onnx").is_file()  # the QDQ file stays for ONNX Runtime


def test_settings_follow_the_backbone() -> None:
    assert nncf_settings("cnn", 300, int8_unit=True)["overflow_fix"] == "disable"
    assert nncf_settings("cnn", 300, int8_unit=False)["overflow_fix"] == "first_layer"  # 7-bit first layer
    assert nncf_settings("depthwise", 300)["fast_bias_correction"] is False
    transformer = nncf_settings("transformer", 300)
    assert transformer["model_type"] == "transformer" and transformer["smooth_quant"] == "off"
    assert transformer["preset"] == "mixed"


def test_model_kind_reads_the_ir(tiny_model: dict[str, Path]) -> None:
    model = ov.Core().read_model(str(tiny_model["artifacts"] / "openvino" / "model.xml"))
    assert model_kind(model) == "cnn"  # test_resnet: plain convolutions, no Softmax


def test_missing_nncf_is_refused_in_one_line(
    tiny_model: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)  # `import nncf` raises ImportError
    with pytest.raises(UserError, match="nncf"):
        require_nncf()
    assert _export(tiny_model, tmp_path / "artifacts") != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "openvino-int8" in errors[0] and "nncf" in errors[0], err
    assert not (tmp_path / "artifacts" / "tiny" / REL).exists()


def _doctored_gate(monkeypatch: pytest.MonkeyPatch, failures: int) -> list[bool]:
    """Make the first ``failures`` verifications of the NNCF IR miss their gate; returns the verdicts given."""
    real, verdicts = export.verify.Verifier.check, []

    def check(self: export.verify.Verifier, artifact: Path, engine: str, precision: str, key: str, **kw: object):
        result = real(self, artifact, engine, precision, key, **kw)
        if key == REL:
            result = {**result, "passed": result["passed"] and len(verdicts) >= failures}
            verdicts.append(result["passed"])
        return result

    monkeypatch.setattr(export.verify.Verifier, "check", check)
    return verdicts


def test_a_missed_gate_tries_accuracy_control_before_failing(
    tiny_model: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    verdicts = _doctored_gate(monkeypatch, failures=1)
    assert _export(tiny_model, tmp_path / "artifacts") == 0
    assert verdicts == [False, True]  # the plain IR failed, the accuracy-controlled one passed and was installed
    err = capsys.readouterr().err
    assert "trying NNCF accuracy control" in err and f"PASS {REL}" in err
    xml = tmp_path / "artifacts" / "tiny" / REL
    quantization = read_meta(ov.Core().read_model(str(xml)), str(xml)).export["quantization"]
    assert quantization["plain_result"]["passed"] is False
    control = quantization["accuracy_control"]
    assert control["min_agreement"] == pytest.approx(1.0) and "agreement" in control["metric"]
    assert isinstance(control["float_layers"], list) and " of " in control["int8_layers"]
    assert quantization["int8_layers"] == control["int8_layers"]  # the installed IR's count, not the plain one's
    assert " of " in quantization["plain_int8_layers"]
    reverted = len(control["float_layers"])
    assert f"accuracy control {REL}: {control['int8_layers']} layers INT8; {reverted} of the plain IR's " in err
    # 12 validation images (all the gate's) and 36 training images (all calibration): fewer than 64 left in
    # either, so the calibration images, never the gate's
    assert control["images"].startswith("train_.csv rows 0-") and "(the calibration images)" in control["images"]


def test_an_ir_that_misses_its_gate_after_accuracy_control_is_not_installed(
    tiny_model: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    verdicts = _doctored_gate(monkeypatch, failures=2)
    assert _export(tiny_model, tmp_path / "artifacts") != 0
    assert verdicts == [False, False]
    model_dir = tmp_path / "artifacts" / "tiny"
    assert not (model_dir / REL).exists() and not list(model_dir.glob(".export-*"))
    err = capsys.readouterr().err  # the PASS/FAIL lines are the undoctored check's; the verdict is the doctored one
    assert "trying NNCF accuracy control" in err
    assert f"error: {REL}: " in err and "not met, not installed" in err


def test_accuracy_control_off_fails_a_missed_gate_at_once(
    tiny_model: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    verdicts = _doctored_gate(monkeypatch, failures=1)
    assert _export(tiny_model, tmp_path / "artifacts", "--set", "accuracy_control=false") != 0
    assert verdicts == [False]  # one verification: no accuracy-controlled IR was built
    assert not (tmp_path / "artifacts" / "tiny" / REL).exists()
    err = capsys.readouterr().err
    assert "accuracy control" not in err and "not met, not installed" in err
