"""``python -m train``: see :mod:`train.cli`."""

from runtime.errors import run_module_main

run_module_main("train.cli", "train")
