"""Every shipped backbone config through the whole chain on a generated contest-layout dataset (slow: hours for
the large backbones on a 2-core CPU; ``make test-slow``). Checks what the chain benchmark produced, per config."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

from bench.chain import CPU_TARGETS
from bench.chain import main as chain_main
from bench.contest_data import class_names
from export.config import target_file
from runtime.errors import run_cli

CONFIGS = sorted(p.stem for p in (ROOT / "configs" / "models").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("model", CONFIGS)
def test_shipped_config_runs_the_whole_chain_on_the_contest_layout(model: str, tmp_path: Path) -> None:
    out = tmp_path / "chain"
    code = run_cli(chain_main, ["--models", model, "--out", str(out), "--predict-bench", "--verify-images", "32"])
    rows = json.loads((out / "chain.json").read_text())
    assert [r["step"] for r in rows] == ["train", *CPU_TARGETS, "predict", "bench"]
    verify = json.loads((out / "artifacts" / model / "verify.json").read_text())
    # an INT8 file of a depthwise-heavy net may miss its gate (README, "INT8 on EfficientNet-Lite0"): the chain
    # records the verdict (rc 2, file not installed) and goes on; every other step must succeed
    depthwise = model.startswith("efficientnet_lite0")
    gate_misses = [r for r in rows if r["rc"] == 2 and depthwise and r["step"].endswith("-int8")]
    for r in gate_misses:
        rejected = verify[f"{target_file(r['step'])} (rejected export)"]
        assert not rejected["passed"] and 0 < rejected["top1_agreement"] < 1, rejected
    assert code == (2 if gate_misses else 0), [r for r in rows if r["rc"] != 0]
    assert all(r["rc"] == 0 for r in rows if r not in gate_misses), [r for r in rows if r["rc"] != 0]
    data = out / "data"
    ids = pd.read_csv(data / "train.csv")["image_id"]
    assert ids.str.fullmatch(r"[0-9a-f-]{36}\.jpeg").all()
    installed = [target_file(t) for t in CPU_TARGETS if t not in {r["step"] for r in gate_misses}]
    for key in installed:
        assert verify[key]["passed"], (key, verify[key])
    assert verify["model.onnx"]["top1_agreement"] >= 0.999
    submission = pd.read_csv(out / "predict" / f"{model}.csv")
    assert submission["image_id"].tolist() == pd.read_csv(data / "test.csv")["image_id"].tolist()
    assert set(submission["label"]) <= set(class_names())
    assert (out / "bench" / model / "results.json").is_file()
    assert all(r["peak_rss_mib"] > 0 and r["wall_s"] > 0 for r in rows)
