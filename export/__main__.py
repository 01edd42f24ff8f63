"""``python -m export``: see :mod:`export.export`."""

from runtime.errors import run_module_main

run_module_main("export.export", "train,cpu")
