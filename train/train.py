"""One training run of a timm backbone on a split dataset in the contest layout (command line: :mod:`train.cli`).

Keeps the best checkpoint by validation micro-F1 (``best.pt``) and, every epoch, a resumable ``last.pt`` (model,
optimizer, scheduler, AMP scaler, EMA, epoch, best metrics, RNG states); logs to TensorBoard; under ``torchrun``
trains with DistributedDataParallel (rank 0 validates and saves). The structure follows torchvision's
``references/classification``: build the data, the model and one optimisation step, then loop over epochs.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch.utils.tensorboard import SummaryWriter

from runtime.artifacts import PRETRAINED_SUFFIX
from runtime.dataset import read_class_map, require_dir
from runtime.engines.pytorch import load_checkpoint
from runtime.errors import UserError
from train.builders import load_splits, make_loaders, make_scheduler, make_step, per_rank_batch
from train.checkpoint import save_checkpoint
from train.config import TrainConfig
from train.distributed import Distributed, pick_device, rng_state, seed_everything, set_rng_state
from train.loop import evaluate, train_one_epoch
from train.model import create_model, freeze_backbone, make_meta
from train.report import log_best_epoch


def load_resume_state(path: Path, meta: Any) -> dict[str, Any]:
    """``last.pt`` for ``--resume``, checked against the current config.

    Raises:
        UserError: missing file, or a checkpoint of another architecture, input size or class list.
    """
    if not path.is_file():
        raise UserError(f"{path}: nothing to resume (no last.pt); train without RESUME first")
    state = load_checkpoint(path)
    saved, current = state["meta"], meta.to_dict()
    for key in ("architecture", "class_names", "input_size"):
        if saved.get(key) != current[key]:
            raise UserError(f"{path}: checkpoint {key} {saved.get(key)!r} differs from the config's {current[key]!r}")
    if "optimizer" not in state:
        raise UserError(f"{path}: not a resumable checkpoint (no optimizer state)")
    return state


class Trainer:
    """The state of one run: model (EMA, DDP wrapper, cached-feature head), loaders, optimisation step,
    scheduler, best metrics, checkpoints and the TensorBoard writer (rank 0).

    Raises:
        UserError: see :func:`train`.
    """

    def __init__(self, name: str, cfg: TrainConfig, ddp: Distributed) -> None:
        self.name, self.cfg, self.ddp = name, cfg, ddp
        self.splits = splits = load_splits(cfg)
        k = len(splits.class_names)
        batch = per_rank_batch(cfg, len(splits.train[0]), ddp.world)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(cfg.seed + ddp.rank)
        self.device = pick_device(cfg.device, ddp.local_rank)
        self.model = create_model(cfg, k)
        self.meta = make_meta(self.model, cfg, splits.class_names)
        params = freeze_backbone(self.model) if cfg.freeze_backbone else list(self.model.parameters())
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay) if cfg.ema else None
        self.net = torch.nn.parallel.DistributedDataParallel(self.model) if ddp.world > 1 else self.model
        self.loaders = make_loaders(cfg, splits, self.model, self.meta, batch, ddp, self.device)
        image_input = self.loaders.head is None
        self.step = make_step(cfg, params, splits.train[1], k, self.device, ddp, self.ema, image_input)
        self.scheduler = make_scheduler(cfg, self.step.optimizer)
        self.eval_amp = self.step.amp_dtype if self.device.type == "cuda" else None  # CPU: validate in FP32
        model_dir = Path(cfg.artifacts) / name
        self.best_path, self.last_path = model_dir / "best.pt", model_dir / "last.pt"
        self.best: dict[str, Any] = {"f1_micro": -1.0}
        self.best_eval: dict[str, Any] | None = None
        self.first_epoch = 1
        self.run_dir = Path(cfg.runs) / name / time.strftime("%Y%m%d-%H%M%S")

    def resume(self) -> None:
        """Continue from ``last.pt``: weights, optimizer, scheduler, scaler, EMA, loader and RNG states.

        Raises:
            UserError: see :func:`load_resume_state`.
        """
        state = load_resume_state(self.last_path, self.meta)
        self.model.load_state_dict(state["state_dict"])
        self.step.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.loaders.train.generator.set_state(state["loader_rng"])
        set_rng_state(state["rng"])
        self.best, self.first_epoch = dict(state["best"]), int(state["epoch"]) + 1
        self.run_dir = Path(state["run_dir"])
        if self.ddp.main:
            print(f"resuming {self.name} from {self.last_path} at epoch {self.first_epoch}", file=sys.stderr)

    def describe(self) -> str:
        """The run's one-line header."""
        params = sum(p.numel() for p in self.model.parameters()) / 1e6
        (n_train, n_valid), (_, h, w) = (len(self.splits.train[0]), len(self.splits.valid[0])), self.meta.input_size
        return (
            f"train {self.name} ({self.cfg.architecture}, {params:.1f}M params) on {self.device} x {self.ddp.world}: "
            f"{n_train} train / {n_valid} valid images, {len(self.splits.class_names)} classes, input {h}x{w}, "
            f"{self.step.amp_dtype or 'float32'}"
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of :func:`train.loop.train_one_epoch`, then the scheduler step.

        Raises:
            UserError: the loss is not finite (the best checkpoint so far is kept).
        """
        if isinstance(self.loaders.sampler, torch.utils.data.distributed.DistributedSampler):
            self.loaders.sampler.set_epoch(epoch)
        tr = train_one_epoch(self.loaders.head or self.net, self.loaders.train, self.step, f"epoch {epoch} train")
        if not math.isfinite(tr["loss"]):
            raise UserError(
                f"training loss became {tr['loss']} in epoch {epoch}; lower lr in {self.cfg.source} "
                f"(best checkpoint so far kept in {self.best_path})"
            )
        self.scheduler.step(epoch)
        return tr

    def validate_and_save(self, epoch: int, tr: dict[str, float], lr: float, writer: SummaryWriter) -> None:
        """Rank 0: validate (the EMA weights when on), log, keep ``best.pt`` on a better micro-F1, write
        ``last.pt``."""
        cfg, scored = self.cfg, self.ema.module if self.ema is not None else self.model
        va = evaluate(self.loaders.head or scored, self.loaders.valid, torch.nn.CrossEntropyLoss(), self.device,
                      len(self.splits.class_names), self.eval_amp, f"epoch {epoch} valid",
                      cfg.channels_last and self.loaders.head is None)  # fmt: skip
        for split_name, metrics in (("train", tr), ("valid", va)):
            for key, value in metrics.items():
                if isinstance(value, float):
                    writer.add_scalar(f"{key}/{split_name}", value, epoch)
        writer.add_scalar("lr", lr, epoch)
        improved = va["f1_micro"] > self.best["f1_micro"]
        if improved:
            self.best = {"epoch": epoch, "f1_micro": va["f1_micro"], "f1_macro": va["f1_macro"],
                         "valid_loss": va["loss"]}  # fmt: skip
            self.best_eval = va
            self.meta.metrics = dict(self.best)
            save_checkpoint(self.best_path, scored, self.meta, epoch=epoch, config=vars(cfg).copy())
        step = self.step
        save_checkpoint(
            self.last_path, self.model, self.meta, epoch=epoch, config=vars(cfg).copy(),
            optimizer=step.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=step.scaler.state_dict(), ema=self.ema.module.state_dict() if self.ema is not None else None,
            best=self.best, rng=rng_state(), loader_rng=self.loaders.train.generator.get_state(),
            run_dir=str(self.run_dir),
        )  # fmt: skip
        print(
            f"epoch {epoch}/{cfg.epochs} lr {lr:.2e} | train loss {tr['loss']:.4f} f1 {tr['f1_micro']:.4f} "
            f"({tr['img_per_s'] * self.ddp.world:.0f} img/s) | valid loss {va['loss']:.4f} micro-F1 "
            f"{va['f1_micro']:.4f} macro-F1 {va['f1_macro']:.4f}" + (" *" if improved else ""),
            file=sys.stderr,
        )

    def run(self) -> dict[str, Any]:
        """Every epoch from :attr:`first_epoch`; returns the best validation metrics."""
        ddp = self.ddp
        if ddp.main:
            print(self.describe(), file=sys.stderr)
        writer = SummaryWriter(str(self.run_dir)) if ddp.main else None
        try:
            for epoch in range(self.first_epoch, self.cfg.epochs + 1):
                lr = self.step.optimizer.param_groups[0]["lr"]
                tr = self.train_epoch(epoch)
                if writer is not None:
                    self.validate_and_save(epoch, tr, lr, writer)
                ddp.barrier()
            if writer is not None:
                log_best_epoch(writer, self.cfg, self.best, self.best_eval, self.splits.class_names)
                print(
                    f"best valid micro-F1 {self.best['f1_micro']:.4f} (epoch {self.best.get('epoch')}) -> "
                    f"{self.best_path}; TensorBoard logs in {self.run_dir}",
                    file=sys.stderr,
                )
        finally:
            if writer is not None:
                writer.close()
        return self.best


def write_pretrained(name: str, cfg: TrainConfig) -> Path:
    """Write ``artifacts/<name>_pretrained/best.pt`` without training: the config's pretrained backbone
    (``pretrained_path`` or the hub's ``pretrained: true``) with its classifier freshly initialised (seeded).

    The checkpoint follows the artifact contract (class names from the split's class map), so ``make export`` and
    every engine read it, but its logits mean nothing: it is for ``runtime.features`` (pre-logit features of the
    pretrained backbone, the seed project's cleaning before training). ``meta.metrics`` records
    ``{"trained": False}``.

    Raises:
        UserError: the config has no pretrained weights, no class map (split first), or weights that do not load.
    """
    if not (cfg.pretrained or cfg.pretrained_path):
        raise UserError(
            f"{cfg.source}: no pretrained weights (pretrained: false, no pretrained_path): an untrained backbone's "
            "features are noise; train it, or use a config with pretrained weights"
        )
    class_map = require_dir(cfg.data) / cfg.class_map
    if not class_map.is_file():
        raise UserError(f"{class_map}: not found; run `make split DATA={cfg.data}` first")
    names = read_class_map(class_map)
    seed_everything(cfg.seed)
    model = create_model(cfg, len(names)).eval()
    meta = make_meta(model, cfg, names)
    meta.metrics = {"trained": False}
    path = Path(cfg.artifacts) / f"{name}{PRETRAINED_SUFFIX}" / "best.pt"
    return save_checkpoint(path, model, meta, epoch=0, config=vars(cfg).copy())


def train(name: str, cfg: TrainConfig, resume: bool = False) -> dict[str, float]:
    """Run the whole training of ``artifacts/<name>``; returns the best validation metrics.

    Raises:
        UserError: missing dataset/split files, unknown labels, unreadable images, bad weights, a resume
            checkpoint of another architecture or class list, more processes than the data allows.
    """
    ddp = Distributed("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        trainer = Trainer(name, cfg, ddp)
        if resume:
            trainer.resume()
        return trainer.run()
    finally:
        ddp.close()
