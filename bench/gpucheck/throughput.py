"""``python -m bench.gpucheck.throughput``: engine-only img/s of the torch engine on CUDA at several batch sizes.

For each variant (FP32, float16 autocast, bfloat16 autocast; channels_last as the engine's default) it opens the
checkpoint through :class:`bench.worker.CellRunner` (the bench's own timing path: pre-decoded batch, warm-up,
median of the timed runs; each run ends with the logits copied to the host, so the GPU work is finished inside
the timing) and writes JSON: per variant and batch size img/s and p50 latency in ms, the best batch, and the
peak GPU memory torch reserved.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

VARIANTS = {"fp32": {}, "amp_float16": {"amp": "float16"}, "amp_bfloat16": {"amp": "bfloat16"}}


def measure(
    model: str, paths: list[Path], batches: list[int], seconds: float, options: dict, device: str = "cuda"
) -> dict[str, Any]:
    """img/s and p50 ms per batch size for one engine variant on ``device``, plus ``best_batch`` and the peak GPU
    memory torch reserved (None on the CPU)."""
    import torch

    from bench.measure import summarize
    from bench.worker import CellRunner
    from runtime.members import Member

    member = Member(model, "torch", None, options=options)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    runner = CellRunner([member], "none", device, None)
    try:
        rows = {}
        for bs in batches:
            runner.prepare(paths, bs)
            timed = runner.timed_runs(bs, seconds, warmup=3)
            stats = summarize([timed["intervals"]], bs, [timed["latencies"]])
            rows[str(bs)] = {"img_per_s": stats["img_per_s"], "p50_ms": stats["p50_ms"]}
        provider = runner.describe()["provider"]
    finally:
        runner.close()
    best = max(rows, key=lambda b: rows[b]["img_per_s"])
    return {
        "provider": provider,
        "batches": rows,
        "best_batch": int(best),
        "gpu_mem_reserved_mib": torch.cuda.max_memory_reserved() / 2**20 if cuda else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure every variant, write ``--out``."""
    p = argparse.ArgumentParser(prog="python -m bench.gpucheck.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder with best.pt")
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--batches", default="1,8,32,64,128,256", help="comma-separated batch sizes")
    p.add_argument("--seconds", type=float, default=0.5, help="timed seconds per batch size (after warm-up)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    p.add_argument("--device", default="cuda", help="cuda[:N] (cpu: for tests) (default: cuda)")
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    paths = sorted(Path(args.images).rglob("*.png"))
    if not paths:
        print(f"error: {args.images}: no .png images", file=sys.stderr)
        return 2
    batches = [int(b) for b in args.batches.split(",")]
    result = {
        name: measure(args.model, paths, batches, args.seconds, VARIANTS[name], args.device)
        for name in args.variants.split(",")
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: (v["best_batch"], round(v["batches"][str(v["best_batch"])]["img_per_s"])) for k, v in result.items()}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
