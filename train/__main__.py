"""``python -m train``: see :mod:`train.train`."""

import sys

from runtime.errors import run_cli
from train.train import main

sys.exit(run_cli(main))
