"""The GPU kit end to end on the CPU: ``make gpu-data``'s preparation (images, a Lite0 stand-in's weights, the CPU
reference) and the kit's own checks run with ``Kit.device = "cpu"``, so their command lines, log parsers and judges
meet the real trainer, predictor and bench. Only CUDA itself is left for the GPU machine. The whole chain is
``slow`` (a dozen entry-point processes); ``make test`` runs the data step, one training and one prediction."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench.gpucheck import launch, settings
from bench.gpucheck.checks import Kit, run_checks
from bench.gpucheck.cli import load_manifest
from bench.gpucheck.data import prepare_kit
from bench.gpucheck.plan import all_checks
from bench.gpucheck.proc import Runner
from runtime.atomic import OUTPUT_MARKER

TINY = "img_size: 64\ncrop_pct: 1.0\nbatch_size: 8\nworkers: 0\n"


def _small(mp: pytest.MonkeyPatch) -> None:
    """The kit's settings shrunk for a CPU test: 2 epochs, no loader workers, no autocast (CPU float16 autocast
    does not train; the GPU runs keep theirs), small throughput batches."""
    mp.setattr(settings, "COMMON_TRAIN", {"epochs": 2, "seed": 0})
    mp.setattr(settings, "CPU_TRAIN", {"device": "cpu", "workers": 0})
    mp.setattr(settings, "GPU_TRAIN", {"workers": 0, "amp": False})
    mp.setattr(settings, "THROUGHPUT_BATCHES", (1, 4))


@pytest.fixture(scope="module")
def kit_data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A kit data folder of 48 ELPV images with the CPU reference of a tiny ``resnet18_cpu`` (timm's test_resnet)
    from a models folder of its own."""
    root = tmp_path_factory.mktemp("gpukit")
    models = root / "models"
    models.mkdir()
    (models / "resnet18_cpu.yaml").write_text("architecture: test_resnet\n" + TINY)
    with pytest.MonkeyPatch.context() as mp:
        _small(mp)
        manifest = prepare_kit(root / "data", per_class=12, models_dir=models)
    return {"models": models, "data": root / "data", "manifest": manifest}


def _kit(kit_data: dict, tmp_path: Path) -> Kit:
    return Kit(Runner(tmp_path / "out" / "steps.log", time.monotonic() + 900), kit_data["data"], tmp_path / "work",
               tmp_path / "out", kit_data["manifest"], kit_data["models"], device="cpu")  # fmt: skip


def _run(kit: Kit, names: list[str]) -> dict:
    return {r.name: r for r in run_checks(kit, [c for c in all_checks() if c.name in names], {"kit": "test"})}


def test_gpu_data_writes_images_and_the_cpu_reference(kit_data: dict, capsys: pytest.CaptureFixture) -> None:
    m, data = kit_data["manifest"], kit_data["data"]
    assert m["images"] == {"train": 27, "valid": 11, "test": 10, "total": 48}
    ref = m["reference"]["resnet18_cpu"]
    assert 0 <= ref["f1_micro"] <= 1 and len(ref["train_loss"]) == 2 and ref["overrides"]["device"] == "cpu"
    assert ref["dtype"] == "float32"  # the config's amp_dtype float16 has no CPU autocast: FP32
    assert m["reference"]["efficientnet_lite0"] == {
        "skipped": f"{kit_data['models']}/efficientnet_lite0.yaml not present"
    }
    assert 0 < m["size_mib"] < 5 and load_manifest(data) == m
    assert (data / OUTPUT_MARKER).is_file()  # so that make clean removes the folder like other outputs
    with pytest.MonkeyPatch.context() as mp:
        _small(mp)
        again = prepare_kit(data, per_class=12, models_dir=kit_data["models"])  # same config: not trained again
    assert again["reference"] == m["reference"] and "keeping the CPU reference" in capsys.readouterr().err


def test_gpu_data_copies_the_lite0_weights(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    weights = tmp_path / "lite0_imagenet.pth"
    weights.write_bytes(b"a state dict")
    (models / "efficientnet_lite0.yaml").write_text(f"architecture: test_efficientnet\npretrained_path: {weights}\n")
    m = prepare_kit(tmp_path / "data", per_class=4, with_reference=False, models_dir=models)
    assert m["lite0"]["weights"] == "weights/lite0_imagenet.pth" and m["reference"] == {}
    assert (tmp_path / "data" / "weights" / "lite0_imagenet.pth").read_bytes() == b"a state dict"


def test_training_and_prediction_checks_run_on_the_cpu(kit_data: dict, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    _small(monkeypatch)
    kit = _kit(kit_data, tmp_path)
    results = _run(kit, ["train:resnet18_cpu:float16", "predict:torch-cuda-fp32", "onnxruntime:cuda-ep"])
    first = results["train:resnet18_cpu:float16"]
    assert first.status == "passed" and "2 epochs on cpu in float32, losses finite" in first.reason, first.reason
    assert "vs CPU" in first.reason and first.details["delta"] is not None
    agree = results["predict:torch-cuda-fp32"]
    assert agree.status == "passed" and "100.00% of 48 images" in agree.reason and "img/s end to end" in agree.reason
    assert results["onnxruntime:cuda-ep"].status == "skipped"
    summary = json.loads((kit.out / "summary.json").read_text())
    assert [c["name"] for c in summary["checks"]] == list(results) and "$ " in (kit.out / "steps.log").read_text()


@pytest.mark.slow
def test_every_cpu_runnable_check_passes(kit_data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import timm
    import torch

    _small(monkeypatch)
    monkeypatch.setattr(launch, "KILL_AFTER_EPOCH", 1)
    weights = tmp_path / "lite0.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), weights)
    (kit_data["models"] / "efficientnet_lite0.yaml").write_text(f"architecture: test_efficientnet\n{TINY}")
    kit = _kit(kit_data, tmp_path)
    kit.manifest = {**kit.manifest, "lite0": {"weights": str(weights)}}  # absolute: kept as it is under kit.data
    wanted = ["train:resnet18_cpu:float16", "predict:throughput", "train:efficientnet_lite0:bfloat16",
              "bench:gpu-cells", "train:resume", "train:torchrun"]  # fmt: skip
    results = _run(kit, wanted)
    for name in wanted:
        assert results[name].status == "passed", (name, results[name].reason)
    assert "F1 not compared: " in results["train:efficientnet_lite0:bfloat16"].reason  # no Lite0 reference here
    assert "continued at epoch 2" in results["train:resume"].reason
    cells = [(r["backbone"], r["cell"]) for r in results["bench:gpu-cells"].details["rows"]]
    assert cells == [("resnet18_cpu", "torch:fp32"), ("resnet18_cpu", "torch:fp16"),
                     ("efficientnet_lite0", "torch:fp32"), ("efficientnet_lite0", "torch:fp16")]  # fmt: skip
    assert (kit.out / "bench_report.md").is_file() and (kit.out / "bench_results.json").is_file()
