"""GPU kit pieces that need no GPU and no model: summary, gates, log parsing, skip reasons, the runner, the plan,
and the one-line exit on a machine without a GPU."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_module

from bench.gpucheck import settings
from bench.gpucheck.checks import Check, Kit, pre_skip, run_checks
from bench.gpucheck.data import find_lite0
from bench.gpucheck.gpubench import judge_bench
from bench.gpucheck.launch import judge_nccl, judge_resume
from bench.gpucheck.prediction import judge_agreement, judge_throughput
from bench.gpucheck.proc import Finished, Runner
from bench.gpucheck.skips import lite0_skip, provider_skip, tensorrt_skip
from bench.gpucheck.summary import CheckResult, exit_code, failed, passed, skipped, write_summary
from bench.gpucheck.training import judge_training, parse_train_log

#: the trainer's start and epoch lines (train/train.py), as the kit reads them
START = (
    "train resnet18_cpu (resnet18, 11.2M params) on cuda:0 x 1: 224 train / 96 valid images, 4 classes, input 64x64, {}"
)
EPOCH = "epoch {}/{} lr 1.00e-03 | train loss {} f1 0.3000 (900 img/s) | valid loss 1.3000 micro-F1 {} macro-F1 0.3000"


def _log(dtype: str = "float16", losses=(1.4, 1.3, 1.2), f1s=(0.40, 0.45, 0.43), first: int = 1) -> str:
    n = first + len(losses) - 1
    lines = [START.format(dtype)]
    lines += [EPOCH.format(first + i, n, loss, f1) for i, (loss, f1) in enumerate(zip(losses, f1s, strict=True))]
    return "\n".join([*lines, "best valid micro-F1 0.4500 (epoch 2) -> a/best.pt; TensorBoard logs in r"]) + "\n"


def _done(stderr: str = "", rc: int = 0, stdout: str = "", killed_on: str | None = None) -> Finished:
    return Finished(["python"], rc, stdout, stderr, 1.0, False, killed_on)


def _kit(tmp_path: Path, manifest: dict | None = None, **kw) -> Kit:
    return Kit(Runner(tmp_path / "steps.log", time.monotonic() + 100), tmp_path / "data", tmp_path / "work",
               tmp_path / "out", manifest, tmp_path / "models", **kw)  # fmt: skip


def test_summary_json_and_table(tmp_path: Path) -> None:
    results = [passed("a", "ok", value=float("nan")), failed("b", "broke | badly"), skipped("c", "no package")]
    results[0].seconds = 2.4
    json_path, md_path = write_summary(tmp_path, results, {"gpu": "X"})
    doc = json.loads(json_path.read_text())
    assert doc["counts"] == {"passed": 1, "failed": 1, "skipped": 1} and doc["gpu"] == "X"
    assert doc["checks"][0]["details"]["value"] is None and doc["checks"][2]["reason"] == "no package"
    md = md_path.read_text()
    assert "| a | passed | 2 | ok |" in md and "broke \\| badly" in md and "1 passed, 1 failed, 1 skipped" in md
    assert exit_code(results) == 1 and exit_code([results[0], results[2]]) == 0
    with pytest.raises(ValueError, match="needs a reason"):
        CheckResult("d", "skipped", " ")
    with pytest.raises(ValueError, match="status"):
        CheckResult("d", "maybe", "x")


def test_f1_tolerance_is_two_binomial_sigmas() -> None:
    assert settings.f1_tolerance(96) == pytest.approx(0.1443, abs=1e-4)
    assert settings.f1_tolerance(400) < settings.f1_tolerance(96)
    with pytest.raises(ValueError):
        settings.f1_tolerance(0)


def test_training_log_is_parsed_and_judged() -> None:
    log = parse_train_log(_log())
    assert (log.device, log.world, log.dtype, log.finished, log.best_f1) == ("cuda:0", 1, "float16", True, 0.45)
    assert [e[0] for e in log.epochs] == [1, 2, 3]
    ref = {"f1_micro": 0.40}
    ok = judge_training("t", _done(_log()), log, 3, "float16", ref, "", 0.144)
    assert ok.status == "passed" and "vs CPU 0.4000" in ok.reason and ok.details["delta"] == pytest.approx(0.05)
    far = judge_training("t", _done(_log()), log, 3, "float16", {"f1_micro": 0.70}, "", 0.144)
    assert far.status == "failed" and "> 0.144" in far.reason
    none = judge_training("t", _done(_log()), log, 3, "float16", None, "no reference recorded", 0.144)
    assert none.status == "passed" and "F1 not compared: no reference recorded" in none.reason
    nan = parse_train_log(_log(losses=(1.4, float("nan"), 1.2)))
    assert judge_training("t", _done(), nan, 3, "float16", ref, "", 0.1).status == "failed"
    assert "expected bfloat16" in judge_training("t", _done(), log, 3, "bfloat16", ref, "", 0.1).reason
    cpu = parse_train_log(_log().replace("cuda:0", "cpu"))
    assert "not cuda" in judge_training("t", _done(), cpu, 3, "float16", ref, "", 0.1).reason
    crashed = _done("error: training loss became nan in epoch 2; lower lr\n", rc=2)
    assert "training loss became nan" in judge_training("t", crashed, log, 3, "float16", ref, "", 0.1).reason


def test_resume_is_judged_by_the_epochs_after_the_kill() -> None:
    first = _done(_log(losses=(1.4, 1.3), f1s=(0.4, 0.4)), rc=-9, killed_on="epoch 2/4 ...")
    second = _done(
        "resuming resnet18_cpu from a/last.pt at epoch 3\n" + _log(losses=(1.2, 1.1), f1s=(0.5, 0.5), first=3)
    )
    assert judge_resume("r", first, second, 4, 2).status == "passed"
    assert "not killed" in judge_resume("r", _done(_log()), second, 4, 2).reason
    restarted = _done(_log(losses=(1, 1, 1, 1), f1s=(0.4, 0.4, 0.4, 0.4)))
    assert "expected [3, 4]" in judge_resume("r", first, restarted, 4, 2).reason


def test_nccl_probe_output_is_judged() -> None:
    good = {"backend": "nccl", "world_size": 1, "all_reduce_ok": True, "all_gather_ok": True, "ddp_loss": 1.4,
            "ddp_loss_finite": True}  # fmt: skip
    assert judge_nccl("n", _done(stdout=json.dumps(good) + "\n"), 1).status == "passed"
    assert judge_nccl("n", _done(stdout=json.dumps({**good, "backend": "gloo"})), 1).status == "failed"
    assert "failed" in judge_nccl("n", _done("RuntimeError: NCCL error\n", rc=1), 1).reason


def test_agreement_gate_is_99_5_percent() -> None:
    assert judge_agreement("p", 399 / 400, 400, 0.995, "1 img/s").status == "passed"
    low = judge_agreement("p", 397 / 400, 400, 0.995, "1 img/s")
    assert low.status == "failed" and "3 differ" in low.reason


def test_bench_results_are_judged() -> None:
    row = {"backbone": "m", "cell": "torch:fp32", "status": "ok", "device": "cuda", "img_per_s_engine": 900.0,
           "gpu_mem_mib": 812.0}  # fmt: skip
    env = {"gpu": "NVIDIA H200 (driver 580, 143771 MiB)"}
    ok = judge_bench("b", {"environment": env, "rows": [row, {**row, "cell": "torch:fp16"}]})
    assert ok.status == "passed" and "GPU 812 MiB" in ok.reason and "H200" in ok.reason
    assert judge_bench("b", {"environment": env, "rows": [{**row, "gpu_mem_mib": None}]}).status == "failed"
    assert "no GPU in the environment" in judge_bench("b", {"environment": {"gpu": "none"}, "rows": [row]}).reason
    gated = {**row, "status": "failed gate: micro-F1 0.3 < 99% of torch:fp32 0.5"}
    assert "failed gate" in judge_bench("b", {"environment": env, "rows": [gated]}).reason
    assert (
        judge_bench("b", {"environment": {}, "rows": [{**row, "device": "cpu", "gpu_mem_mib": None}]}, "cpu").status
        == "passed"
    )


def test_throughput_is_judged() -> None:
    r = {"fp32": {"batches": {"1": {"img_per_s": 300.0}, "64": {"img_per_s": 9000.0}}, "best_batch": 64,
                  "gpu_mem_reserved_mib": 500.0}}  # fmt: skip
    ok = judge_throughput("t", r)
    assert ok.status == "passed" and "batch 1 300 img/s, best batch 64 9000 img/s" in ok.reason
    assert judge_throughput("t", {}).status == "failed"
    cpu = judge_throughput("t", {"fp32": {**r["fp32"], "gpu_mem_reserved_mib": None}})
    assert cpu.status == "passed" and "MiB" not in cpu.reason


def test_pre_skip_orders_static_need_and_budget(tmp_path: Path) -> None:
    kit = _kit(tmp_path, {"images": {}})
    check = Check("c", lambda k: passed("c", "ok"), "does c", needs=("a",), min_seconds=50)
    assert pre_skip(Check("s", check.run, "", static=lambda k: "no package"), kit, {}) == "no package"
    assert pre_skip(check, kit, {"a": "failed"}) == "needs a, which failed"
    assert pre_skip(check, kit, {"a": "skipped"}) == "needs a, which was skipped"
    assert pre_skip(check, kit, {"a": "passed"}) is None
    kit.runner.deadline = time.monotonic() + 10
    assert "time budget used up" in pre_skip(check, kit, {"a": "passed"})


def test_run_checks_records_crashes_and_needs(tmp_path: Path) -> None:
    kit = _kit(tmp_path, {})

    def crash(k: Kit) -> CheckResult:
        raise KeyError("gpu")

    checks = [Check("a", crash, ""), Check("b", lambda k: passed("b", "ok"), "", needs=("a",)),
              Check("c", lambda k: passed("c", "fine"), "")]  # fmt: skip
    results = run_checks(kit, checks, {"kit": "test"})
    assert [r.status for r in results] == ["failed", "skipped", "passed"]
    assert results[0].reason == "KeyError: 'gpu'" and results[1].reason == "needs a, which failed"
    assert json.loads((kit.out / "summary.json").read_text())["counts"] == {"passed": 1, "failed": 1, "skipped": 1}


def test_lite0_skip_reasons(tmp_path: Path) -> None:
    kit = _kit(tmp_path, {"lite0": {}})
    assert lite0_skip(kit) == f"{tmp_path / 'models' / 'efficientnet_lite0.yaml'} not present"
    (tmp_path / "models").mkdir()
    cfg = tmp_path / "models" / "efficientnet_lite0.yaml"
    cfg.write_text("architecture: efficientnet_lite0\n")
    assert "has no pretrained_path" in find_lite0(tmp_path / "models")["reason"]
    cfg.write_text(f"architecture: efficientnet_lite0\npretrained_path: {tmp_path / 'w.pth'}\n")
    assert "not found: write it" in find_lite0(tmp_path / "models")["reason"]
    (tmp_path / "w.pth").write_bytes(b"weights")
    assert find_lite0(tmp_path / "models") == {"config": str(cfg), "source": str(tmp_path / "w.pth"), "reason": None}
    kit.manifest = {"lite0": {"reason": "w.pth not found"}}
    assert lite0_skip(kit) == "w.pth not found"
    kit.manifest = {"lite0": {"weights": "weights/w.pth"}}
    assert lite0_skip(kit) is None


def test_package_skip_reasons(tmp_path: Path) -> None:
    kit = _kit(tmp_path, {}, facts={"onnxruntime": "1.30.0", "onnxruntime_providers": ["CPUExecutionProvider"],
                                    "tensorrt": "not installed", "cuda_python": True})  # fmt: skip
    assert "onnxruntime 1.30.0 has no CUDAExecutionProvider" in provider_skip("CUDAExecutionProvider")(kit)
    kit.facts["onnxruntime_providers"].append("CUDAExecutionProvider")
    assert provider_skip("CUDAExecutionProvider")(kit) is None
    assert "tensorrt is not installed" in tensorrt_skip(kit)
    kit.facts.update(tensorrt="10.9", cuda_python=False)
    assert "cuda-python is not installed" in tensorrt_skip(kit)


def test_runner_kills_on_a_line_and_on_timeout(tmp_path: Path) -> None:
    runner = Runner(tmp_path / "steps.log", time.monotonic() + 60)
    loop = "import sys, time\nfor i in range(100):\n    print(f'epoch {i}/100 ', file=sys.stderr, flush=True)\n"
    loop += "    time.sleep(0.2)"
    killed = runner.run([sys.executable, "-c", loop], timeout=30, kill_on="epoch 2/100 ")
    assert killed.killed_on == "epoch 2/100" and killed.returncode == -9
    slow = runner.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=1)
    assert slow.timed_out and slow.error_line() == "timed out after 1 s"
    runner.deadline = time.monotonic() + 1
    cut = runner.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=30)
    assert cut.error_line() == "timed out after 1 s (stopped at the end of the kit's time budget)"
    bad = runner.run(
        [
            sys.executable,
            "-c",
            "import sys; print('x', file=sys.stderr); print('error: bad', file=sys.stderr); sys.exit(2)",
        ],
        30,
    )
    assert bad.returncode == 2 and bad.error_line() == "error: bad"
    log = (tmp_path / "steps.log").read_text()
    assert "(killed on: epoch 2/100)" in log and "(timed out)" in log and "exit 2 after" in log


def test_no_gpu_exits_at_once_with_one_line(tmp_path: Path) -> None:
    proc = run_module("bench.gpucheck", "--out", str(tmp_path / "out"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert_one_line_error(proc, "no CUDA GPU", "--plan")
    assert proc.returncode == 2 and not (tmp_path / "out").exists()


def test_plan_lists_every_check_with_known_skips(tmp_path: Path) -> None:
    proc = run_module("bench.gpucheck", "--plan", "--data", str(tmp_path / "none"), "--models-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    names = ["env", "train:resnet18_cpu:float16", "predict:torch-cuda-fp32", "predict:throughput", "bench:gpu-cells",
             "train:resume", "train:torchrun", "nccl", "onnxruntime:cuda-ep", "tensorrt:native",
             "bench:torch-compile"]  # fmt: skip
    for name in names:
        assert f". {name}: " in proc.stdout, name
    assert f"skipped: {tmp_path / 'efficientnet_lite0.yaml'} not present" in proc.stdout
    assert "manifest.json not found: run `make gpu-data`" in proc.stdout
    assert_one_line_error(run_module("bench.gpucheck", "--plan", "--only", "env,bogus"), "unknown check 'bogus'")
