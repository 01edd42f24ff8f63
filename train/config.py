"""Training config: the keys of ``configs/models/<name>.yaml``."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar

from runtime.config import load_config
from runtime.errors import UserError

MODELS_DIR = Path("configs/models")


@dataclasses.dataclass
class TrainConfig:
    """One backbone's training recipe. Defaults follow the seed project (AdamW lr 1e-3, lr x 0.8 every 2
    epochs, label-smoothing cross-entropy, head-only training is opt-in via ``freeze_backbone``).

    Sizes are pixels; ``img_size``/``crop_pct``/``interpolation``/``mean``/``std`` default (``null``) to the
    model's timm data config.
    """

    architecture: str
    pretrained: bool = False
    pretrained_path: str | None = None
    freeze_backbone: bool = False
    #: with freeze_backbone: true, false keeps the backbone's BatchNorm layers in eval mode (pretrained running
    #: statistics unchanged); true lets training batches update them (the layers' weights stay frozen)
    update_bn_stats: bool = False
    #: with freeze_backbone and no train-time augmentation: compute the backbone's pre-logit features once
    #: and train the classifier on them (see train.cached)
    cache_features: bool = False
    drop_rate: float = 0.0
    global_pool: str | None = None  # timm head pooling: avg | max | avgmax | catavgmax (null: the model's own)
    img_size: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    lr_step_epochs: int = 2
    lr_gamma: float = 0.8
    train_scale: list[float] = dataclasses.field(default_factory=lambda: [0.08, 1.0])
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter: float = 0.4
    auto_augment: str | None = None  # timm "rand-m9-mstd0.5" (RandAugment) or "trivialaugment" (TrivialAugmentWide)
    mixup: float = 0.0  # mixup alpha (0: off)
    cutmix: float = 0.0  # cutmix alpha (0: off)
    mixup_prob: float = 1.0
    scheduler: str = "step"  # step (the seed's lr x lr_gamma every lr_step_epochs) or cosine
    warmup_epochs: int = 0
    min_lr: float = 1.0e-6  # cosine floor
    ema: bool = False  # evaluate and keep an exponential moving average of the weights
    ema_decay: float = 0.999
    accum_steps: int = 1  # gradient accumulation
    clip_grad: float | None = None  # max gradient norm
    class_balance: str = "none"  # none | sampler (inverse-frequency sampling) | loss (inverse-frequency weights)
    channels_last: bool = False
    deterministic: bool = False  # torch.use_deterministic_algorithms (exact resume; slower)
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    amp_dtype: str = "float16"  # CUDA: float16 or bfloat16; CPU: bfloat16 only (native AVX512-BF16/AMX), else FP32
    data: str = "data/elpv"
    train_csv: str = "train_.csv"
    valid_csv: str = "valid_.csv"
    class_map: str = "encode_classes.json"
    artifacts: str = "artifacts"
    runs: str = "runs"
    #: where the config came from, for error messages (set by :meth:`validate`; not a YAML key)
    source: ClassVar[str] = "config"

    def validate(self, source: str) -> None:
        """Raises UserError naming the first key with an impossible value; remembers ``source``."""
        self.source = source  # type: ignore[misc]
        checks = [
            ("epochs", self.epochs >= 1),
            ("batch_size", self.batch_size >= 1),
            ("lr", math.isfinite(self.lr) and self.lr > 0),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0),
            ("hflip", 0 <= self.hflip <= 1),
            ("vflip", 0 <= self.vflip <= 1),
            ("color_jitter", 0 <= self.color_jitter <= 1),
            ("mean", self.mean is None or (len(self.mean) == 3 and all(0 <= v <= 1 for v in self.mean))),
            ("std", self.std is None or (len(self.std) == 3 and all(0 < v <= 1 for v in self.std))),
            ("label_smoothing", 0 <= self.label_smoothing < 1),
            ("lr_step_epochs", self.lr_step_epochs >= 1),
            ("lr_gamma", 0 < self.lr_gamma <= 1),
            ("img_size", self.img_size is None or 8 <= self.img_size <= 2048),
            ("crop_pct", self.crop_pct is None or 0 < self.crop_pct <= 1.5),
            (
                "train_scale",
                len(self.train_scale) == 2 and 0 < self.train_scale[0] <= self.train_scale[1] <= 1,
            ),
            ("workers", self.workers >= 0),
            ("device", self.device in ("auto", "cpu") or self.device.startswith("cuda")),
            ("drop_rate", 0 <= self.drop_rate < 1),
            ("global_pool", self.global_pool in (None, "avg", "max", "avgmax", "catavgmax")),
            ("mixup", self.mixup >= 0),
            ("cutmix", self.cutmix >= 0),
            ("mixup_prob", 0 <= self.mixup_prob <= 1),
            ("scheduler", self.scheduler in ("step", "cosine")),
            ("warmup_epochs", 0 <= self.warmup_epochs < self.epochs),
            ("min_lr", 0 <= self.min_lr < self.lr),
            ("ema_decay", 0 < self.ema_decay < 1),
            ("accum_steps", self.accum_steps >= 1),
            ("clip_grad", self.clip_grad is None or self.clip_grad > 0),
            ("class_balance", self.class_balance in ("none", "sampler", "loss")),
            ("amp_dtype", self.amp_dtype in ("float16", "bfloat16")),
            ("auto_augment", self.auto_augment is None or self.auto_augment == "trivialaugment"
             or self.auto_augment.startswith(("rand", "augmix", "original", "v0"))),
        ]  # fmt: skip
        for key, ok in checks:
            if not ok:
                hint = {"warmup_epochs": f" (must be below epochs = {self.epochs})",
                        "min_lr": f" (must be below lr = {self.lr})"}.get(key, "")  # fmt: skip
                raise UserError(f"{source}: key {key!r} has an invalid value {getattr(self, key)!r}{hint}")
        if self.cache_features:
            self._check_cacheable(source)
        if self.pretrained_path and not Path(self.pretrained_path).is_file():
            raise UserError(f"{source}: pretrained_path {self.pretrained_path!r} is not a file")

    def _check_cacheable(self, source: str) -> None:
        """Raises UserError unless ``cache_features`` can hold: a frozen backbone with frozen BatchNorm
        statistics and every train-time augmentation off (the head then sees the eval transform's features)."""
        augment = {"hflip": self.hflip, "vflip": self.vflip, "color_jitter": self.color_jitter,
                   "auto_augment": self.auto_augment, "mixup": self.mixup, "cutmix": self.cutmix}  # fmt: skip
        conflict = [f"{k}: {v}" for k, v in augment.items() if v]
        if list(self.train_scale) != [1.0, 1.0]:
            conflict.append(f"train_scale: {list(self.train_scale)}")
        if not self.freeze_backbone:
            conflict.insert(0, "freeze_backbone: false")
        if self.update_bn_stats:
            conflict.append("update_bn_stats: true")
        if self.ema:
            conflict.append("ema: true")
        if conflict:
            raise UserError(
                f"{source}: cache_features needs freeze_backbone: true and no train-time augmentation "
                f"(hflip/vflip/color_jitter 0, train_scale [1.0, 1.0], no auto_augment/mixup/cutmix/ema/"
                f"update_bn_stats); got {', '.join(conflict)}"
            )


def model_config_path(model: str) -> Path:
    """``configs/models/<model>.yaml``, or ``model`` itself if it is a YAML path.

    Raises:
        UserError: no such config (lists the known model names).
    """
    path = Path(model)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"{path}: model config not found")
        return path
    path = MODELS_DIR / f"{model}.yaml"
    if not MODELS_DIR.is_dir():
        raise UserError(f"no {MODELS_DIR}/ here: run from the repository root, or pass --model <file.yaml>")
    if not path.is_file():
        known = sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))
        raise UserError(f"unknown MODEL {model!r}: no {path} (known: {', '.join(known)})")
    return path


def load_train_config(model: str, overrides: dict | None = None) -> tuple[str, TrainConfig]:
    """(model name, config) for ``make train MODEL=<model>``; see :func:`model_config_path`."""
    path = model_config_path(model)
    return path.stem, load_config(TrainConfig, path, overrides)
