"""``python -m bench.gpucheck`` (``make gpu-check``): prove the project's CUDA paths on a GPU machine in one short
run and write one summary of every check: passed, failed, or skipped with its reason.

Needs a CUDA GPU (without one it stops at once with one line; ``--plan`` lists what it would run anywhere), the
project on ``PYTHONPATH`` and the data folder of ``make gpu-data`` (prepared on the CPU machine). Installs nothing.
Writes ``summary.json``, ``summary.md`` and ``steps.log`` (every command and the tail of its output), plus the
bench reports, into ``--out``; the summary is rewritten after every check. Exit status: 0 nothing failed, 1 a check
failed, 2 bad input or no GPU.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.gpucheck import settings
from runtime.errors import ArgumentParser, UserError, description, run_cli

if TYPE_CHECKING:
    from bench.gpucheck.checks import Check, Kit


def gpu_line() -> str | None:
    """None when torch sees a CUDA GPU, else the one-line reason the kit cannot run here."""
    try:
        import torch
    except ImportError:
        return "the GPU check needs torch (with CUDA): pip install '.[train]'"
    if torch.cuda.is_available():
        return None
    return (
        f"no CUDA GPU: torch {torch.__version__} sees none here; `make gpu-check` runs on a GPU machine "
        "(`python -m bench.gpucheck --plan` lists what it would run)"
    )


def load_manifest(data: Path) -> dict[str, Any] | None:
    """``<data>/manifest.json`` of ``make gpu-data``, or None when the folder was not prepared (or is incomplete).

    Raises:
        UserError: the manifest is not valid JSON.
    """
    from train.prepare_elpv import is_complete

    path = data / "manifest.json"
    if not path.is_file() or not is_complete(data / "elpv"):
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path}: not valid JSON; run `make gpu-data` again") from None


def make_kit(args: Any) -> Kit:
    """The :class:`bench.gpucheck.checks.Kit` of this run (deadline = now + ``--budget``; a run starts a new
    ``steps.log``).

    Raises:
        UserError: ``--out`` is a file, or ``--budget`` is not positive.
    """
    from bench.gpucheck.checks import Kit
    from bench.gpucheck.proc import Runner

    out = Path(args.out or f"reports/gpucheck/{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: not a folder")
    if args.budget <= 0:
        raise UserError(f"--budget {args.budget}: must be > 0 seconds")
    if not args.plan:
        (out / "steps.log").unlink(missing_ok=True)
    if args.work:
        work = Path(args.work)
    else:  # a plan runs nothing: no scratch folder
        work = (
            Path(tempfile.gettempdir()) / "gpucheck-<new>" if args.plan else Path(tempfile.mkdtemp(prefix="gpucheck-"))
        )
    runner = Runner(out / "steps.log", time.monotonic() + args.budget)
    return Kit(runner, Path(args.data), work, out, load_manifest(Path(args.data)), Path(args.models_dir))


def selected(only: str | None) -> list[Check]:
    """Every check, or those named in ``--only`` (comma-separated).

    Raises:
        UserError: an unknown name (lists the known ones).
    """
    from bench.gpucheck.plan import all_checks

    checks = all_checks()
    if not only:
        return checks
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = sorted(set(names) - {c.name for c in checks})
    if unknown:
        raise UserError(f"--only: unknown check {unknown[0]!r} (known: {', '.join(c.name for c in checks)})")
    return [c for c in checks if c.name in names]


def print_plan(kit: Kit, checks: list[Check]) -> None:
    """What a run would do: one line per check with the skip reason that is already known (needs are not
    evaluated: a check whose need fails is skipped at run time)."""
    data = kit.manifest
    state = f"{data['images']['total']} images, {data.get('size_mib')} MiB" if data else "not prepared"
    print(f"gpu-check plan: data {kit.data} ({state}), budget {kit.runner.remaining():.0f} s, {len(checks)} checks")
    for i, check in enumerate(checks, 1):
        reason = check.static(kit)
        needs = f" [needs {', '.join(check.needs)}]" if check.needs else ""
        print(f"{i:2d}. {check.name}: {check.what}{needs}" + (f"\n    -> skipped: {reason}" if reason else ""))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    p = ArgumentParser(prog="python -m bench.gpucheck", description=description(__doc__))
    p.add_argument("--out", help="summary folder (default: reports/gpucheck/<date-time>; on the device: $OUT)")
    p.add_argument("--data", default=str(settings.DATA_DIR), help=f"kit data (default: {settings.DATA_DIR})")
    p.add_argument("--work", help="scratch folder for checkpoints and logs (default: a new temporary folder)")
    p.add_argument(
        "--budget",
        type=float,
        default=settings.BUDGET_SECONDS,
        help="seconds after which no further check starts (default: %(default).0f)",
    )
    p.add_argument("--only", help="comma-separated check names (default: all)")
    p.add_argument("--plan", action="store_true", help="list the checks and known skip reasons; run nothing")
    p.add_argument("--models-dir", default=str(settings.MODELS_DIR), help="model configs (default: %(default)s)")
    args = p.parse_args(argv)
    if not args.plan:
        reason = gpu_line()
        if reason:
            raise UserError(reason)
    checks = selected(args.only)
    kit = make_kit(args)
    if args.plan:
        print_plan(kit, checks)
        return 0
    return run(kit, checks, keep_work=bool(args.work))


def run(kit: Kit, checks: list[Check], keep_work: bool) -> int:
    """Run the checks, write the summary, print the table; returns :func:`bench.gpucheck.summary.exit_code`."""
    from bench.environment import environment
    from bench.gpucheck.checks import run_checks
    from bench.gpucheck.summary import exit_code, markdown

    header = {
        "kit": "python -m bench.gpucheck",
        "environment": environment(),
        "data": str(kit.data),
        "data_created": (kit.manifest or {}).get("created"),
        "budget_s": round(kit.runner.remaining()),
    }
    print(f"gpu-check: {len(checks)} checks, budget {header['budget_s']:.0f} s, summary in {kit.out}", file=sys.stderr)
    try:
        results = run_checks(kit, checks, header)
    finally:
        if not keep_work:
            shutil.rmtree(kit.work, ignore_errors=True)
    print(markdown(results, {"gpu": header["environment"].get("gpu"), "summary": str(kit.out / "summary.json")}))
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(run_cli(main))
