"""``python -m bench``: see :mod:`bench.run`."""

import sys

from bench.run import main
from runtime.errors import run_cli

sys.exit(run_cli(main))
