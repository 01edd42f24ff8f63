"""Head-only training on cached features: the config's conditions, and a run whose checkpoint scores as the
epoch's validation said while its backbone stays exactly the loaded weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from conftest import assert_one_line_error, run_module

from runtime.errors import UserError
from runtime.errors import run_cli as run
from runtime.metadata import ModelMeta
from train.builders import load_splits
from train.cli import main as train_main
from train.config import TrainConfig
from train.data import ImageDataset, make_loader, valid_transform
from train.loop import evaluate

CACHED = {"freeze_backbone": True, "cache_features": True, "hflip": 0.0, "vflip": 0.0, "color_jitter": 0.0,
          "train_scale": [1.0, 1.0]}  # fmt: skip


def test_cache_features_needs_a_frozen_backbone_without_augmentation() -> None:
    TrainConfig(architecture="test_efficientnet", **CACHED).validate("m.yaml")
    for key, value, needle in [
        ("freeze_backbone", False, "freeze_backbone: false"),
        ("hflip", 0.5, "hflip: 0.5"),
        ("train_scale", [0.5, 1.0], "train_scale: [0.5, 1.0]"),
        ("auto_augment", "rand-m9-mstd0.5", "auto_augment: rand-m9-mstd0.5"),
        ("update_bn_stats", True, "update_bn_stats: true"),
        ("ema", True, "ema: true"),
    ]:
        with pytest.raises(UserError, match=r"m\.yaml: cache_features needs freeze_backbone") as info:
            TrainConfig(architecture="test_efficientnet", **{**CACHED, key: value}).validate("m.yaml")
        assert needle in str(info.value) and "\n" not in str(info.value)


def test_cache_features_refusal_is_one_line_from_the_cli(elpv_small: Path, tmp_path: Path) -> None:
    proc = run_module("train", "--model", "resnet18_cpu", "--data", str(elpv_small), "--set", "cache_features=true")
    assert_one_line_error(proc, "cache_features needs freeze_backbone: true", "freeze_backbone: false", "hflip: 0.5")


def test_cached_head_training_matches_the_full_model(elpv_small: Path, tmp_path: Path) -> None:
    weights = tmp_path / "init.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("test_efficientnet").state_dict(), weights)
    config = tmp_path / "cached.yaml"
    lines = [f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in CACHED.items()]
    config.write_text(
        "\n".join(["architecture: test_efficientnet", f"pretrained_path: {weights}", "img_size: 64", "crop_pct: 1.0",
                   "epochs: 3", "batch_size: 8", "workers: 0", "lr: 0.01", f"data: {elpv_small}",
                   f"artifacts: {tmp_path / 'artifacts'}", f"runs: {tmp_path / 'runs'}", *lines]) + "\n"
    )  # fmt: skip
    assert run(train_main, ["--model", str(config)]) == 0
    ckpt = torch.load(tmp_path / "artifacts" / "cached" / "best.pt", map_location="cpu", weights_only=True)
    init = torch.load(weights, map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    backbone = [k for k in init if not k.startswith("classifier")]
    assert backbone and all(torch.equal(state[k], init[k]) for k in backbone)  # running stats included
    # the validation F1 recorded from the cached features is what the full model scores on the images
    meta = ModelMeta.from_dict(ckpt["meta"], "best.pt")
    model = timm.create_model("test_efficientnet", num_classes=len(meta.class_names))
    model.load_state_dict(state)
    paths, targets = load_splits(TrainConfig(architecture="test_efficientnet", data=str(elpv_small))).valid
    loader = make_loader(ImageDataset(paths, targets, valid_transform(meta)), 8, False, 0, 0)
    out = evaluate(model, loader, torch.nn.CrossEntropyLoss(), torch.device("cpu"), len(meta.class_names))
    assert out["f1_micro"] == pytest.approx(meta.metrics["f1_micro"])
    assert out["loss"] == pytest.approx(meta.metrics["valid_loss"], rel=1e-4)
