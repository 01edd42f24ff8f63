"""``python -m bench.gpucheck``: see :mod:`bench.gpucheck.cli`."""

from runtime.errors import run_module_main

if __name__ == "__main__":
    run_module_main("bench.gpucheck.cli", "train")
