"""``python -m train``: see :mod:`train.train`."""

from runtime.errors import run_module_main

run_module_main("train.train", "train")
