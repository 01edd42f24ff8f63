"""``python -m bench.gpucheck.data`` (``make gpu-data``): the GPU kit's data folder, prepared on the CPU machine.

Writes ``data/gpucheck/`` (git-ignored; the device call carries it)::

    elpv/            400 ELPV images (100 per class) in the contest layout, train_/valid_ split, class map
    weights/<file>   the Lite0 ImageNet weights named by configs/models/efficientnet_lite0.yaml (when present)
    manifest.json    image counts, size, settings, the Lite0 source, and the CPU reference: the best validation
                     micro-F1 of each kit training config trained here on the CPU with the GPU run's settings

A reference already recorded for the same config file, settings and data is kept (``--force`` trains it again).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gpucheck import settings
from bench.gpucheck.checks import Kit
from bench.gpucheck.proc import Runner
from bench.gpucheck.training import parse_train_log, train_command, train_overrides
from runtime.artifacts import file_sha256
from runtime.atomic import OUTPUT_MARKER, write_text
from runtime.config import read_yaml
from runtime.errors import ArgumentParser, UserError, description, positive_int, run_cli

#: what may travel: the device call takes 64 MiB for the whole working tree
MAX_MIB = 56.0


def find_lite0(models_dir: Path = settings.MODELS_DIR) -> dict[str, Any]:
    """``{"config", "source", "reason"}``: the Lite0 config and the weights file it names, or why there are none."""
    cfg = settings.model_config(settings.LITE0_MODEL, models_dir)
    if not cfg.is_file():
        return {"config": None, "source": None, "reason": f"{cfg} not present"}
    source = read_yaml(cfg).get("pretrained_path")
    if not source:
        return {
            "config": str(cfg),
            "source": None,
            "reason": f"{cfg} has no pretrained_path (hub weights cannot reach the GPU machine)",
        }
    if not Path(source).is_file():
        return {
            "config": str(cfg),
            "source": source,
            "reason": f"{source} (pretrained_path of {cfg}) not found: write it, then make gpu-data",
        }
    return {"config": str(cfg), "source": source, "reason": None}


def folder_mib(path: Path) -> float:
    """Total size in MiB of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def prepare_images(out: Path, per_class: int, force: bool) -> dict[str, int]:
    """ELPV subset in ``<out>/elpv`` (:func:`train.prepare_elpv.prepare`) and its split; returns the image counts."""
    import pandas as pd

    from train.prepare_elpv import prepare
    from train.split import SplitConfig, split

    elpv = prepare(
        out / "elpv", test_fraction=settings.TEST_FRACTION, seed=settings.SEED, per_class=per_class, force=force
    )
    split(SplitConfig(dataset=str(elpv), valid_fraction=settings.VALID_FRACTION, seed=settings.SEED))
    rows = {name: len(pd.read_csv(elpv / f"{name}.csv")) for name in ("train_", "valid_", "test")}
    return {"train": rows["train_"], "valid": rows["valid_"], "test": rows["test"], "total": sum(rows.values())}


def reference(kit: Kit, model: str, old: dict | None) -> dict[str, Any]:
    """The CPU reference of ``model``: the run's best validation micro-/macro-F1, its dtype, losses and time (or
    ``old`` when it was recorded for the same config file and settings)."""
    from runtime.engines.pytorch import load_checkpoint

    sha = file_sha256(settings.model_config(model, kit.models_dir))
    if old and old.get("config_sha256") == sha and old.get("common_train") == settings.COMMON_TRAIN:
        print(f"gpu-data: keeping the CPU reference of {model} (same config and settings)", file=sys.stderr)
        return old
    overrides = train_overrides(kit, model, {}, f"ref-{model}", reference=True)
    print(f"gpu-data: training {model} on the CPU ({overrides['epochs']} epochs) ...", file=sys.stderr)
    done = kit.runner.run(train_command(kit, model, overrides), timeout=3600)
    if done.returncode != 0:
        raise UserError(f"CPU reference training of {model} failed: {done.error_line()} (log: {kit.runner.log_path})")
    log = parse_train_log(done.stderr)
    metrics = load_checkpoint(Path(overrides["artifacts"]) / model / "best.pt")["meta"]["metrics"]
    return {
        "f1_micro": metrics["f1_micro"],
        "f1_macro": metrics["f1_macro"],
        "epoch": metrics["epoch"],
        "dtype": log.dtype,
        "train_loss": [e[1] for e in log.epochs],
        "seconds": round(done.seconds, 1),
        "config_sha256": sha,
        "common_train": settings.COMMON_TRAIN,
        "overrides": {k: v for k, v in overrides.items() if k not in ("artifacts", "runs")},
    }


def references(out: Path, lite0: dict[str, Any], models_dir: Path, old: dict[str, Any]) -> dict[str, Any]:
    """Model -> :func:`reference` for the demo CNN and, when its weights were found, Lite0 (else the reason)."""
    refs: dict[str, Any] = {} if lite0["reason"] is None else {settings.LITE0_MODEL: {"skipped": lite0["reason"]}}
    models = [settings.DEMO_MODEL] + ([settings.LITE0_MODEL] if lite0["reason"] is None else [])
    with tempfile.TemporaryDirectory(prefix="gpu-data-") as work:
        runner = Runner(Path(work) / "steps.log", time.monotonic() + 7200)
        kit = Kit(runner, out, Path(work), Path(work), {"lite0": lite0}, models_dir, device="cpu")
        for model in models:
            refs[model] = reference(kit, model, old.get(model))
    return refs


def prepare_kit(
    out: str | Path,
    per_class: int = settings.PER_CLASS,
    with_reference: bool = True,
    models_dir: Path = settings.MODELS_DIR,
    force: bool = False,
) -> dict[str, Any]:
    """Write the kit's data folder (see the module docstring); returns the manifest.

    Raises:
        UserError: the ELPV package is missing, a reference training fails, or the folder grows past
            :data:`MAX_MIB` (too large to travel with the working tree).
    """
    from bench.environment import environment

    out = Path(out)
    manifest_path = out / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.is_file() and not force else {}
    images = prepare_images(out, per_class, force)
    if old.get("images") != images:
        old = {}  # another image set: its references do not apply
    lite0 = find_lite0(models_dir)
    if lite0["reason"] is None:
        target = out / "weights" / Path(lite0["source"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lite0["source"], target)
        lite0["weights"] = str(target.relative_to(out))
    refs = references(out, lite0, models_dir, old.get("reference", {})) if with_reference else {}
    env = environment()
    manifest = {
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {k: env.get(k) for k in ("commit", "cpu", "cpu_cores", "torch", "timm", "python")},
        "images": images,
        "settings": {
            "per_class": per_class,
            "test_fraction": settings.TEST_FRACTION,
            "seed": settings.SEED,
            "valid_fraction": settings.VALID_FRACTION,
            "common_train": settings.COMMON_TRAIN,
        },
        "lite0": lite0,
        "reference": refs,
    }
    write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    write_text(out / OUTPUT_MARKER, "written by imgcls-deploy (make gpu-data); make clean removes it\n")
    size = folder_mib(out)
    manifest["size_mib"] = round(size, 1)
    write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    if size > MAX_MIB:
        raise UserError(f"{out}: {size:.1f} MiB, more than the {MAX_MIB:.0f} MiB that may travel to the GPU machine")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.gpucheck.data``."""
    p = ArgumentParser(prog="python -m bench.gpucheck.data", description=description(__doc__))
    p.add_argument("--out", default=str(settings.DATA_DIR), help=f"data folder (default: {settings.DATA_DIR})")
    p.add_argument("--per-class", type=positive_int, default=settings.PER_CLASS, help="ELPV images per class")
    p.add_argument("--no-reference", action="store_true", help="skip the CPU reference trainings (F1 not compared)")
    p.add_argument("--force", action="store_true", help="rebuild the images and train every reference again")
    args = p.parse_args(argv)
    m = prepare_kit(args.out, args.per_class, not args.no_reference, force=args.force)
    refs = (
        ", ".join(
            f"{k} {v['f1_micro']:.4f}" if "f1_micro" in v else f"{k} skipped ({v['skipped']})"
            for k, v in m["reference"].items()
        )
        or "none"
    )
    print(
        f"{args.out}: {m['images']['total']} images, {m['size_mib']} MiB; Lite0 weights: "
        f"{m['lite0'].get('weights') or m['lite0']['reason']}; CPU reference valid micro-F1: {refs}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
