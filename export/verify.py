"""Verification of exported artifacts against the FP32 torch checkpoint on real, labelled images.

Every artifact's logits are compared with the checkpoint's on the same preprocessed batches: top-1 agreement,
max absolute difference and cosine of logits, and micro-F1 of both. Gates: an FP32 artifact must agree on
>= 99.9% of images; a reduced-precision one (FP16, INT8) must keep >= 99% of the FP32 micro-F1 (MLPerf's
accuracy rule for low-precision results). ``python -m export.verify --model <m>`` (``make verify``) re-checks
every artifact present and exits with status 2 if any fails. It also records the fast-vs-exact decode check
(:func:`check_decode`; a failure there only keeps ``--decode auto`` exact).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from export.config import add_common_args, config_from_args
from runtime.artifacts import ARTIFACT_FILES, CROSS_READS, VERIFY_RECORD, record_key
from runtime.atomic import write_text
from runtime.dataset import labelled_indices
from runtime.decode import DECODE_RECORD_KEY, loader_for
from runtime.engines import engine_class
from runtime.engines.base import Engine
from runtime.errors import ArgumentParser, UserError, description, one_line, run_cli
from runtime.metrics import f1_gate_text, f1_micro_macro, f1_ratio, passes_f1_gate
from runtime.pipeline import iter_batches
from runtime.preprocess import preprocess_image


@dataclasses.dataclass
class Gates:
    """Acceptance thresholds: ``min_agreement`` (FP32 top-1 agreement), ``min_f1_ratio`` (reduced precision
    micro-F1 as a fraction of the FP32 checkpoint's)."""

    min_agreement: float = 0.999
    min_f1_ratio: float = 0.99


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Agreement of two logit arrays of shape (N, K).

    Returns:
        ``top1_agreement`` (fraction of rows with the same argmax), ``max_abs_diff``, ``cosine_mean`` and
        ``cosine_min`` (row-wise cosine similarity).

    Raises:
        ValueError: the shapes differ.
    """
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = np.sum(ref * cand, axis=1) / np.maximum(norms, 1e-12)
    return {
        "top1_agreement": float(np.mean(ref.argmax(1) == cand.argmax(1))),
        "max_abs_diff": float(np.max(np.abs(ref - cand))),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
    }


def collect_logits(
    engine: Engine, paths: Sequence[str | os.PathLike], batch_size: int = 32, loader: Callable | None = None
) -> np.ndarray:
    """Logits (N, K) of ``engine`` on ``paths``, preprocessed with the engine's own metadata (by ``loader``,
    ``(path, meta) -> (3, H, W)``; default the exact eval transform)."""
    batches = iter_batches(paths, engine.meta, batch_size, loader=loader or preprocess_image)
    return np.concatenate([engine.run(batch) for batch in batches])


def engine_logits(
    engine_name: str, artifact: Path, paths: list[Path], batch_size: int, threads: int | None
) -> np.ndarray:
    """Logits (N, K) of ``artifact`` run by ``engine_name`` on ``paths`` (picklable: also runs in a child)."""
    with engine_class(engine_name)(artifact, threads=threads) as engine:
        return collect_logits(engine, paths, batch_size)


def logits_in_child(
    engine_name: str, artifact: Path, paths: list[Path], batch_size: int, threads: int | None
) -> np.ndarray:
    """:func:`engine_logits` in a spawned child process, so that a crash of a native library (OpenVINO reading
    the INT8 QDQ file of swin_base segfaulted) cannot take the calling process down.

    Raises:
        UserError: the child process died.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(engine_logits, engine_name, artifact, paths, batch_size, threads).result()
        except BrokenProcessPool:
            raise UserError(f"{engine_name} crashed reading {artifact.name} (its process died)") from None


def judge(
    reference: np.ndarray, candidate: np.ndarray, targets: Sequence[int], precision: str, gates: Gates
) -> dict[str, Any]:
    """Compare ``candidate`` logits with the FP32 ``reference`` and apply the gate for ``precision``.

    Returns:
        :func:`compare_logits`'s keys plus ``images``, ``precision``, ``reference_f1_micro``,
        ``candidate_f1_micro`` (micro-F1 equals accuracy for single-label data), ``f1_delta``, ``gate`` (text)
        and ``passed``.
    """
    y, k = np.asarray(targets), reference.shape[1]
    ref_f1 = f1_micro_macro(y, reference.argmax(1), k)[0]
    cand_f1 = f1_micro_macro(y, candidate.argmax(1), k)[0]
    result: dict[str, Any] = {"images": len(y), "precision": precision, **compare_logits(reference, candidate)}
    result.update(reference_f1_micro=ref_f1, candidate_f1_micro=cand_f1, f1_delta=cand_f1 - ref_f1)
    if precision == "fp32":
        result["gate"] = f"top-1 agreement >= {gates.min_agreement:.2%}"
        result["passed"] = result["top1_agreement"] >= gates.min_agreement
    else:
        result["gate"] = f1_gate_text(ref_f1, gates.min_f1_ratio)
        result["passed"] = passes_f1_gate(cand_f1, ref_f1, gates.min_f1_ratio)
    return result


def summary_line(name: str, result: dict[str, Any]) -> str:
    """One line describing a verification result."""
    verdict = "PASS" if result["passed"] else "FAIL"
    return (
        f"{verdict} {name} ({result['precision']}): top-1 agreement {result['top1_agreement']:.2%}, "
        f"max |dlogit| {result['max_abs_diff']:.2e}, micro-F1 {result['candidate_f1_micro']:.4f} vs "
        f"{result['reference_f1_micro']:.4f} FP32 on {result['images']} images [{result['gate']}]"
    )


def update_record(model_dir: Path, results: dict[str, dict[str, Any]], replace: bool = False) -> Path:
    """Merge ``results`` (artifact key -> result) into ``<model_dir>/verify.json`` (or, with ``replace``, write
    only them: every installed artifact was just checked, so entries of removed files go), atomically."""
    path = model_dir / VERIFY_RECORD
    record: dict[str, Any] = {}
    if path.is_file() and not replace:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            record = {}
    record.update(results)
    write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def installed_artifacts(model_dir: Path) -> list[tuple[str, str, str]]:
    """(relative file, engine, precision) for every exported artifact x engine that reads it in ``model_dir``
    (its own engine, and the :data:`runtime.artifacts.CROSS_READS`)."""
    pairs = [(rel, e, p) for (e, p), rel in ARTIFACT_FILES.items() if e != "torch"] + CROSS_READS
    return [(rel, engine, precision) for rel, engine, precision in pairs if (model_dir / rel).is_file()]


@dataclasses.dataclass
class Reference:
    """The FP32 checkpoint's view of the verification set: image ``paths``, their class indices ``targets`` and
    the checkpoint's float32 (N, K) ``logits``."""

    paths: list[Path]
    targets: list[int]
    logits: np.ndarray

    @classmethod
    def of(cls, engine: Engine, paths: list[Path], targets: list[int], batch_size: int) -> Reference:
        """The reference logits of ``engine`` (the FP32 checkpoint) on ``paths``."""
        return cls(paths, targets, collect_logits(engine, paths, batch_size))


@dataclasses.dataclass
class Verifier:
    """Checks artifacts against a :class:`Reference` (the one verification loop of ``export`` and
    ``export.verify``): ``batch_size`` images per forward pass, ``threads`` intra-op threads."""

    reference: Reference
    gates: Gates
    batch_size: int = 32
    threads: int | None = None

    def check(
        self, artifact: Path, engine_name: str, precision: str, key: str, isolated: bool = False
    ) -> dict[str, Any]:
        """Run ``artifact`` with ``engine_name`` on the reference images (in a child process with ``isolated``,
        :func:`logits_in_child`), apply the gate of ``precision`` and print the result line; returns
        :func:`judge`'s dict.

        Raises:
            UserError: the engine cannot open or run the artifact, or its isolated process died.
        """
        run = logits_in_child if isolated else engine_logits
        logits = run(engine_name, artifact, self.reference.paths, self.batch_size, self.threads)
        result = judge(self.reference.logits, logits, self.reference.targets, precision, self.gates)
        print(summary_line(key, result), file=sys.stderr)
        return result


#: the fast-vs-exact decode gate: top-1 agreement and the fraction of the exact path's micro-F1 to keep
DECODE_MIN_AGREEMENT = 0.995
DECODE_MIN_F1_RATIO = 0.995


def check_decode(engine: Engine, reference: Reference, batch_size: int = 32) -> dict[str, Any]:
    """The fast-vs-exact decode check (may ``--decode auto`` decode fast for this model?): run ``engine`` (the FP32
    checkpoint that made ``reference``, decoded the exact way, what training validated on) on the reference images
    decoded the fast way (:func:`runtime.decode.fast_preprocess`),
    print one result line and return the record: ``images``, ``top1_agreement``, ``max_abs_diff``,
    ``cosine_mean``/``cosine_min`` (of logits), ``exact_f1_micro``, ``fast_f1_micro``, ``f1_ratio``, ``gate``,
    ``passed``; or ``passed: false`` with ``error`` when the fast path cannot run (its libraries missing). The record
    goes into ``verify.json`` under :data:`runtime.decode.DECODE_RECORD_KEY`."""
    gate = f"top-1 agreement >= {DECODE_MIN_AGREEMENT:.1%}, micro-F1 >= {DECODE_MIN_F1_RATIO:.1%} of the exact path's"
    try:
        logits = collect_logits(engine, reference.paths, batch_size, loader=loader_for("fast"))
    except UserError as exc:
        print(f"SKIP {DECODE_RECORD_KEY}: {one_line(exc)}", file=sys.stderr)
        return {"passed": False, "error": one_line(exc), "gate": gate}
    y, k = np.asarray(reference.targets), reference.logits.shape[1]
    exact_f1 = f1_micro_macro(y, reference.logits.argmax(1), k)[0]
    fast_f1 = f1_micro_macro(y, logits.argmax(1), k)[0]
    result: dict[str, Any] = {"images": len(reference.paths), **compare_logits(reference.logits, logits)}
    ratio = f1_ratio(fast_f1, exact_f1)
    result.update(exact_f1_micro=exact_f1, fast_f1_micro=fast_f1, f1_ratio=ratio, gate=gate)
    result["passed"] = bool(result["top1_agreement"] >= DECODE_MIN_AGREEMENT and ratio >= DECODE_MIN_F1_RATIO)
    print(f"{'PASS' if result['passed'] else 'FAIL'} {DECODE_RECORD_KEY}: top-1 agreement "
          f"{result['top1_agreement']:.2%}, micro-F1 {fast_f1:.4f} vs {exact_f1:.4f} exact ({ratio:.2%}) on "
          f"{result['images']} images [{gate}]{'' if result['passed'] else '; --decode auto stays exact'}",
          file=sys.stderr)  # fmt: skip
    return result


def planned_batch(reference: Engine, fp32_onnx: Path, budget_gib: float, max_batch: int) -> int:
    """The verification batch that fits ``budget_gib`` (``export.budget``), from ``fp32_onnx`` when present."""
    from export.budget import activation_size, available_bytes, plan_memory

    if not fp32_onnx.is_file():
        return max_batch
    params = sum(p.numel() * p.element_size() for p in reference.model.parameters())  # type: ignore[attr-defined]
    plan = plan_memory(params, activation_size(fp32_onnx), budget_gib, max_batch, 1, available=available_bytes())
    return plan.batch_size


def main(argv: list[str] | None = None) -> int:
    """``python -m export.verify``: re-verify every artifact of a model; exit 2 if any fails its gate."""
    from runtime.engines.pytorch import TorchEngine

    p = ArgumentParser(prog="python -m export.verify", description=description(__doc__))
    add_common_args(p)
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    model_dir = Path(cfg.artifacts) / args.model
    checkpoint = model_dir / "best.pt"
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: not found; run `make train MODEL={args.model}` first")
    with TorchEngine(checkpoint, threads=cfg.threads) as torch_engine:
        paths, targets = labelled_indices(cfg.data, cfg.verify_csv, torch_engine.meta.class_names, cfg.verify_images)
        batch = planned_batch(torch_engine, model_dir / "model.onnx", cfg.memory_budget_gib, cfg.batch_size)
        reference = Reference.of(torch_engine, paths, targets, batch)
        decode_result = check_decode(torch_engine, reference, batch)
    verifier = Verifier(reference, Gates(cfg.min_agreement, cfg.min_f1_ratio), batch, cfg.threads)
    results, failed = {}, []
    for rel, engine_name, precision in installed_artifacts(model_dir):
        key = record_key(rel, engine_name)
        try:
            results[key] = verifier.check(model_dir / rel, engine_name, precision, key, isolated=key != rel)
        except UserError as exc:  # a broken or foreign file fails its check
            results[key] = {"precision": precision, "passed": False, "error": one_line(exc)}
            print(f"FAIL {key}: {one_line(exc)}", file=sys.stderr)
        if not results[key]["passed"]:
            if key == rel:
                failed.append(key)
            else:
                print(f"WARN {key}: fails with {engine_name} (recorded)", file=sys.stderr)
    if not results:
        raise UserError(f"{model_dir}: no exported artifact to verify; run `make export MODEL={args.model}`")
    update_record(model_dir, {**results, DECODE_RECORD_KEY: decode_result}, replace=True)
    if failed:
        raise UserError(f"{', '.join(failed)} failed verification (details in {model_dir / VERIFY_RECORD})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
