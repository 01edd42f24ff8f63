"""``python -m runtime.predict``: predict image classes with any engine and write a submission.

Input is a CSV of ids in the contest layout (``--data D [--csv test.csv]``, images in ``D/test/``), any CSV with
an ``image_id`` column (``--csv FILE --images DIR``), or a folder (``--images DIR``: every image, sorted by
name). Output is ``image_id,label`` in input order (``--topk``/``--probs`` add columns; ``--format csv|jsonl|
parquet``). Unreadable inputs are skipped and listed in ``<out>.errors.csv`` (``--on-error skip``, the
default) or stop the run (``--on-error fail``).

Exit status: 0 all rows predicted; 3 some inputs were skipped (see the errors file); 2 bad input or options.

Example::

    python -m runtime.predict --engine onnx --model artifacts/resnet18_cpu --data data/elpv --out submission.csv
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from runtime.artifacts import fold_dirs
from runtime.atomic import write_text
from runtime.config import parse_overrides
from runtime.dataset import image_dir_for, read_csv, require_dir, resolve_ids
from runtime.engines import ENGINE_NAMES, create_engine, describe_members
from runtime.errors import ArgumentParser, UserError, description, positive_int, run_cli
from runtime.outputs import FORMATS, PartialOutput, errors_path, finalize, partial_path, read_partial, write_gallery
from runtime.pipeline import softmax, stream_batches
from runtime.preprocess import preprocess_image
from runtime.tta import check_mode, five_crop_views, tta_probs

EXIT_SKIPPED = 3


def build_parser() -> ArgumentParser:
    """Command-line options of ``runtime.predict``."""
    p = ArgumentParser(prog="python -m runtime.predict", description=description(__doc__))
    p.add_argument("--engine", choices=ENGINE_NAMES, default="onnx", help="backend (default: onnx)")
    p.add_argument(
        "--model", action="append", help="artifact file or model folder (artifacts/<model>); repeat for an ensemble"
    )
    p.add_argument("--ensemble", help="YAML: members: [{model, engine, precision, weight}] (probabilities averaged)")
    p.add_argument("--folds", action="store_true", help="ensemble of every fold<k>/ model inside each --model folder")
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        help="artifact precision inside a model folder (default: fp32; a file runs at its own precision)",
    )
    p.add_argument("--data", help="dataset folder in the contest layout")
    p.add_argument("--csv", help="CSV with an image_id column (inside --data, or a path); default test.csv with --data")
    p.add_argument(
        "--images", help="image folder (default: <data>/<csv stem>/ or <data>/train/); alone: predict it all"
    )
    p.add_argument("--out", default="submission.csv", help="output file (default: submission.csv)")
    p.add_argument("--format", choices=FORMATS, default="csv", help="output format (default: csv)")
    p.add_argument("--topk", type=positive_int, help="add label_i/prob_i columns for the K most likely classes")
    p.add_argument("--probs", action="store_true", help="add one probability column per class")
    p.add_argument("--visualize", metavar="DIR", help="copy images into DIR/<class>/ and write DIR/index.html")
    p.add_argument("--tta", default="none", help="test-time augmentation: none, hflip, hflip+vflip, five-crop")
    p.add_argument("--on-error", choices=("skip", "fail"), default="skip", help="unreadable inputs (default: skip)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run with the same options")
    p.add_argument("--shard", help="i/n: predict only the i-th of n contiguous parts (merge: python -m runtime.merge)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default: 32)")
    p.add_argument("--device", default="cpu", help="cpu, cuda[:N] (onnx, torch, trt) (default: cpu)")
    p.add_argument("--threads", type=positive_int, default=None, help="intra-op CPU threads (default: library default)")
    p.add_argument("--workers", type=positive_int, default=2, help="image-decoding threads (default: 2)")
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="engine option (YAML value): torch channels_last=false, compile=true; "
        "onnx provider_options={trt_fp16_enable: true}",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p  # fmt: skip


def load_inputs(args: object) -> tuple[list[str], Path]:
    """(image ids in input order, image folder) from ``--data/--csv/--images``.

    Raises:
        UserError: missing folders or CSV, or no input given.
    """
    data, csv, images = getattr(args, "data", None), getattr(args, "csv", None), getattr(args, "images", None)
    if data is None and csv is None and images is None:
        raise UserError("give --data (contest layout), --csv with --images, or --images alone (a folder)")
    if data is None and csv is None:
        folder = require_dir(images, "image folder")
        exts = {e.lower() for e, f in Image.registered_extensions().items() if f in Image.OPEN}
        ids = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix.lower() in exts and p.is_file())
        if not ids:
            raise UserError(f"{folder}: no image files found")
        return ids, folder
    base = require_dir(data) if data is not None else Path(".")
    csv_path = base / (csv or "test.csv")
    ids = read_csv(csv_path, allow_empty_ids=True)["image_id"].tolist()
    if images is not None:
        folder = Path(images)
    elif data is not None:
        folder = image_dir_for(base, csv_path.name)
    else:
        raise UserError("--csv without --data needs --images (the folder the ids are in)")
    return ids, require_dir(folder, "image folder")


def parse_shard(text: str | None, total: int) -> tuple[int, int, int, int]:
    """``"i/n"`` -> (i, n, start, end): the i-th (1-based) of n contiguous parts of ``total`` rows.

    Raises:
        UserError: not ``i/n`` with 1 <= i <= n.
    """
    if text is None:
        return 1, 1, 0, total
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected i/n, e.g. 1/4") from None
    if not 1 <= i <= n:
        raise UserError(f"--shard {text!r}: need 1 <= i <= n")
    return i, n, (i - 1) * total // n, i * total // n


def columns_for(class_names: list[str], topk: int | None, probs: bool) -> list[str]:
    """Partial-file columns: ``image_id, label[, label_i, prob_i ...][, <class> ...], confidence, error``.

    Raises:
        UserError: ``topk`` larger than the number of classes, or a class name clashing with a column.
    """
    cols = ["image_id", "label"]
    if topk:
        if topk > len(class_names):
            raise UserError(f"--topk {topk} exceeds the model's {len(class_names)} classes")
        cols += [c for k in range(1, topk + 1) for c in (f"label_{k}", f"prob_{k}")]
    if probs:
        clash = set(class_names) & {*cols, "confidence", "error"}
        if clash:
            raise UserError(f"class name {sorted(clash)[0]!r} clashes with an output column; use --topk instead")
        cols += list(class_names)
    return [*cols, "confidence", "error"]


def batch_rows(ids: list[str], batch, logits: np.ndarray | None, class_names: list[str], columns: list[str],
               topk: int | None) -> pd.DataFrame:  # fmt: skip
    """Rows (in input order) for one :class:`runtime.pipeline.Batch`: predictions and error rows."""
    rows: dict[int, dict] = {}
    if logits is not None:
        prob = softmax(logits)
        order = np.argsort(-prob, axis=1, kind="stable")
        names = np.asarray(class_names, dtype=object)
        for j, pos in enumerate(batch.ok):
            row = {
                "image_id": ids[pos],
                "label": names[order[j, 0]],
                "confidence": float(prob[j, order[j, 0]]),
                "error": "",
            }
            for k in range(topk or 0):
                row[f"label_{k + 1}"] = names[order[j, k]]
                row[f"prob_{k + 1}"] = float(prob[j, order[j, k]])
            if class_names[0] in columns:
                row.update(zip(class_names, map(float, prob[j]), strict=True))
            rows[pos] = row
    for pos, reason in batch.errors:
        rows[pos] = {"image_id": ids[pos], "label": "", "error": reason}
    return pd.DataFrame([rows[p] for p in sorted(rows)], columns=columns)


def ensemble_members(args: Any) -> list[dict[str, Any]]:
    """Members ``{model, engine, precision, weight}`` from ``--ensemble`` YAML or repeated ``--model``.

    Raises:
        UserError: no model, a bad member entry or weight.
    """
    if args.ensemble and (args.model or getattr(args, "folds", False)):
        raise UserError("--ensemble lists its own models: give it alone, or --model (with --folds) instead")
    if args.ensemble:
        from runtime.config import read_yaml

        spec = read_yaml(args.ensemble)
        members = spec.get("members")
        if not isinstance(members, list) or not members:
            raise UserError(f"{args.ensemble}: expected 'members:' with a list of {{model, engine, precision, weight}}")
        out = []
        for i, m in enumerate(members):
            keys = "keys: model, engine, precision, weight"
            if not isinstance(m, dict):
                raise UserError(f"{args.ensemble}: member {i + 1} is not a mapping ({keys})")
            unknown = sorted(set(m) - {"model", "engine", "precision", "weight"})
            if unknown:
                raise UserError(f"{args.ensemble}: member {i + 1} has unknown key {unknown[0]!r} ({keys})")
            if "model" not in m:
                raise UserError(f"{args.ensemble}: member {i + 1} needs 'model' ({keys})")
            weight = m.get("weight", 1.0)
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
                raise UserError(f"{args.ensemble}: member {i + 1} weight must be a number > 0, not {weight!r}")
            out.append({"model": str(m["model"]), "engine": m.get("engine", args.engine),
                        "precision": m.get("precision", args.precision), "weight": float(weight)})  # fmt: skip
        return out
    if not args.model:
        raise UserError("give --model (or --ensemble)")
    models = [m for folder in args.model for m in fold_models(folder)] if getattr(args, "folds", False) else args.model
    return [{"model": m, "engine": args.engine, "precision": args.precision, "weight": 1.0} for m in models]


def fold_models(folder: str) -> list[str]:
    """The k-fold models of a model folder (``make train FOLDS=k``), in fold order (see
    :func:`runtime.artifacts.fold_dirs`).

    Raises:
        UserError: no finished k-fold run there.
    """
    return [str(p) for p in fold_dirs(folder)]


def run_ensemble(
    members: list[dict[str, Any]], items: list, args: Any, tta: str, loader: Any
) -> tuple[Any, np.ndarray, list[str], dict[str, Any]]:
    """Weighted mean probabilities of every member over ``items``: returns (a :class:`Batch` covering every
    item, log-probabilities (n_ok, K), class names, what ran). Each member decodes with its own preprocessing
    (input sizes may differ).

    Raises:
        UserError: members with different class lists (names the difference).
    """
    from runtime.pipeline import Batch

    total, class_names, ok, errors, described = None, None, None, None, []
    for m in members:
        with create_engine(m["engine"], m["model"], device=args.device, threads=args.threads,
                           precision=m["precision"]) as engine:  # fmt: skip
            names = engine.meta.class_names
            if class_names is not None and names != class_names:
                diff = sorted(set(names) ^ set(class_names)) or ["(same names, other order)"]
                raise UserError(f"ensemble member {m['model']} has other classes than the first: {diff[:3]}")
            class_names = names
            described.append(engine.describe())
            probs = np.zeros((len(items), len(names)))
            member_ok, member_errors = [], []
            for batch in stream_batches(items, engine.meta, args.batch_size, args.workers,
                                        skip_errors=args.on_error == "skip", loader=loader):  # fmt: skip
                if batch.array is not None:
                    p = tta_probs(engine, batch.array, tta) if tta != "none" else softmax(engine.run(batch.array))
                    probs[batch.ok] = p
                member_ok += batch.ok
                member_errors += batch.errors
        total = m["weight"] * probs if total is None else total + m["weight"] * probs
        ok, errors = member_ok, member_errors
    mean = total / sum(m["weight"] for m in members)
    info = describe_members(described)
    return Batch(0, len(items), ok, None, errors), np.log(np.maximum(mean[ok], 1e-30)), class_names, info


def _predict_one(
    member: dict[str, Any],
    items: list,
    ids: list[str],
    out: Path,
    args: Any,
    tta: str,
    loader: Any,
    options: dict[str, Any],
    start: int,
    end: int,
) -> tuple[float, int, dict[str, Any]]:
    """Stream rows[start:end] of one model into the partial file (resuming it if asked); returns (seconds,
    first row predicted, what ran)."""
    with create_engine(
        member["engine"],
        member["model"],
        device=args.device,
        threads=args.threads,
        precision=member["precision"],
        options=options,
    ) as engine:
        meta = engine.meta
        columns = columns_for(meta.class_names, args.topk, args.probs)
        partial = PartialOutput(out, columns)
        signature = {"artifact": str(Path(engine.artifact).resolve()), "checkpoint": meta.checkpoint_sha256,
                     "precision": meta.export.get("precision", "fp32"), "engine": engine.name, "tta": tta,
                     "inputs": hashlib.sha256("\n".join(ids).encode()).hexdigest(), "rows": [start, end]}  # fmt: skip
        begin = start + partial.open(args.resume, signature)
        if meta.export.get("verification", {}).get("passed") is False:
            print(f"warning: {engine.artifact} failed its verification gate (exported with --allow-degraded)",
                  file=sys.stderr)  # fmt: skip
        t0 = time.perf_counter()
        bar = tqdm(
            total=end - start,
            initial=begin - start,
            desc="predict",
            unit="img",
            disable=None if not args.no_progress else True,
        )
        try:
            for batch in stream_batches(
                items[begin:end],
                meta,
                args.batch_size,
                args.workers,
                skip_errors=args.on_error == "skip",
                offset=begin,
                loader=loader,
            ):
                logits = None
                if batch.array is not None:  # with TTA: log of the mean probabilities (softmax gives them back)
                    logits = engine.run(batch.array) if tta == "none" else np.log(tta_probs(engine, batch.array, tta))
                partial.append(batch_rows(ids, batch, logits, meta.class_names, columns, args.topk))
                bar.update(batch.count)
        except UserError:
            partial.close()
            partial.discard()  # a clean failure (--on-error fail) leaves no partial file behind
            raise
        finally:
            bar.close()
            partial.close()
        return time.perf_counter() - t0, begin, {**engine.describe(), "signature": signature}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    tta = check_mode(args.tta)
    loader = five_crop_views if tta == "five-crop" else preprocess_image
    members = ensemble_members(args)
    ids, image_dir = load_inputs(args)
    shard, n_shards, start, end = parse_shard(args.shard, len(ids))
    items = resolve_ids(image_dir, ids)
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"{out}: is a folder; --out needs a file name")
    inputs = [Path(args.data or ".") / (args.csv or "test.csv")] if (args.data or args.csv) else []
    if any(p.exists() and out.exists() and os.path.samefile(p, out) for p in inputs):
        raise UserError(f"{out}: is the input CSV; write predictions to another file")
    options = parse_overrides(args.option)
    if len(members) > 1:
        if args.resume or args.shard:
            raise UserError("--resume and --shard work with one model, not an ensemble")
        t0 = time.perf_counter()
        batch, logits, class_names, info = run_ensemble(members, items, args, tta, loader)
        columns = columns_for(class_names, args.topk, args.probs)
        partial = PartialOutput(out, columns)
        partial.open(False)
        partial.append(batch_rows(ids, batch, logits, class_names, columns, args.topk))
        partial.close()
        seconds, begin = time.perf_counter() - t0, start
    else:
        seconds, begin, info = _predict_one(members[0], items, ids, out, args, tta, loader, options, start, end)
    if args.visualize:
        chunks = [c.loc[c["error"] == "", ["image_id", "label", "confidence"]] for c in read_partial(partial_path(out))]
        write_gallery(args.visualize, pd.concat(chunks, ignore_index=True), image_dir)
    n_ok, n_err = finalize(out, args.format)
    if n_shards > 1:
        sig = {k: v for k, v in info.get("signature", {}).items() if k != "rows"}
        sidecar = {"shard": shard, "of": n_shards, "start": start, "end": end, "total": len(ids), "format": args.format,
                   "rows_written": n_ok, "rows_skipped": n_err, "run": sig}  # fmt: skip
        write_text(f"{out}.shard.json", json.dumps(sidecar) + "\n")
    rate = (end - begin) / seconds if seconds > 0 else float("nan")
    skipped = f", {n_err} skipped (listed in {errors_path(out)})" if n_err else ""
    engine = info["engine"] if len(members) > 1 else f"{info['engine']} {info['precision']}"  # ensembles name both
    tta_note = f", TTA {args.tta}" if args.tta != "none" else ""
    print(
        f"{out}: {n_ok} rows{skipped} | engine {engine} ({info['provider']}, {info['device']}{tta_note}) | "
        f"{rate:.1f} img/s end-to-end",
        file=sys.stderr,
    )
    return EXIT_SKIPPED if n_err else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
