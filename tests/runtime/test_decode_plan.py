"""Decoder threads follow the engine: runtime.pipeline.plan_workers and Predictor.plan_decode."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.cpu import usable_cpus
from runtime.errors import UserError
from runtime.members import Member
from runtime.pipeline import DecodePlan, plan_workers
from runtime.predictor import Predictor


@pytest.mark.parametrize(
    ("decode_ms", "engine_ms", "cpus", "workers"),
    [
        (1.37, 1.62, 2, 2),  # resnet18 ONNX Runtime INT8 on 2 cores: 2 threads measured faster than 1
        (1.43, 6.91, 2, 1),  # torch FP32: the engine is the bottleneck, one thread keeps up
        (10.0, 1.0, 4, 4),  # decoding dominates: every core
        (1.0, 10.0, 16, 2),  # 16 * 0.1 = 1.6: a slow engine on many cores
        (0.0, 1.0, 8, 1),
        (1.0, 0.0, 8, 8),
    ],
)
def test_plan_workers_keeps_the_engine_fed(decode_ms: float, engine_ms: float, cpus: int, workers: int) -> None:
    assert plan_workers(decode_ms / 1e3, engine_ms / 1e3, cpus) == workers


def test_plan_workers_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        plan_workers(-1.0, 1.0, 2)
    with pytest.raises(ValueError):
        plan_workers(1.0, 1.0, 0)


def _images(data: Path) -> list[Path]:
    return sorted((data / "test").iterdir())


def test_plan_decode_measures_and_the_override_wins(tiny_model: dict[str, Path]) -> None:
    images = _images(tiny_model["data"])
    for engine, ahead in (("onnx", 2), ("openvino", None)):
        with Predictor([Member(str(tiny_model["artifacts"]), engine)]) as predictor:
            plan = predictor.plan_decode(images, 8)
            expected_ahead = ahead or predictor.engines[0].in_flight + 1
            assert plan.how == "measured" and 1 <= plan.workers <= usable_cpus()
            assert (
                plan.decode_ms is not None and plan.decode_ms > 0 and plan.engine_ms is not None and plan.engine_ms > 0
            )
            assert plan.prefetch == expected_ahead
            assert "measured: decode" in plan.describe()
            forced = predictor.plan_decode(images, 8, workers=3)
            assert (forced.workers, forced.how, forced.prefetch) == (3, "--workers", expected_ahead)
            # the plan drives the stream: same rows as the default threads
            rows = [b.ok for b, _ in predictor.stream(images, 8, plan)]
            assert rows == [b.ok for b, _ in predictor.stream(images, 8, 2)]


def test_plan_decode_without_a_readable_image(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with Predictor([Member(str(tiny_model["artifacts"]), "onnx")]) as predictor:
        plan = predictor.plan_decode([bad, UserError("x: outside the image folder")], 8)
    assert plan == DecodePlan(min(2, usable_cpus()), 2, how="no readable sample image")


def test_predict_prints_the_plan(tiny_model: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from runtime.errors import run_cli
    from runtime.predict import main

    base = ["--model", str(tiny_model["artifacts"]), "--data", str(tiny_model["data"]), "--no-progress"]
    assert run_cli(main, [*base, "--out", str(tmp_path / "a.csv")]) == 0
    assert "batches ahead (measured: decode" in capsys.readouterr().err
    assert run_cli(main, [*base, "--out", str(tmp_path / "b.csv"), "--workers", "1"]) == 0
    assert "1 decoder thread, 2 batches ahead (--workers)" in capsys.readouterr().err
    folder = tmp_path / "unreadable"
    folder.mkdir()
    (folder / "bad.png").write_text("not an image")
    assert run_cli(main, [*base[:2], "--images", str(folder), "--out", str(tmp_path / "c.csv"), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "(no readable sample image) | no image could be read" in err and "img/s" not in err
