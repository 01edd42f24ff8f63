"""split -> train -> export -> predict (torch and onnx) -> bench on real ELPV images, with a tiny timm model."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from conftest import CPU_CELLS, ROOT, assert_self_contained, run_module

from bench.compare import held_out_fingerprint
from bench.run import main as bench_main
from runtime.errors import run_cli
from runtime.metadata import ONNX_META_KEY, ModelMeta
from runtime.predict import main as predict_main


def _predict(engine: str, model: Path, data: Path, out: Path) -> pd.DataFrame:
    code = run_cli(
        predict_main,
        ["--engine", engine, "--model", str(model), "--data", str(data), "--out", str(out), "--batch-size", "5"],
    )
    assert code == 0
    return pd.read_csv(out)


def test_checkpoint_is_self_describing(tiny_model: dict[str, Path]) -> None:
    ckpt = torch.load(tiny_model["artifacts"] / "best.pt", map_location="cpu", weights_only=True)
    meta = ModelMeta.from_dict(ckpt["meta"], "best.pt")
    assert meta.architecture == "test_resnet"
    assert meta.class_names == ["defect_000", "defect_033", "defect_067", "defect_100"]
    assert meta.input_size == (3, 64, 64)
    assert meta.interpolation == "bilinear" and meta.crop_pct == 1.0
    assert 0.0 <= meta.metrics["f1_micro"] <= 1.0 and meta.metrics["epoch"] == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = list((tiny_model["work"] / "runs" / "tiny").iterdir())
    assert len(runs) == 1
    events = EventAccumulator(str(runs[0])).Reload()
    tags = events.Tags()
    assert {"f1_micro/valid", "f1_macro/valid", "loss/train", "lr"} <= set(tags["scalars"])
    assert "confusion_matrix/valid" in tags["images"]
    assert {f"f1_per_class/{c}" for c in meta.class_names} <= set(tags["scalars"])
    assert events.Scalars("f1_micro/valid")[0].value == pytest.approx(meta.metrics["f1_micro"])


def test_onnx_is_self_contained_with_dynamic_batch_and_metadata(tiny_model: dict[str, Path]) -> None:
    path = tiny_model["artifacts"] / "model.onnx"
    assert not list(tiny_model["artifacts"].glob("*.data"))
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value
    assert [d.dim_value for d in dims[1:]] == [3, 64, 64]
    assert [o.name for o in proto.graph.output] == ["logits", "features"]
    props = {p.key: p.value for p in proto.metadata_props}
    meta = ModelMeta.from_json(props[ONNX_META_KEY], str(path))
    assert meta.export["opset"] >= 17 and meta.export["exporter"] == "dynamo"
    assert len(meta.checkpoint_sha256) == 64
    verify = json.loads((tiny_model["artifacts"] / "verify.json").read_text())["model.onnx"]
    assert verify["passed"] and verify["top1_agreement"] >= 0.999 and verify["images"] == 9
    assert verify["max_abs_diff"] < 1e-3


def test_predict_with_both_engines_agrees(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    data = tiny_model["data"]
    test_ids = pd.read_csv(data / "test.csv")["image_id"].tolist()
    classes = set(ModelMeta.from_dict(torch.load(tiny_model["artifacts"] / "best.pt")["meta"], "x").class_names)
    subs = {e: _predict(e, tiny_model["artifacts"], data, tmp_path / f"{e}.csv") for e in ("torch", "onnx")}
    for sub in subs.values():
        assert list(sub.columns) == ["image_id", "label"]
        assert sub["image_id"].tolist() == test_ids
        assert set(sub["label"]) <= classes
    assert subs["torch"]["label"].tolist() == subs["onnx"]["label"].tolist()


def test_onnx_copied_alone_still_runs(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    lonely = tmp_path / "elsewhere" / "model.onnx"
    lonely.parent.mkdir()
    shutil.copy(tiny_model["artifacts"] / "model.onnx", lonely)
    sub = _predict("onnx", lonely, tiny_model["data"], tmp_path / "sub.csv")
    reference = _predict("onnx", tiny_model["artifacts"], tiny_model["data"], tmp_path / "ref.csv")
    assert sub.equals(reference)


def test_bench_report_holds_every_cell(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "reports"
    baseline = tmp_path / "baseline.json"  # a doctored earlier run: onnx fp32 was 10^9 img/s
    truth = pd.read_csv(tiny_model["data"] / "test_labels.csv").set_index("image_id")["label"]
    ids = pd.read_csv(tiny_model["data"] / "test.csv")["image_id"].tolist()
    held_out = {"images": len(ids), "sha256": held_out_fingerprint(ids, truth.loc[ids].tolist())}
    row = {"backbone": "tiny", "cell": "onnx:fp32", "batch_size": 4, "status": "ok", "img_per_s_engine": 1e9,
           "f1_micro": 0.0}  # fmt: skip
    baseline.write_text(json.dumps({"held_out": held_out, "rows": [row]}))
    cells = [*(f"{e}:{p}" for e, p in CPU_CELLS), "trt:fp16", "onnx:fp32@hflip"]
    ensemble = tmp_path / "pair.yaml"  # the same model through two engines: predictions equal to each member's
    ensemble.write_text(f"members:\n  - {{model: {tiny_model['artifacts']}, engine: onnx}}\n"
                        f"  - {{model: {tiny_model['artifacts']}, engine: torch, weight: 2}}\n")  # fmt: skip
    sets = [f"data={tiny_model['data']}", f"artifacts={tiny_model['work'] / 'artifacts'}", f"out={out}",
            "min_seconds=0.3", "rounds=2", "warmup=1", "batch_sizes=[4]", f"engines=[{', '.join(cells)}]",
            f"ensembles=[{ensemble}]"]  # fmt: skip
    args = ["--config", str(ROOT / "configs/bench.yaml"), "--run", "r1", "--baseline", str(baseline)]
    assert run_cli(bench_main, args + [a for s in sets for a in ("--set", s)]) == 4  # the regression gate fired
    run = out / "r1"
    table = pd.read_csv(run / "results.csv")
    pair = table.iloc[-1]
    assert pair["backbone"] == "ensemble:pair" and pair["status"] == "ok" and pair["agreement"] == 1.0
    assert pair["f1_micro"] == table["f1_micro"][0] and pair["reference"] == "tiny torch:fp32"
    assert pair["cell"] == "mixed:fp32"  # onnx and torch members
    table = table.iloc[:-1]
    assert table["cell"].tolist() == cells and (table["backbone"] == "tiny").all()
    status = dict(zip(table["cell"], table["status"], strict=True))
    assert all(status[f"{e}:fp32"] == "ok" for e in ("torch", "onnx", "openvino")) and status["onnx:fp32@hflip"] == "ok"
    for cell in ("onnx:int8", "onnx:fp16", "openvino:int8"):  # ok, or marked by the 99%-of-FP32 gate
        assert re.match(r"^(ok|failed gate: micro-F1 )", status[cell])
    assert status["trt:fp16"].startswith("skipped: ") and "gpu" in status["trt:fp16"]
    ran = table[table["status"] != status["trt:fp16"]]
    assert ran["f1_micro"].between(0, 1).all() and ran["f1_macro"].between(0, 1).all()
    fp32 = ran[(ran["precision"] == "fp32") & (ran["tta"] == "none")]
    assert fp32["f1_micro"].nunique() == 1 and (fp32["agreement"] == 1.0).all()  # same labels from every FP32 engine
    for column in ("img_per_s", "img_per_s_engine", "p50_ms", "p99_ms", "lat1_p50_ms", "peak_rss_mib",
                   "artifact_mib", "gmacs", "gflops", "peak_fraction"):  # fmt: skip
        assert (ran[column] > 0).all(), column
    assert (ran["p50_ms"] <= ran["p99_ms"]).all() and (ran["img_per_s_engine_min"] <= ran["img_per_s_engine"]).all()
    assert (ran["provider"].str.len() > 0).all() and set(ran["device"]) == {"cpu"} and (ran["threads"] >= 1).all()
    # F1 recomputed from the torch engine's own submission equals the bench's number
    sub = _predict("torch", tiny_model["artifacts"], tiny_model["data"], tmp_path / "s.csv")
    truth = pd.read_csv(tiny_model["data"] / "test_labels.csv")
    assert table["f1_micro"][0] == pytest.approx(np.mean(sub["label"].to_numpy() == truth["label"].to_numpy()))
    results = json.loads((run / "results.json").read_text())
    assert results["regressions"] == [next(r for r in results["regressions"] if r.startswith("tiny onnx:fp32 batch 4"))]
    assert results["summary"].startswith("fastest at >= 99% of FP32 F1: ")
    assert results["environment"]["torch"] and results["matmul_peak_gflops"] > 0
    assert len(results["matmul_peak_runs"]) == 2  # at the start and at the end of the run
    assert results["matmul_peak_gflops"] == max(r["peak"] for r in results["matmul_peak_runs"])
    page = (run / "report.html").read_text()
    assert "fastest at &gt;= 99% of FP32 F1" in page and page.count("<img ") == 3  # pareto, latency, best cell
    assert_self_contained(page)
    assert (out / "latest").resolve() == run.resolve()


_NO_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision', 'timm'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
sys.meta_path.insert(0, Block())
from runtime.errors import run_cli
from runtime.predict import main
code = run_cli(main, sys.argv[1:])
assert not any(m.split('.')[0] in ('torch', 'timm') for m in sys.modules), 'torch was imported'
sys.exit(code)
"""


def test_runtime_predicts_with_onnx_without_torch(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    import subprocess

    out = tmp_path / "no_torch.csv"
    args = ["--engine", "onnx", "--model", str(tiny_model["artifacts"]), "--data", str(tiny_model["data"])]
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, *args, "--out", str(out), "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    reference = _predict("onnx", tiny_model["artifacts"], tiny_model["data"], tmp_path / "ref.csv")
    assert pd.read_csv(out).equals(reference)
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, "--engine", "openvino", *args[2:], "--out", str(out), "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(out).equals(reference)
    blocked = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, "--engine", "torch", *args[2:], "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert blocked.returncode == 2 and "needs the missing module" in blocked.stderr and ".[train]" in blocked.stderr


def test_predict_cli_runs_as_module(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cli.csv"
    proc = run_module(
        "runtime.predict",
        "--engine",
        "onnx",
        "--model",
        str(tiny_model["artifacts"]),
        "--data",
        str(tiny_model["data"]),
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(out)) == 12
