"""Epoch-level F1 (not per-batch averages) and the training config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.errors import UserError
from train.config import TrainConfig, load_train_config
from train.loop import evaluate, f1_micro_macro


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
