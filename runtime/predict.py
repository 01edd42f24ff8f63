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

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from runtime.artifacts import PRECISIONS, failed_gate
from runtime.atomic import write_text
from runtime.config import parse_overrides
from runtime.cpu import has_int8_dot_product
from runtime.dataset import discover_inputs, resolve_ids
from runtime.decode import DECODE_CHOICES
from runtime.engines import ENGINE_NAMES
from runtime.errors import EXIT_SKIPPED, ArgumentParser, UserError, description, positive_int, run_cli
from runtime.members import Member, select_members
from runtime.outputs import FORMATS, PartialOutput, errors_path, finalize, partial_path, read_partial, write_gallery
from runtime.pipeline import Batch, DecodePlan
from runtime.predictor import Predictor
from runtime.tta import check_mode


def build_parser() -> ArgumentParser:
    """Command-line options of ``runtime.predict``."""
    p = ArgumentParser(prog="python -m runtime.predict", description=description(__doc__))
    p.add_argument("--engine", choices=ENGINE_NAMES, default="onnx", help="backend (default: onnx)")
    p.add_argument(
        "--model", action="append", help="artifact file or model folder (artifacts/<model>); repeat for an ensemble"
    )
    p.add_argument(
        "--ensemble", help="YAML: members: [{model, engine, precision, weight, options}] (probabilities averaged)"
    )
    p.add_argument("--folds", action="store_true", help="ensemble of every fold<k>/ model inside each --model folder")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
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
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="image-decoding threads (default: measured at start so decoding keeps up with the engine)",
    )
    p.add_argument(
        "--decode",
        choices=DECODE_CHOICES,
        default="auto",
        help="exact (Pillow, timm's transform), fast (simplejpeg DCT-scaled JPEG, OpenCV PNG, Pillow resize) or auto: "
        "fast where export.verify's decode check passed for the artifact (default: auto)",
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="engine option (YAML value): torch channels_last=false, compile=true; "
        "onnx provider_options={trt_fp16_enable: true}",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p  # fmt: skip


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


def batch_rows(ids: list[str], batch: Batch, prob: np.ndarray | None, class_names: list[str], columns: list[str],
               topk: int | None) -> pd.DataFrame:  # fmt: skip
    """Rows (in input order) for one :class:`runtime.pipeline.Batch` and its (len(ok), K) probabilities:
    predictions and error rows."""
    rows: dict[int, dict] = {}
    if prob is not None:
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


def _signature(predictor: Predictor, members: list[Member], ids: list[str], tta: str, options: dict[str, Any],
               rows: tuple[int, int]) -> dict[str, Any]:  # fmt: skip
    """What a resumed run must match: every member's artifact, checkpoint, precision, engine and weight, the
    TTA, the decode mode, the engine options, the inputs and the rows."""
    engines = predictor.engines
    return {"artifact": [str(Path(e.artifact).resolve()) for e in engines],
            "checkpoint": [e.meta.checkpoint_sha256 for e in engines],
            "precision": [e.meta.export.get("precision", "fp32") for e in engines],
            "engine": [e.name for e in engines], "weight": [m.weight for m in members], "tta": tta,
            "decode": predictor.decode_mode,
            "options": options, "inputs": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
            "rows": list(rows)}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RowOptions:
    """How :func:`write_rows` streams: images per forward pass, decoding threads (``None``: measured,
    :meth:`Predictor.plan_decode`), skip unreadable inputs (else stop), continue a partial file, extra columns
    (``topk`` labels, one probability per class), progress bar."""

    batch_size: int = 32
    workers: int | None = None
    skip_errors: bool = True
    resume: bool = False
    topk: int | None = None
    probs: bool = False
    progress: bool = True


def write_rows(predictor: Predictor, items: list, ids: list[str], out: Path, opts: RowOptions,
               signature: dict[str, Any], rows: range) -> tuple[float, int, DecodePlan]:  # fmt: skip
    """Stream the predictions of ``items[rows]`` into the partial file of ``out`` (continuing it with
    ``opts.resume``); returns (seconds, first row predicted, the decode plan used; seconds include planning).
    A clean failure (an unreadable input without
    ``skip_errors``) leaves no partial file behind.

    Raises:
        UserError: an unreadable input (without ``skip_errors``), or a partial file of another run on resume.
    """
    columns = columns_for(predictor.class_names, opts.topk, opts.probs)
    partial = PartialOutput(out, columns)
    begin = rows.start + partial.open(opts.resume, signature)
    for engine in predictor.engines:
        if failed_gate(engine.artifact, engine.name, engine.meta.export):
            print(f"warning: {engine.artifact} failed its verification gate with engine '{engine.name}' "
                  "(verify.json; exported with --allow-degraded or passed only with another engine)",
                  file=sys.stderr)  # fmt: skip
        if engine.meta.export.get("quantization", {}).get("overflow_fix") == "disable" and not has_int8_dot_product():
            print(f"warning: {engine.artifact} was quantized with full 8-bit weights for a CPU with VNNI/AMX; this "
                  "CPU has none, so its INT8 sums can saturate (re-export it here)", file=sys.stderr)  # fmt: skip
    t0 = time.perf_counter()
    bar = tqdm(total=len(rows), initial=begin - rows.start, desc="predict", unit="img",
               disable=None if opts.progress else True)  # fmt: skip
    todo = items[begin : rows.stop]
    plan = predictor.plan_decode(todo, opts.batch_size, opts.workers)
    try:
        for batch, probs in predictor.stream(todo, opts.batch_size, plan, skip_errors=opts.skip_errors,
                                             offset=begin):  # fmt: skip
            partial.append(batch_rows(ids, batch, probs, predictor.class_names, columns, opts.topk))
            bar.update(batch.count)
    except UserError:
        partial.close()
        partial.discard()
        raise
    finally:
        bar.close()
        partial.close()
    return time.perf_counter() - t0, begin, plan


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    tta = check_mode(args.tta)
    members = select_members(args.model, args.ensemble, args.engine, args.precision, args.folds)
    ids, image_dir = discover_inputs(args.data, args.csv, args.images)
    shard, n_shards, start, end = parse_shard(args.shard, len(ids))
    items = resolve_ids(image_dir, ids)
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"{out}: is a folder; --out needs a file name")
    inputs = [Path(args.data or ".") / (args.csv or "test.csv")] if (args.data or args.csv) else []
    if any(p.exists() and out.exists() and os.path.samefile(p, out) for p in inputs):
        raise UserError(f"{out}: is the input CSV; write predictions to another file")
    options = parse_overrides(args.option)
    with Predictor(members, tta, args.device, args.threads, options, args.decode) as predictor:
        signature = _signature(predictor, members, ids, tta, options, (start, end))
        opts = RowOptions(args.batch_size, args.workers, args.on_error == "skip", args.resume, args.topk, args.probs,
                          not args.no_progress)  # fmt: skip
        seconds, begin, plan = write_rows(predictor, items, ids, out, opts, signature, range(start, end))
        info = predictor.describe()
    if args.visualize:
        chunks = [c.loc[c["error"] == "", ["image_id", "label", "confidence"]] for c in read_partial(partial_path(out))]
        write_gallery(args.visualize, pd.concat(chunks, ignore_index=True), image_dir)
    n_ok, n_err = finalize(out, args.format)
    if n_shards > 1:
        sig = {k: v for k, v in signature.items() if k != "rows"}
        sidecar = {"shard": shard, "of": n_shards, "start": start, "end": end, "total": len(ids), "format": args.format,
                   "rows_written": n_ok, "rows_skipped": n_err, "run": sig}  # fmt: skip
        write_text(f"{out}.shard.json", json.dumps(sidecar) + "\n")
    rate = (end - begin) / seconds if seconds > 0 else float("nan")
    skipped = f", {n_err} skipped (listed in {errors_path(out)})" if n_err else ""
    engine = info["engine"] if len(members) > 1 else f"{info['engine']} {info['precision']}"  # ensembles name both
    tta_note = f", TTA {args.tta}" if args.tta != "none" else ""
    print(
        f"{out}: {n_ok} rows{skipped} | engine {engine} ({info['provider']}, {info['device']}{tta_note}) | "
        f"decode {info['decode']}, {plan.describe()} | "
        + (f"{rate:.1f} img/s end-to-end" if n_ok else "no image could be read"),
        file=sys.stderr,
    )
    return EXIT_SKIPPED if n_err else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
