"""Bad input gives one `error:` line naming the file or key, a non-zero exit and no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import ROOT, assert_one_line_error, run_module

from runtime.errors import run_cli


@pytest.fixture()
def dataset_copy(elpv_small: Path, tmp_path: Path) -> Path:
    """A private copy of the small dataset that a test may damage."""
    return Path(shutil.copytree(elpv_small, tmp_path / "elpv"))


def test_missing_dataset_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dataset"
    proc = run_module("runtime.predict", "--model", "artifacts/x", "--data", str(missing))
    assert_one_line_error(proc, str(missing), "not found")
    proc = run_module("train.split", "--set", f"dataset={missing}")
    assert_one_line_error(proc, str(missing), "not found")


def test_csv_without_image_id(tiny_model: dict[str, Path], dataset_copy: Path) -> None:
    (dataset_copy / "test.csv").write_text("id\ncell0001.png\n")
    proc = run_module("runtime.predict", "--model", str(tiny_model["artifacts"]), "--data", str(dataset_copy))
    assert_one_line_error(proc, "test.csv", "image_id")


def test_unknown_model() -> None:
    proc = run_module("train", "--model", "no_such_backbone")
    assert_one_line_error(proc, "no_such_backbone", "resnet18_cpu")
    proc = run_module("export", "--model", "no_such_backbone")
    assert_one_line_error(proc, "no_such_backbone", "best.pt")


def test_unknown_config_keys(tmp_path: Path) -> None:
    proc = run_module("train.split", "--set", "valid_fractoin=0.3")
    assert_one_line_error(proc, "split.yaml", "'valid_fractoin'")
    bad = tmp_path / "bad_model.yaml"
    bad.write_text("architecture: resnet18\nlearning_rate: 0.1\n")
    proc = run_module("train", "--model", str(bad))
    assert_one_line_error(proc, "bad_model.yaml", "'learning_rate'")
    proc = run_module("bench", "--set", "engines=[torch, tensorflow]")
    assert_one_line_error(proc, "bench.yaml", "'tensorflow'")


def test_unreadable_image_in_predict(tiny_model: dict[str, Path], dataset_copy: Path) -> None:
    first = sorted((dataset_copy / "test").iterdir())[0]
    first.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = dataset_copy / "submission.csv"
    for engine in ("onnx", "torch"):
        out.write_text("image_id,label\nold,row\n")
        args = ["--engine", engine, "--model", str(tiny_model["artifacts"]), "--data", str(dataset_copy)]
        proc = run_module("runtime.predict", *args, "--out", str(out), "--on-error", "fail")
        assert_one_line_error(proc, first.name, "cannot decode")
        assert out.read_text() == "image_id,label\nold,row\n"  # the earlier output survives a failed run
        proc = run_module("runtime.predict", *args, "--out", str(out))  # default: skip, list, exit 3
        assert proc.returncode == 3 and "Traceback" not in proc.stderr
        assert "11 rows, 1 skipped" in proc.stderr
        assert first.name in Path(f"{out}.errors.csv").read_text()


def test_unreadable_image_in_training_workers(tiny_model: dict[str, Path], dataset_copy: Path, tmp_path: Path) -> None:
    bad = sorted((dataset_copy / "train").iterdir())[0]
    bad.write_bytes(b"")
    config = tmp_path / "broken.yaml"
    text = tiny_model["config"].read_text().replace(str(tiny_model["data"]), str(dataset_copy))
    text = text.replace("workers: 0", "workers: 2").replace(str(tiny_model["work"]), str(tmp_path))
    config.write_text(text)
    proc = run_module("train", "--model", str(config))
    assert_one_line_error(proc, bad.name, "empty file")
    assert not (tmp_path / "artifacts" / "broken" / "best.pt").exists()


def test_missing_artifact_and_unknown_engine(elpv_small: Path, tmp_path: Path) -> None:
    proc = run_module("runtime.predict", "--engine", "onnx", "--model", str(tmp_path), "--data", str(elpv_small))
    assert_one_line_error(proc, "model.onnx", "not found")
    proc = run_module("runtime.predict", "--engine", "tensorflow", "--model", str(tmp_path), "--data", ".")
    assert proc.returncode != 0 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr


def test_make_unknown_model_fails_with_one_line() -> None:
    import subprocess

    proc = subprocess.run(
        ["make", "--no-print-directory", "train", "MODEL=no_such_backbone"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "error: unknown MODEL 'no_such_backbone'" in proc.stderr


def test_corrupt_checkpoint_and_wrong_file_type(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "text.pt"
    text.write_text("hello world\n")
    proc = run_module("runtime.predict", "--engine", "torch", "--model", str(text), "--data", str(tiny_model["data"]))
    assert_one_line_error(proc, "text.pt", "not a PyTorch checkpoint")
    onnx_file = str(tiny_model["artifacts"] / "model.onnx")
    proc = run_module("runtime.predict", "--engine", "torch", "--model", onnx_file, "--data", str(tiny_model["data"]))
    assert_one_line_error(proc, "model.onnx", "use --engine onnx")


def test_bad_flag_values_are_one_line(tiny_model: dict[str, Path]) -> None:
    args = ["--model", str(tiny_model["artifacts"]), "--data", str(tiny_model["data"])]
    for flag in (["--batch-size", "-1"], ["--threads", "0"], ["--batch-size", "many"]):
        proc = run_module("runtime.predict", *args, *flag)
        assert_one_line_error(proc, flag[0])


def test_output_path_that_is_a_folder(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    args = ["--model", str(tiny_model["artifacts"]), "--data", str(tiny_model["data"]), "--no-progress"]
    proc = run_module("runtime.predict", *args, "--out", str(tmp_path))
    assert_one_line_error(proc, str(tmp_path), "is a folder")
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_module("runtime.predict", *args, "--out", str(blocker / "x.csv"))
    assert_one_line_error(proc, str(blocker))


def test_bench_with_no_runnable_cell_writes_no_report(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "reports"
    (out / "old").mkdir(parents=True)
    (out / "old" / "report.md").write_text("good report\n")
    (out / "latest").symlink_to("old")
    sets = [f"data={tiny_model['data']}", f"artifacts={tiny_model['work'] / 'artifacts'}", f"out={out}",
            "models=[nosuch]", "matmul_peak=false"]  # fmt: skip
    proc = run_module("bench", *[a for s in sets for a in ("--set", s)])
    assert_one_line_error(proc, "no bench cell could run", "nosuch")
    assert sorted(p.name for p in out.iterdir()) == ["latest", "old"] and (out / "latest").resolve().name == "old"


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--baseline", "x.json", "--fail-on-regression", "lots"], "give a percentage"),
     (["--fail-on-regression", "5%"], "--fail-on-regression needs --baseline"),
     (["--baseline", "nosuch.json"], "cannot read"), (["--run", "latest"], "link to the newest report"),
     (["--set", "engines=[onnx:int4]"], "engine[:precision][+compile][@tta]"), (["--run", "../x"], "--run '../x'"),
     (["--set", "rounds=0"], "'rounds' >= 1"),
     (["--set", "ensembles=[folds:m:onnx@flip]"], "engine[:precision][+compile][@tta]"),
     (["--set", "ensembles=[folds:m@]"], "engine[:precision][+compile][@tta]")],
)  # fmt: skip
def test_bench_bad_arguments(args: list[str], message: str) -> None:
    assert_one_line_error(run_module("bench", *args), message)


@pytest.mark.parametrize(
    ("members", "message"),
    [("[{model: m, weight: abc}]", "member 1 weight must be a number > 0, not 'abc'"),
     ("[{model: m, weight: -1}]", "member 1 weight must be a number > 0, not -1"),
     ("[{model: m, wieght: 2}]", "member 1 has unknown key 'wieght'"), ("m", "expected 'members:' with a list"),
     ("[{engine: onnx}]", "member 1 needs 'model'"), ("[m]", "member 1 is not a mapping")],
)  # fmt: skip
def test_bad_ensemble_yaml_is_one_line(members: str, message: str, tmp_path: Path) -> None:
    spec = tmp_path / "ens.yaml"
    spec.write_text(f"members: {members}\n")
    assert_one_line_error(
        run_module("runtime.predict", "--ensemble", str(spec), "--out", str(tmp_path / "o.csv")), message
    )
    if members == "m":  # a folder given as the ensemble file
        folder = run_module("runtime.predict", "--ensemble", str(tmp_path), "--out", str(tmp_path / "o.csv"))
        assert_one_line_error(folder, "is a folder, not a YAML config file")


def test_artifact_from_an_older_checkpoint_is_refused(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    import torch

    model_dir = Path(shutil.copytree(tiny_model["artifacts"], tmp_path / "tiny"))
    ckpt = torch.load(model_dir / "best.pt", weights_only=True)
    ckpt["epoch"] = 99  # "retrained": a different best.pt than the one model.onnx was exported from
    torch.save(ckpt, model_dir / "best.pt")
    args = ["--engine", "onnx", "--data", str(tiny_model["data"]), "--out", str(tmp_path / "s.csv")]
    proc = run_module("runtime.predict", *args, "--model", str(model_dir))
    assert_one_line_error(proc, "model.onnx", "older best.pt", "make export")
    proc = run_module("runtime.predict", *args, "--model", str(model_dir / "model.onnx"))
    assert proc.returncode == 0, proc.stderr  # the file itself is used as asked


def test_split_refuses_duplicate_ids(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("image_id,label\na,x\nb,x\na,y\nc,y\nd,x\ne,y\n")
    proc = run_module("train.split", "--set", f"dataset={tmp_path}")
    assert_one_line_error(proc, "train.csv", "'a' appears more than once")


def test_prepare_rebuilds_an_incomplete_dataset(tmp_path: Path) -> None:
    from train.prepare_elpv import is_complete, prepare

    data = prepare(tmp_path / "elpv", per_class=4, seed=1)
    assert is_complete(data)
    next((data / "test").iterdir()).unlink()
    assert not is_complete(data)
    prepare(data, per_class=4, seed=1)
    assert is_complete(data)


def test_interrupt_is_one_line_and_a_second_ctrl_c_cannot_break_the_exit(capsys: pytest.CaptureFixture) -> None:
    import signal

    def interrupted(argv: list[str] | None) -> int:
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGINT)
    try:
        assert run_cli(interrupted, []) == 130
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
    assert capsys.readouterr().err == "error: interrupted\n"
