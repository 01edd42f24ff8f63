"""GPU verification kit (``make gpu-check``, ``python -m bench.gpucheck``): one short run on a CUDA machine that
proves the project's GPU paths and writes one summary of what passed, failed or was skipped (and why).

Pieces: :mod:`~bench.gpucheck.settings` (what runs, sizes, gates), :mod:`~bench.gpucheck.data` (``make gpu-data``:
the small image set, the Lite0 weights and the CPU reference F1, prepared on the CPU machine),
:mod:`~bench.gpucheck.summary` (summary.json / summary.md), :mod:`~bench.gpucheck.proc` (subprocesses under a
deadline), :mod:`~bench.gpucheck.checks` (the shared context, a check, the loop), :mod:`~bench.gpucheck.skips`
(the skip reasons known before running), :mod:`~bench.gpucheck.plan` (the checks in running order),
:mod:`~bench.gpucheck.training`, :mod:`~bench.gpucheck.launch`, :mod:`~bench.gpucheck.prediction`,
:mod:`~bench.gpucheck.gpubench` (the checks themselves), :mod:`~bench.gpucheck.device_probe`,
:mod:`~bench.gpucheck.nccl_probe` and :mod:`~bench.gpucheck.throughput` (small programs run on the GPU), and
:mod:`~bench.gpucheck.cli` (the entry point).
"""
