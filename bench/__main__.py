"""``python -m bench``: see :mod:`bench.run`."""

from runtime.errors import run_module_main

run_module_main("bench.run", "train,cpu,bench")
