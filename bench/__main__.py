"""``python -m bench``: see :mod:`bench.run`."""

from runtime.errors import run_module_main

if __name__ == "__main__":  # the guard matters: bench cells run in spawned processes that re-import this module
    run_module_main("bench.run", "train,cpu,bench")
