"""bench.decode (the exact vs fast decode table) and the contest-like JPEG set of bench.contest_data."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bench.contest_data import generate
from bench.decode import main as decode_main
from runtime.errors import UserError, run_cli


def test_decode_table_rows(elpv_small: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_cli(decode_main, ["--elpv", str(elpv_small / "train"), "--images", "1", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "load average" in out and "one thread" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "ms/image" not in line]
    assert [r.split("|")[1].split("(")[0].strip() for r in rows] == [
        "ELPV 300x300 greyscale PNG -> 128", "500x375 RGB JPEG -> 224", "800x600 RGB JPEG -> 224",
        "1600x1200 RGB JPEG -> 224"]  # fmt: skip
    for row in rows:
        exact, fast, _, rate_exact, rate_fast = (c.strip() for c in row.split("|")[2:7])
        assert float(exact) > 0 and float(fast) > 0 and float(rate_exact) > 0 and float(rate_fast) > 0


def test_contest_set_photo_sizes(tmp_path: Path) -> None:
    out = generate(tmp_path / "photos", per_class=1, test_per_class=1, sizes=(300, 400))
    sizes = [Image.open(p).size for p in (out / "train").iterdir()]
    assert len(sizes) == 30 and all(300 <= s <= 400 for size in sizes for s in size)
    assert all(Image.open(p).mode == "RGB" for p in (out / "test").iterdir())
    with pytest.raises(UserError, match="MIN is larger"):
        from bench.contest_data import main

        main(["--out", str(tmp_path / "x"), "--sizes", "500", "300"])
