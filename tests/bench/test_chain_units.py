"""bench.chain bookkeeping: per-target rows of a one-process export, the table, child peak memory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.chain import Chain, run_child, split_targets
from bench.chain_table import CPU_TARGETS, Row, markdown


def test_one_process_export_is_split_into_target_rows(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "data", tmp_path, list(CPU_TARGETS), one_process=True)
    steps = [("load checkpoint", 900), ("torch.onnx export", 3000), ("reference logits (torch)", 1200)]
    steps += [("build model.onnx", 1000), ("verify model.onnx", 1500), ("build model.fp16.onnx", 1100)]
    steps += [("verify model.fp16.onnx", 1400), ("build openvino/model.xml", 2000), ("verify openvino/model.xml", 1300)]
    steps += [("build model.int8.onnx", 2500), ("verify model.int8.onnx", 1600)]
    steps += [("verify model.int8.onnx (openvino)", 1700), ("build openvino/model.int8.xml", 1900)]
    steps += [("verify openvino/model.int8.xml", 1200), ("accuracy control openvino/model.int8.xml", 2100)]
    steps += [("verify (accuracy control) openvino/model.int8.xml", 1250)]
    report = tmp_path / "memory" / f"m.{'+'.join(CPU_TARGETS)}.json"
    report.parent.mkdir()
    report.write_text(json.dumps({"steps": [{"step": n, "peak_rss_mib": p, "seconds": 2.0} for n, p in steps]}))
    model_dir = tmp_path / "artifacts" / "m"
    model_dir.mkdir(parents=True)
    (model_dir / "model.int8.onnx").write_bytes(b"0" * 2**20)
    result = {"passed": True, "top1_agreement": 1.0, "candidate_f1_micro": 0.5, "reference_f1_micro": 0.5}
    crash = {"passed": False, "error": "openvino crashed reading model.int8.onnx (its process died)"}
    (model_dir / "verify.json").write_text(json.dumps({"model.int8.onnx": result, "model.int8.onnx (openvino)": crash}))
    rows = {r.step: r for r in split_targets(chain, "m", Row("m", "export (all targets)", 0, 30.0, 3000.0))}
    assert list(rows) == list(CPU_TARGETS)
    assert rows["onnx"].peak_rss_mib == 1500 and rows["onnx"].wall_s == 4.0
    assert rows["openvino"].peak_rss_mib == 2000
    assert rows["openvino-int8"].peak_rss_mib == 2100 and rows["openvino-int8"].wall_s == 8.0
    assert rows["onnx-int8"].peak_rss_mib == 2500 and rows["onnx-int8"].wall_s == 6.0
    assert rows["onnx-int8"].size_mib == 1.0 and rows["onnx-int8"].verify.startswith("PASS")
    assert rows["onnx-int8"].verify.endswith("; OV FAIL openvino crashed reading model.int8.onnx (its process died)")
    table = markdown(list(rows.values()), "header")
    assert table.count("\n| m | ") == len(CPU_TARGETS) and "| 2.44 |" in table  # 2500 MiB


def test_run_child_reports_the_childs_peak_memory(tmp_path: Path) -> None:
    code = "b = bytearray(300 * 2**20); b[::4096] = b'1' * len(b[::4096])"
    rc, wall, peak = run_child([sys.executable, "-c", code], tmp_path / "log.txt")
    assert rc == 0 and wall > 0 and 300 <= peak < 1000


def test_an_unknown_model_is_refused_before_any_step(tmp_path: Path, capsys) -> None:
    from bench.chain import main
    from runtime.errors import run_cli

    out = tmp_path / "chain"
    out.mkdir()
    (out / "chain.md").write_text("earlier results\n")
    assert run_cli(main, ["--models", "resnet18_cpu,nosuch", "--out", str(out)]) != 0
    assert "unknown MODEL 'nosuch'" in capsys.readouterr().err
    assert (out / "chain.md").read_text() == "earlier results\n"  # not replaced
    assert sorted(p.name for p in out.iterdir()) == ["chain.md"]  # no dataset generated, nothing trained
