"""Epoch-level F1 (not per-batch averages) and the training config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.errors import UserError
from runtime.metrics import f1_micro_macro
from train.config import TrainConfig, load_train_config
from train.loop import evaluate


class _Fixed(torch.nn.Module):
    """Predicts class 0 for every input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.ones(len(x)), torch.zeros(len(x))], 1)


def test_evaluate_scores_the_whole_epoch() -> None:
    # batch 1: 1 image, correct; batch 2: 3 images, all wrong. Per-batch mean would be 0.5; epoch-level is 0.25.
    loader = [(torch.zeros(1, 1), torch.tensor([0])), (torch.zeros(3, 1), torch.tensor([1, 1, 1]))]
    out = evaluate(_Fixed(), loader, torch.nn.CrossEntropyLoss(), torch.device("cpu"), 2)
    assert out["f1_micro"] == pytest.approx(0.25)
    micro, macro = f1_micro_macro(np.array([0, 1, 1, 1]), np.array([0, 0, 0, 0]), 2)
    assert out["f1_macro"] == pytest.approx(macro)
    assert micro == pytest.approx(0.25)


def test_train_config_errors() -> None:
    with pytest.raises(UserError, match="unknown MODEL 'nosuch'"):
        load_train_config("nosuch")
    with pytest.raises(UserError, match="'lr'"):
        TrainConfig(architecture="resnet18", lr=0).validate("m.yaml")
    with pytest.raises(UserError, match="unknown key 'lrr'"):
        load_train_config("resnet18_cpu", {"lrr": 1})


@pytest.mark.parametrize("name", ["resnet50", "resnet101", "efficientnetv2_rw_m", "swin_base", "swin_large"])
def test_seed_backbone_configs_build(name: str) -> None:
    import timm

    _, cfg = load_train_config(name)
    assert timm.is_model(cfg.architecture)
    assert cfg.freeze_backbone and cfg.pretrained and cfg.lr_gamma == 0.8 and cfg.lr_step_epochs == 2


def test_amp_dtype_follows_device_and_cpu_support(monkeypatch: pytest.MonkeyPatch) -> None:
    import train.loop

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert train.loop.amp_dtype_for(False, "bfloat16", cuda) is None
    assert train.loop.amp_dtype_for(True, "float16", cuda) == "float16"
    assert train.loop.amp_dtype_for(True, "float16", cpu) is None  # the seed's default stays FP32 on the CPU
    monkeypatch.setattr(train.loop, "cpu_has_native_bf16", lambda: True)
    assert train.loop.amp_dtype_for(True, "bfloat16", cpu) == "bfloat16"
    monkeypatch.setattr(train.loop, "cpu_has_native_bf16", lambda: False)
    assert train.loop.amp_dtype_for(True, "bfloat16", cpu) is None  # emulated bf16 is slower than FP32


def test_cpu_bfloat16_autocast_runs_the_forward_in_bfloat16() -> None:
    from train.loop import autocast

    layer = torch.nn.Linear(4, 2)
    with autocast(torch.device("cpu"), "bfloat16"):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), None):
        assert layer(torch.ones(1, 4)).dtype == torch.float32
