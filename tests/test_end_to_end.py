"""split -> train -> export -> predict (torch and onnx) -> bench on real ELPV images, with a tiny timm model."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from conftest import CPU_CELLS, ROOT, run_module

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


def test_bench_scores_every_engine(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "reports"
    sets = [
        f"data={tiny_model['data']}",
        f"artifacts={tiny_model['work'] / 'artifacts'}",
        f"out={out}",
        "min_seconds=0.2",
        "batch_sizes=[4]",
        "engines=[torch, onnx, onnx:int8, onnx:fp16, openvino, openvino:int8]",
    ]
    args = ["--config", str(ROOT / "configs/bench.yaml")] + [a for s in sets for a in ("--set", s)]
    assert run_cli(bench_main, args) == 0
    table = pd.read_csv(out / "bench.csv")
    assert list(zip(table["engine"], table["precision"], strict=True)) == CPU_CELLS
    assert (table["backbone"] == "tiny").all()
    fp32_ok = table.loc[table["precision"] == "fp32", "status"] == "ok"
    reduced = table.loc[table["precision"] != "fp32", "status"]  # ok, or marked by the 99%-of-FP32 gate
    assert fp32_ok.all() and reduced.str.match(r"^(ok|failed gate: micro-F1 )").all()
    assert table["f1_micro"].between(0, 1).all() and table["f1_macro"].between(0, 1).all()
    fp32 = table[table["precision"] == "fp32"]
    assert fp32["f1_micro"].nunique() == 1 and fp32["f1_macro"].nunique() == 1  # same labels from every FP32 engine
    assert (table["img_per_s"] > 0).all() and (table["img_per_s_engine"] > 0).all()
    # F1 recomputed from the torch engine's own submission equals the bench's number
    sub = _predict("torch", tiny_model["artifacts"], tiny_model["data"], tmp_path / "s.csv")
    truth = pd.read_csv(tiny_model["data"] / "test_labels.csv")
    assert table["f1_micro"][0] == pytest.approx(np.mean(sub["label"].to_numpy() == truth["label"].to_numpy()))
    md = (out / "bench.md").read_text()
    assert "| tiny | torch | fp32 | 4 |" in md and "| tiny | onnx | int8 | 4 |" in md


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
