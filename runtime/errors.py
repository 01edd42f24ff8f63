"""One-line user-facing errors and the CLI wrapper that prints them without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input (file, config, CSV, image, artifact).

    The message is one line that names the offending file or key and, where possible, what to do.
    Entry points catch it through :func:`run_cli` and exit with status 2 instead of printing a traceback.
    """


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line.

    Exceptions re-raised from torch DataLoader workers carry the worker's whole traceback; their last line is
    ``module.Class: message``, of which only ``message`` is kept.
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) == 1:
        return lines[0]
    last = lines[-1]
    head, sep, rest = last.partition(": ")
    return rest if sep and head.replace(".", "").replace("_", "").isalnum() else last


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)`` and turn :class:`UserError` into ``error: <message>`` on stderr, exit code 2.

    Returns the process exit code (``main``'s return value, 0 when it returns ``None``).
    KeyboardInterrupt exits with 130. Any other exception propagates (a bug: the traceback is wanted).
    """
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
