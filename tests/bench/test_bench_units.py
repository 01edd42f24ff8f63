"""Bench pieces without a model: statistics, cell specs, the F1 gate, the regression gate and the report folder."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import assert_self_contained

from bench.cells import Cell, ensemble_cell, plan
from bench.compare import check_same_held_out, held_out_fingerprint, load_baseline, parse_tolerance, regressions
from bench.config import BenchConfig, CellSpec
from bench.gates import best_cell, compare_to_reference, summary_line
from bench.measure import matmul_peak_gflops, summarize
from bench.plots import pareto_front
from bench.report import markdown_table, write_run
from bench.rows import COLUMNS, BenchRow
from bench.run import _start
from runtime.errors import UserError
from runtime.members import Member


def test_summarize_takes_the_median_round_and_pooled_percentiles() -> None:
    rounds = [[0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [0.1, 0.1, 0.4]]  # seconds per batch of 10 images
    s = summarize(rounds, batch_size=10)  # rounds: 100, 50 and 50 img/s (30 images in 0.6 s)
    assert s["img_per_s"] == pytest.approx(50) and s["img_per_s_min"] == pytest.approx(50)
    assert s["img_per_s_max"] == pytest.approx(100) and s["runs"] == 9
    assert s["p50_ms"] == pytest.approx(100) and s["p99_ms"] == pytest.approx(
        np.percentile([100] * 5 + [200] * 3 + [400], 99)
    )
    per_round = np.array([100, 50, 50])
    assert s["cv"] == pytest.approx(per_round.std() / per_round.mean())
    assert summarize([[0.5]], 1)["cv"] == 0.0
    with pytest.raises(ValueError):
        summarize([[0.1], []], 1)


def test_summarize_counts_bursts_of_results_over_the_wall_time() -> None:
    # two infer requests finishing together: intervals alternate near 0 and near twice the batch time
    bursts = [[0.01, 0.19, 0.01, 0.19, 0.01]]  # 5 batches of 32 in 0.41 s; the median interval (0.01 s) is no rate
    assert summarize(bursts, batch_size=32)["img_per_s"] == pytest.approx(32 * 5 / 0.41)


def test_matmul_peak_is_positive() -> None:
    rates = matmul_peak_gflops(seconds=0.05, n=128, threads=1)
    assert rates is not None and rates["numpy"] > 0 and rates["onnxruntime"] > 0
    assert rates["peak"] == max(rates["numpy"], rates["onnxruntime"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("torch", CellSpec("torch")),
        ("onnx:int8", CellSpec("onnx", "int8")),
        ("openvino@hflip", CellSpec("openvino", "fp32", "hflip")),
        ("onnx:fp16@five-crop", CellSpec("onnx", "fp16", "five-crop")),
        ("torch+compile", CellSpec("torch", compile=True)),
        ("torch:fp16+compile@hflip", CellSpec("torch", "fp16", "hflip", compile=True)),
    ],
)
def test_cell_spec_parses(text: str, expected: CellSpec) -> None:
    assert CellSpec.parse(text) == expected
    assert CellSpec.parse(expected.label) == expected


@pytest.mark.parametrize(
    "text",
    ["tensorflow", "onnx:int4", "onnx@rotate", "", "onnx@", "onnx:", "onnx:@hflip", "onnx+compile", "torch+jit"],
)
def test_cell_spec_rejects_unknown_names(text: str) -> None:
    with pytest.raises(UserError, match="engine\\[:precision\\]\\[\\+compile\\]\\[@tta\\]"):
        CellSpec.parse(text)


def test_cell_members_map_torch_fp16_and_compile_to_engine_options() -> None:
    assert CellSpec("torch").member("a/m") == Member("a/m", "torch", "fp32", 1.0, {})
    fp16 = CellSpec.parse("torch:fp16+compile").member("a/m")
    assert fp16.precision == "fp32" and fp16.options == {"amp": "float16", "compile": True}
    assert CellSpec("onnx", "fp16").member("a/m").precision == "fp16"  # other engines: the FP16 artifact
    with pytest.raises(UserError, match="key 'device'"):
        BenchConfig(device="gpu").validate("bench.yaml")


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [(100, 0.70), (400, 0.69), (300, 0.60), (50, 0.71), (400, 0.65)]
    assert pareto_front(points) == [3, 0, 1]


def _cell(
    engine: str, precision: str, f1: float, preds: list[int], speed: float, tta: str = "none", backbone: str = "m"
) -> Cell:
    cell = Cell(backbone, CellSpec(engine, precision, tta), 8, [Member("artifacts/m")], group="m")
    cell.row.f1_micro, cell.row.img_per_s_engine, cell.row.img_per_s, cell.row.e2e_ratio = f1, speed, speed / 2, 0.5
    cell.probs = np.eye(3)[preds]
    return cell


def test_reference_agreement_gate_and_ranking() -> None:
    torch = _cell("torch", "fp32", 0.80, [0, 1, 2, 2], 100)
    onnx = _cell("onnx", "fp32", 0.80, [0, 1, 2, 2], 150)
    int8 = _cell("onnx", "int8", 0.795, [0, 1, 2, 1], 400)  # 99.4% of FP32: passes
    fp16 = _cell("onnx", "fp16", 0.70, [0, 1, 1, 1], 900)  # 87.5%: fails the gate, however fast
    tta = _cell("onnx", "fp32", 0.82, [0, 1, 2, 2], 70, tta="hflip")
    cells = [torch, onnx, int8, fp16, tta]
    compare_to_reference(cells, 0.99)
    assert int8.row.agreement == 0.75 and int8.row.reference == "torch:fp32"
    assert int8.row.speedup == 4.0 and int8.row.delta_f1 == pytest.approx(-0.005)
    assert fp16.row.status.startswith("failed gate: micro-F1 0.7000 < 99% of torch:fp32 0.8000")
    assert tta.row.status == "ok" and tta.row.delta_f1 == pytest.approx(0.02)
    best = best_cell([c.row for c in cells], 0.99)
    assert best is int8.row
    line = summary_line(best, 0.99)
    assert line.startswith("fastest at >= 99% of FP32 F1: m onnx:int8 batch 8: 400.0 img/s engine-only (4.00x torch")
    assert summary_line(None, 0.99).endswith("no cell qualified")


def test_ensembles_compare_with_their_own_fp32_cell_or_fail_the_gate() -> None:
    torch = _cell("torch", "fp32", 0.80, [0, 1, 2, 2], 100)
    folds = _cell("onnx", "fp32", 0.84, [0, 1, 2, 2], 40, backbone="ensemble:m:5 folds")
    folds_int8 = _cell("onnx", "int8", 0.83, [0, 1, 2, 1], 120, backbone="ensemble:m:5 folds")
    lonely = _cell("openvino", "int8", 0.9, [0, 1, 2, 2], 500, backbone="ensemble:other")
    lonely.group = "other"
    compare_to_reference([torch, folds, folds_int8, lonely], 0.99)
    assert folds.row.reference == "m torch:fp32" and folds.row.delta_f1 == pytest.approx(0.04)
    assert folds_int8.row.reference == "onnx:fp32" and folds_int8.row.f1_ratio == pytest.approx(0.83 / 0.84)
    assert folds_int8.row.status.startswith("failed gate: micro-F1 0.8300 < 99% of onnx:fp32 0.8400")
    assert folds_int8.row.speedup == pytest.approx(1.2)  # over torch FP32 of the backbone, same batch
    assert lonely.row.status == "failed gate: no FP32 cell of this backbone ran to verify its F1 against"


def test_fp32_ensemble_compares_with_the_single_model_not_itself() -> None:
    single = _cell("torch", "fp32", 0.80, [0, 1, 2, 2], 100)
    folds_torch = _cell("torch", "fp32", 0.84, [0, 1, 2, 1], 25, backbone="ensemble:m:5 folds")
    compare_to_reference([folds_torch, single], 0.99)
    assert folds_torch.row.reference == "m torch:fp32" and folds_torch.row.delta_f1 == pytest.approx(0.04)
    assert folds_torch.row.agreement == 0.75 and folds_torch.row.speedup == pytest.approx(0.25)
    assert single.row.reference == "torch:fp32" and single.row.delta_f1 == 0.0  # torch FP32 itself


def test_ensemble_cells_name_engine_precision_and_tta(tmp_path: Path) -> None:
    model = tmp_path / "artifacts" / "m"
    for k in range(3):
        (model / f"fold{k}").mkdir(parents=True)
    (model / "fold3").mkdir()  # left by an earlier run with more folds
    (model / "cv.json").write_text(json.dumps({"folds": 3}))
    cfg = BenchConfig(artifacts=str(tmp_path / "artifacts"))
    cell = ensemble_cell(cfg, "folds:m:onnx:int8@hflip")
    assert cell.backbone == "ensemble:m:3 folds" and cell.spec.label == "onnx:int8@hflip" and cell.group == "m"
    assert [Path(m.model).name for m in cell.members] == ["fold0", "fold1", "fold2"]
    assert ensemble_cell(cfg, "folds:m").spec.label == "onnx:fp32"
    cells = plan(BenchConfig(artifacts=cfg.artifacts, ensembles=["folds:m"], batch_sizes=[1, 4]))
    assert [c.batch_size for c in cells] == [1, 4] and cells[0].timings is not cells[1].timings
    ens = tmp_path / "mix.yaml"
    ens.write_text(
        f"members:\n- {{model: {model / 'fold0'}, engine: onnx}}\n- {{model: {model / 'fold1'}, engine: torch}}\n"
    )
    mixed = ensemble_cell(cfg, f"{ens}@hflip")
    assert mixed.backbone == "ensemble:mix" and mixed.spec.label == "mixed:fp32@hflip" and mixed.group == "fold0"
    missing = ensemble_cell(cfg, "folds:nosuch:openvino")
    _start(missing, [], [], cfg)  # recorded, the matrix goes on
    assert missing.row.status.startswith("skipped: ") and "nosuch: no such model folder" in missing.row.status


def test_baseline_of_another_held_out_set_is_refused() -> None:
    fingerprint = held_out_fingerprint(["a.png", "b.png"], ["ok", "bad"])
    assert fingerprint != held_out_fingerprint(["a.png", "b.png"], ["ok", "ok"])
    baseline = {"config": {"data": "data/elpv"}, "held_out": {"images": 2, "sha256": fingerprint}, "rows": []}
    check_same_held_out(baseline, fingerprint, 2, "b.json")  # the same set, wherever its folder is
    with pytest.raises(UserError, match="measured on other held-out images or labels \\(data 'data/elpv'\\)"):
        check_same_held_out(baseline, held_out_fingerprint(["a.png", "c.png"], ["ok", "bad"]), 2, "b.json")
    with pytest.raises(UserError, match="measured on 2 held-out images, this run on 40"):
        check_same_held_out(baseline, fingerprint, 40, "b.json")
    legacy = {"rows": [BenchRow("m", "onnx:fp32", images=656)]}  # no fingerprint: the image count is checked
    check_same_held_out(legacy, fingerprint, 656, "b.json")
    with pytest.raises(UserError, match="measured on 656 held-out images, this run on 40"):
        check_same_held_out(legacy, fingerprint, 40, "b.json")


def test_parse_tolerance() -> None:
    assert parse_tolerance("5%") == 0.05 and parse_tolerance("12.5") == 0.125
    for bad in ("five", "-1%", "150%", "nan"):
        with pytest.raises(UserError, match="percentage"):
            parse_tolerance(bad)


def _row(cell: str, status: str = "ok", speed: float | None = 100.0, f1: float | None = 0.8, **more: Any) -> BenchRow:
    return BenchRow("m", cell, batch_size=8, status=status, img_per_s_engine=speed, f1_micro=f1, **more)


def test_regressions_fire_on_throughput_f1_and_lost_cells() -> None:
    baseline = [_row("onnx:fp32"), _row("onnx:int8"), _row("torch:fp32"), _row("openvino:fp32", "skipped: x")]
    now = [
        _row("onnx:fp32", speed=96),
        _row("onnx:int8", speed=90),
        _row("torch:fp32", "failed: died", f1=0),
        _row("openvino:fp32", f1=0.1),
        _row("trt:fp16", f1=0.1),
    ]
    found = regressions(now, baseline, 0.05)
    assert len(found) == 2
    assert found[0].startswith("m onnx:int8 batch 8: engine-only img/s 90 vs baseline 100 (-10.0%")
    assert found[1] == "m torch:fp32 batch 8: ran in the baseline, now failed: died"
    assert regressions([_row("onnx:fp32", f1=0.7)], [_row("onnx:fp32")], 0.05)[0].startswith(
        "m onnx:fp32 batch 8: micro-F1 0.7 vs baseline 0.8"
    )
    assert regressions(now, baseline, 0.5) == ["m torch:fp32 batch 8: ran in the baseline, now failed: died"]


def test_load_baseline_rejects_other_files(tmp_path: Path) -> None:
    for name, text in [("a.json", "{not json"), ("b.json", '{"rows": [{"x": 1}]}'), ("c.json", "[]")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=f"--baseline .*{name}"):
            load_baseline(tmp_path / name)
    with pytest.raises(UserError, match="cannot read"):
        load_baseline(tmp_path / "missing.json")


def _results(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "environment": {"cpu": "test cpu", "commit": "abc"},
        "config": {"latency_batch": 1},
        "matmul_peak_gflops": 50.0,
        "rows": rows,
        "summary": summary_line(None, 0.99),
        "best": None,
        "regressions": ["m x batch 8: engine-only img/s 1 vs baseline 2"],
        "baseline": "old/results.json",
    }


def test_report_folder_is_complete_and_self_contained(tmp_path: Path) -> None:
    ok = _row("onnx:fp32", engine="onnx", precision="fp32", f1_macro=0.5, img_per_s=80.0, p50_ms=10.0, p90_ms=11.0,
              p99_ms=12.0, lat1_p50_ms=1.0, lat1_p90_ms=1.1, lat1_p99_ms=1.5, gflops=20.0, peak_fraction=0.4,
              cv=float("nan"))  # fmt: skip
    skipped = _row("trt:fp16", "skipped: no GPU", speed=None, f1=None, engine="trt", precision="fp16")
    run = write_run(_results([ok, skipped]), tmp_path / "reports" / "r1")
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "latency.png",
        "pareto.png",
        "report.html",
        "report.md",
        "results.csv",
        "results.json",
    ]
    assert (tmp_path / "reports" / "latest").resolve() == run.resolve()
    table = pd.read_csv(run / "results.csv")
    assert list(table.columns) == COLUMNS and table["status"].tolist() == ["ok", "skipped: no GPU"]
    data = json.loads((run / "results.json").read_text())  # NaN became null: strict JSON
    assert data["rows"][0]["cv"] is None and data["environment"]["cpu"] == "test cpu"
    page = (run / "report.html").read_text()
    assert_self_contained(page)
    assert page.count("<img ") == 2 and all(
        s.startswith("data:image/png;base64,") for s in re.findall(r"src='([^']*)'", page)
    )
    assert "<td>None</td>" not in page and "<td>nan</td>" not in page
    assert "test cpu" in page and "no cell qualified" in page and "engine-only img/s 1 vs baseline 2" in page
    md = (run / "report.md").read_text()
    assert "| m | trt:fp16 | 8 | - |" in md and "skipped: no GPU |" in md and "| 100.0 (-" in md


def test_markdown_table_shows_reasons() -> None:
    rows = [BenchRow("m", "onnx:int8", batch_size=4, status="skipped: model.int8.onnx not found")]
    assert markdown_table(rows).splitlines()[-1] == (
        "| m | onnx:int8 | 4 | - | - | - | - | - | - | - | - | - | - | -/- | -/- | - | - | - | -/- | "
        "skipped: model.int8.onnx not found |"
    )
    ran = BenchRow("m", "onnx:fp32", batch_size=4, status="ok", threads=2, decode_workers=1)
    assert markdown_table([ran]).splitlines()[-1].endswith("| 2/1 | ok |")
    ok = BenchRow("m", "onnx:fp32", batch_size=4, agreement=0.5, delta_f1=0.0312)
    assert "| 50.00% | +0.0312 |" in markdown_table([ok])
    fast = BenchRow("m", "onnx:fp32", batch_size=4, img_per_s=90.0, decode="fast", img_per_s_decode=300.0,
                    pipeline_efficiency=0.93)  # fmt: skip
    assert "| 300.0 (fast) | 0.93 |" in markdown_table([fast])


@pytest.mark.parametrize(
    "page",
    ["<img src='https://cdn.example/x.png'>", "<link href='style.css'>", "<style>@import 'x.css'</style>",
     "<script src=\"//cdn.example/lib.js\"></script>", "<div style='background:url(x.png)'>"],
)  # fmt: skip
def test_self_contained_check_catches_external_references(page: str) -> None:
    with pytest.raises(AssertionError):
        assert_self_contained(page)
    assert_self_contained("<img src='data:image/png;base64,iVBOR//w=='><a href='#top'>top</a>")


def test_gpu_queries_parse_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.environment import gpu_info
    from bench.worker import gpu_memory_mib

    fake = tmp_path / "nvidia-smi"  # answers like the real tool (csv, noheader, nounits)
    fake.write_text('#!/bin/sh\ncase "$1" in --query-gpu*) echo "NVIDIA L4, 570.86, 23034";;\n'
                    '*) echo "4242, 1536"; echo "77, 100";; esac\n')  # fmt: skip
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert gpu_info() == "NVIDIA L4 (driver 570.86, 23034 MiB)"
    assert gpu_memory_mib(4242) == 1536.0 and gpu_memory_mib(1) is None
    monkeypatch.setenv("PATH", "/nonexistent")
    assert gpu_info() == "none" and gpu_memory_mib(4242) is None


def test_benchmark_app_command_and_output_parsing() -> None:
    from bench.openvino_ref import benchmark_app_command, parse_throughput

    cmd = benchmark_app_command("m.xml", 32, (128, 96), 4.6, threads=2)
    joined = " ".join(cmd)
    for part in ("-m m.xml", "-d CPU", "-hint throughput", "-infer_precision f32", "-shape input[32,3,128,96]",
                 "-t 5", "-nthreads 2"):  # fmt: skip
        assert part in joined, joined
    assert "-nthreads" not in benchmark_app_command("m.xml", 1, (8, 8), 1)
    out = "[Step 11/11] Dumping statistics report\n[ INFO ] Latency:\n[ INFO ]    Median:     10.5 ms\n"
    assert parse_throughput(out + "[ INFO ] Throughput:          2825.31 FPS\n") == pytest.approx(2825.31)
    assert parse_throughput(out) is None


def test_cpu_units_come_from_the_flags() -> None:
    from runtime.cpu import BF16_UNITS, INT8_UNITS, has_int8_dot_product, units

    epyc = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
    xeon = frozenset({"avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "amx_tile"})
    assert units(INT8_UNITS, epyc) == ["AVX512-VNNI"] and units(BF16_UNITS, epyc) == ["AVX512-BF16"]
    assert units(INT8_UNITS, xeon) == ["AVX512-VNNI", "AMX-INT8"] and "AMX-BF16" in units(BF16_UNITS, xeon)
    assert has_int8_dot_product(xeon) and not has_int8_dot_product(frozenset({"avx2", "avx512f"}))
