"""``python -m export``: see :mod:`export.cli`."""

from runtime.errors import run_module_main

run_module_main("export.cli", "train,cpu")
