"""``python -m export``: see :mod:`export.export`."""

import sys

from export.export import main
from runtime.errors import run_cli

sys.exit(run_cli(main))
