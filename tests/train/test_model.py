"""Model factory: local pretrained weights, offline hub requests, backbone freezing, metadata from timm."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import train.model
from runtime.errors import UserError
from train.config import TrainConfig
from train.model import create_model, freeze_backbone, make_meta


def test_pretrained_path_loads_local_weights_and_resets_head(tmp_path: Path) -> None:
    source = timm.create_model("test_resnet", num_classes=10)
    weights = tmp_path / "weights.pth"
    torch.save(source.state_dict(), weights)
    model = create_model(TrainConfig(architecture="test_resnet", pretrained_path=str(weights)), num_classes=4)
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    assert model.get_classifier().out_features == 4


def test_offline_hub_request_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(train.model, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(UserError, match="pretrained: false") as info:
        create_model(TrainConfig(architecture="test_resnet", pretrained=True), num_classes=4)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="unknown timm architecture"):
        create_model(TrainConfig(architecture="resnet_does_not_exist"), num_classes=4)


def test_freeze_backbone_trains_only_the_head() -> None:
    model = timm.create_model("test_resnet", num_classes=4)
    params = freeze_backbone(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == len(params) == 2  # classifier weight and bias
    assert all(p is q for p, q in zip(trainable, model.get_classifier().parameters(), strict=True))


def test_meta_follows_timm_data_config_with_overrides() -> None:
    model = timm.create_model("test_efficientnet", num_classes=3)
    meta = make_meta(model, TrainConfig(architecture="test_efficientnet"), ["a", "b", "c"])
    assert (meta.input_size, meta.interpolation, meta.crop_pct) == ((3, 160, 160), "bicubic", 0.95)
    assert meta.mean == pytest.approx((0.485, 0.456, 0.406))
    meta = make_meta(model, TrainConfig(architecture="test_efficientnet", img_size=96, crop_pct=1.0), ["a", "b"])
    assert meta.input_size == (3, 96, 96) and meta.crop_pct == 1.0


def test_a_checkpoint_that_cannot_be_written_keeps_the_old_one(tmp_path: Path, monkeypatch) -> None:
    from train.checkpoint import save_checkpoint

    model = create_model(TrainConfig(architecture="test_efficientnet"), 3)
    meta = make_meta(model, TrainConfig(architecture="test_efficientnet"), ["a", "b", "c"])
    path = save_checkpoint(tmp_path / "best.pt", model, meta)
    before = path.read_bytes()

    def full_disk(*args: object, **kwargs: object) -> None:  # what torch's writer raises on ENOSPC
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 124792128 vs 124792016")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"cannot write the checkpoint \(\d+ MiB free on its disk\): .*unexpected pos"):
        save_checkpoint(path, model, meta)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_global_pool_is_passed_to_timm_and_checked() -> None:
    model = create_model(TrainConfig(architecture="test_resnet", global_pool="max"), num_classes=4)
    assert model.global_pool.pool_type == "max"
    out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 4)
    with pytest.raises(UserError, match="'global_pool'"):
        TrainConfig(architecture="test_resnet", global_pool="median").validate("m.yaml")


def test_fixed_input_size_is_timms_own_flag() -> None:
    from runtime.engines.pytorch import fixed_input_size

    fixed = ["vit_tiny_patch16_224", "swin_base_patch4_window12_384", "deit_tiny_patch16_224", "test_vit"]
    free = ["resnet18", "tf_efficientnet_lite0", "efficientnetv2_rw_m", "test_resnet", "no_such_model"]
    assert all(fixed_input_size(a) for a in fixed) and not any(fixed_input_size(a) for a in free)
