"""One-line user-facing errors, the argument parser and CLI wrapper that print them without a traceback."""

from __future__ import annotations

import argparse
import re
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

#: exit status of a prediction or feature run that skipped unreadable inputs (listed in its errors file)
EXIT_SKIPPED = 3


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


#: a line that only says where in a library's C++ sources an error was raised (OpenVINO's messages start so)
_SOURCE_LOCATION = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:)$")


def short_reason(exc: BaseException, limit: int = 140) -> str:
    """A library exception's message shortened to its first sentence (no cut mid-word), for ``(reason)`` parts
    of one-line errors. Falls back to the exception's type name."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # OpenVINO prefixes its reason with source locations ("Exception from src/...:84:", "Check '...' failed at")
    text = next((ln for ln in lines if not _SOURCE_LOCATION.match(ln)), lines[0] if lines else "")
    if not text:
        return type(exc).__name__
    if len(text) > limit:
        sentence = text.split(". ")[0]
        text = sentence if len(sentence) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."
    return text


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (``error: <prog>: <message>``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print one line and exit 2 (argparse's default prints the whole usage block first)."""
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def description(doc: str | None) -> str:
    """The first paragraph of a module docstring, for ``--help``."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    return re.sub(r":(?:mod|func|class|meth|data):`~?([^`]+)`", r"\1", text).replace("``", "")  # no Sphinx roles


def run_module_main(module: str, extra: str) -> NoReturn:
    """``__main__`` body of a package: import ``<module>.main`` and exit with :func:`run_cli`'s code.

    A missing optional dependency becomes one line naming the pip extra that provides it.
    """
    import importlib

    try:
        main = importlib.import_module(module).main
    except ModuleNotFoundError as exc:
        print(f"error: python -m {module.split('.')[0]} needs {exc.name!r}: pip install '.[{extra}]'", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_cli(main))


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)`` and turn bad input into ``error: <message>`` on stderr with exit code 2.

    Handles :class:`UserError` and ``OSError`` (a path that is a folder, a missing parent, no permission, a full
    disk): both are about the user's files, not bugs. KeyboardInterrupt exits with 130. Any other exception
    propagates (a bug: the traceback is wanted).
    """
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = exc.filename2 or exc.filename
        print(f"error: {where + ': ' if where else ''}{exc.strerror or short_reason(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # a second Ctrl-C would interrupt the clean-up at exit (library finalizers) with a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("error: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
