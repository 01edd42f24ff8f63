"""``python -m runtime.merge --out submission.csv part1.csv part2.csv ...``: join the outputs of
``runtime.predict --shard i/n`` runs into the file one unsharded run would have written.

Each shard output has a ``<file>.shard.json`` sidecar (shard number, row range, total, format); the merge checks
that the shards are all there, cover the input once and share a format, then concatenates them (and their
``.errors.csv`` lists) in shard order, atomically.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pandas as pd

from runtime.atomic import atomic_path
from runtime.errors import ArgumentParser, UserError, description, run_cli
from runtime.outputs import FORMATS, errors_path


def read_sidecar(path: Path) -> dict:
    """The shard sidecar of an output file.

    Raises:
        UserError: missing or not JSON.
    """
    sidecar = Path(f"{path}.shard.json")
    if not sidecar.is_file():
        raise UserError(f"{sidecar}: not found; {path} is not the output of a --shard run")
    try:
        return json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(f"{sidecar}: not valid JSON") from None


def merge(parts: list[Path], out: Path) -> int:
    """Merge shard outputs into ``out``; returns the number of rows.

    Raises:
        UserError: a missing, duplicated or overlapping shard, or mixed formats/totals.
    """
    resolved_out = out.resolve()
    if any(p.resolve() == resolved_out for p in parts):
        raise UserError(f"{out}: is one of the shard files; write the merge to another file")
    infos = sorted(((read_sidecar(p), p) for p in parts), key=lambda x: x[0]["shard"])
    counts = {i["of"] for i, _ in infos}
    if len(counts) != 1:
        raise UserError(f"shards come from splits into different numbers of parts: {sorted(counts)}")
    n = counts.pop()
    if [i["shard"] for i, _ in infos] != list(range(1, n + 1)):
        raise UserError(f"need exactly shards 1..{n} once each, got {[i['shard'] for i, _ in infos]}")
    if len({(i["total"], i["format"], json.dumps(i.get("run"), sort_keys=True)) for i, _ in infos}) != 1:
        raise UserError("shards come from different inputs, formats, models, engines or precisions")
    if any(a["end"] != b["start"] for (a, _), (b, _) in itertools.pairwise(infos)):
        raise UserError("shard row ranges do not join up")
    fmt = infos[0][0]["format"]
    if out.suffix.lower().lstrip(".") in FORMATS and out.suffix.lower().lstrip(".") != fmt:
        raise UserError(f"{out}: the shards are {fmt}; give --out a .{fmt} name")
    for info, part in infos:
        rows = _count_rows(part, fmt)
        if rows != info.get("rows_written", rows):
            raise UserError(f"{part}: has {rows} rows but its sidecar says {info['rows_written']}; redo that shard")
    rows = 0
    with atomic_path(out, suffix=f".{fmt}") as tmp:
        if fmt == "parquet":
            merged = pd.concat([pd.read_parquet(p) for _, p in infos], ignore_index=True)
            merged.to_parquet(tmp, index=False)
            rows = len(merged)
        else:  # text formats: byte-for-byte concatenation (one CSV header), identical to an unsharded run
            with open(tmp, "wb") as dst:
                for k, (_, part) in enumerate(infos):
                    lines = part.read_bytes().splitlines(keepends=True)
                    body = lines[1:] if fmt == "csv" and k > 0 else lines
                    dst.writelines(body)
                    rows += len(lines) - (1 if fmt == "csv" else 0)
    errors = [
        pd.read_csv(errors_path(p), dtype=str, keep_default_na=False) for _, p in infos if errors_path(p).is_file()
    ]
    if errors:
        with atomic_path(errors_path(out), suffix=".csv") as tmp:
            pd.concat(errors, ignore_index=True).to_csv(tmp, index=False)
    return rows


def _count_rows(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        return len(pd.read_parquet(path))
    lines = path.read_bytes().count(b"\n")
    return lines - 1 if fmt == "csv" else lines


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m runtime.merge``."""
    p = ArgumentParser(prog="python -m runtime.merge", description=description(__doc__))
    p.add_argument("parts", nargs="+", help="outputs of the --shard runs")
    p.add_argument("--out", required=True, help="merged output file")
    args = p.parse_args(argv)
    parts = [Path(x) for x in args.parts]
    for part in parts:
        if not part.is_file():
            raise UserError(f"{part}: shard output not found")
    rows = merge(parts, Path(args.out))
    print(f"{args.out}: {rows} rows from {len(parts)} shards", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
