"""runtime.predict: outputs, bad inputs, resume, shards, folder input, gallery and engine agreement."""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, assert_one_line_error

from runtime.errors import run_cli
from runtime.predict import main as predict_main


def _predict(*args: str) -> int:
    return run_cli(predict_main, [*args, "--no-progress"])


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png() -> bytes:
    """A tiny file whose header claims 40000 x 40000 pixels (PIL's decompression-bomb guard refuses it)."""
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b""))
        + _png_chunk(b"IEND", b"")
    )


BAD_KINDS = {
    "zero-byte": ("zero.png", "empty file"),
    "non-image": ("text.png", "cannot decode"),
    "truncated": ("truncated.png", "cannot decode"),
    "missing": ("missing.png", "not found"),
    "decompression-bomb": ("bomb.png", "decompression bomb"),
    "parent-path": ("../outside.png", "outside"),
    "absolute-path": ("<abs>", "outside"),
}


def _make_bad(kind: str, data: Path, tmp_path: Path) -> str:
    """Create the bad input of ``kind`` in ``data/test`` and return its image id."""
    test = data / "test"
    good = sorted(test.iterdir())[0].read_bytes()
    image_id = BAD_KINDS[kind][0]
    if kind == "zero-byte":
        (test / image_id).write_bytes(b"")
    elif kind == "non-image":
        (test / image_id).write_text("not an image")
    elif kind == "truncated":
        (test / image_id).write_bytes(good[: len(good) // 3])
    elif kind == "decompression-bomb":
        (test / image_id).write_bytes(_bomb_png())
    elif kind in ("parent-path", "absolute-path"):
        (tmp_path / "outside.png").write_bytes(good)
        if kind == "absolute-path":
            image_id = str(tmp_path / "outside.png")
    return image_id


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_bad_input_is_listed_and_the_run_goes_on(tiny_model: dict[str, Path], elpv_small: Path, tmp_path: Path,
                                                 kind: str) -> None:  # fmt: skip
    data = Path(shutil.copytree(elpv_small, tmp_path / "data"))
    good = sorted(p.name for p in (data / "test").iterdir())[:3]
    bad = _make_bad(kind, data, tmp_path)
    pd.DataFrame({"image_id": [good[0], bad, good[1], good[2]]}).to_csv(data / "test.csv", index=False)
    out = tmp_path / "sub.csv"
    assert _predict("--model", str(tiny_model["artifacts"]), "--data", str(data), "--out", str(out)) == 3
    assert pd.read_csv(out)["image_id"].tolist() == good
    errors = pd.read_csv(f"{out}.errors.csv")
    assert errors["image_id"].tolist() == [bad]
    assert BAD_KINDS[kind][1] in errors["reason"][0]


def test_csv_quirks_and_duplicates(tiny_model: dict[str, Path], elpv_small: Path, tmp_path: Path) -> None:
    data = Path(shutil.copytree(elpv_small, tmp_path / "data"))
    good = sorted(p.name for p in (data / "test").iterdir())[:3]
    ids = [good[0], good[1], good[1], good[2]]
    lines = ["\ufeffimage_id , extra"] + [f"  {i} , x" for i in ids]  # BOM, CRLF, spaces, extra column, duplicate
    (data / "test.csv").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    out = tmp_path / "sub.csv"
    assert _predict("--model", str(tiny_model["artifacts"]), "--data", str(data), "--out", str(out)) == 0
    sub = pd.read_csv(out)
    assert sub["image_id"].tolist() == ids and sub["label"][1] == sub["label"][2]
    assert not Path(f"{out}.errors.csv").exists()


def test_on_error_fail_stops_with_one_line(tiny_model: dict[str, Path], elpv_small: Path, tmp_path: Path) -> None:
    data = Path(shutil.copytree(elpv_small, tmp_path / "data"))
    bad = _make_bad("zero-byte", data, tmp_path)
    pd.DataFrame({"image_id": [bad]}).to_csv(data / "test.csv", index=False)
    out = tmp_path / "sub.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.predict", "--model", str(tiny_model["artifacts"]), "--data", str(data),
         "--out", str(out), "--on-error", "fail"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert_one_line_error(proc, "zero.png", "empty file")
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_formats_topk_and_probs_round_trip(tiny_model: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    data = tiny_model["data"]
    out = tmp_path / f"sub.{fmt}"
    args = ["--model", str(tiny_model["artifacts"]), "--data", str(data), "--out", str(out), "--format", fmt]
    assert _predict(*args, "--topk", "2", "--probs") == 0
    df = {"csv": pd.read_csv, "jsonl": lambda p: pd.read_json(p, lines=True), "parquet": pd.read_parquet}[fmt](out)
    classes = ["defect_000", "defect_033", "defect_067", "defect_100"]
    assert list(df.columns) == ["image_id", "label", "label_1", "prob_1", "label_2", "prob_2", *classes]
    assert df["image_id"].tolist() == pd.read_csv(data / "test.csv")["image_id"].tolist()
    assert (df["label"] == df["label_1"]).all() and (df["prob_1"] >= df["prob_2"]).all()
    assert df[classes].sum(axis=1).round(5).eq(1).all()
    assert (df[classes].max(axis=1) - df["prob_1"]).abs().max() < 1e-6
    plain = tmp_path / "plain.csv"
    assert _predict("--model", str(tiny_model["artifacts"]), "--data", str(data), "--out", str(plain)) == 0
    assert df["label"].tolist() == pd.read_csv(plain)["label"].tolist()


def test_shards_merge_to_the_unsharded_file(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    from runtime.merge import main as merge_main

    args = ["--model", str(tiny_model["artifacts"]), "--data", str(tiny_model["data"]), "--batch-size", "5"]
    assert _predict(*args, "--out", str(tmp_path / "all.csv")) == 0
    parts = []
    for i in (1, 2, 3):
        parts.append(tmp_path / f"part{i}.csv")
        assert _predict(*args, "--out", str(parts[-1]), "--shard", f"{i}/3") == 0
    assert run_cli(merge_main, [str(p) for p in reversed(parts)] + ["--out", str(tmp_path / "merged.csv")]) == 0
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "all.csv").read_bytes()
    assert run_cli(merge_main, [str(parts[0]), "--out", str(tmp_path / "bad.csv")]) == 2


def test_folder_input_and_gallery(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    folder = tiny_model["data"] / "test"
    out, gallery = tmp_path / "sub.csv", tmp_path / "gallery"
    code = _predict("--model", str(tiny_model["artifacts"]), "--images", str(folder), "--out", str(out),
                    "--visualize", str(gallery))  # fmt: skip
    assert code == 0
    sub = pd.read_csv(out)
    assert sub["image_id"].tolist() == sorted(p.name for p in folder.iterdir())
    page = (gallery / "index.html").read_text()
    for image_id, label in zip(sub["image_id"], sub["label"], strict=True):
        assert (gallery / label / image_id).is_file() and image_id in page


def test_resume_after_kill_equals_an_uninterrupted_run(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    ids = pd.read_csv(tiny_model["data"] / "train.csv")["image_id"].tolist() * 40
    pd.DataFrame({"image_id": ids}).to_csv(tmp_path / "many.csv", index=False)
    images = tiny_model["data"] / "train"
    base = [sys.executable, "-m", "runtime.predict", "--model", str(tiny_model["artifacts"]), "--csv",
            str(tmp_path / "many.csv"), "--images", str(images), "--batch-size", "1", "--workers", "1",
            "--no-progress"]  # fmt: skip
    whole = tmp_path / "whole.csv"
    assert subprocess.run([*base, "--out", str(whole)], cwd=ROOT, capture_output=True, timeout=600).returncode == 0
    out = tmp_path / "resumed.csv"
    partial = Path(f"{out}.partial.csv")
    proc = subprocess.Popen([*base, "--out", str(out)], cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not partial.exists() or partial.read_bytes().count(b"\n") < 200):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = partial.read_bytes().count(b"\n") - 1
    assert 0 < done < len(ids) and not out.exists()
    assert (
        subprocess.run([*base, "--out", str(out), "--resume"], cwd=ROOT, capture_output=True, timeout=600).returncode
        == 0
    )
    assert out.read_bytes() == whole.read_bytes() and not partial.exists()


def test_every_cpu_engine_gives_the_same_labels(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    labels = {}
    for engine in ("torch", "onnx", "openvino"):
        out = tmp_path / f"{engine}.csv"
        args = ["--engine", engine, "--model", str(tiny_model["artifacts"]), "--data", str(tiny_model["data"])]
        assert _predict(*args, "--out", str(out)) == 0
        labels[engine] = pd.read_csv(out)["label"].tolist()
    assert labels["torch"] == labels["onnx"] == labels["openvino"]
    out = tmp_path / "compiled.csv"
    args = ["--engine", "torch", "--model", str(tiny_model["artifacts"]), "--data", str(tiny_model["data"])]
    assert _predict(*args, "--out", str(out), "--option", "channels_last=false") == 0
    assert pd.read_csv(out)["label"].tolist() == labels["torch"]
    assert _predict(*args, "--out", str(out), "--option", "bogus=1") == 2


def test_torch_engine_amp_option(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    import numpy as np

    from runtime.engines import create_engine

    batch = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    with (
        create_engine("torch", tiny_model["artifacts"]) as fp32,
        create_engine("torch", tiny_model["artifacts"], options={"amp": "bfloat16"}) as bf16,
    ):
        assert fp32.describe()["precision"] == "fp32" and bf16.describe()["precision"] == "bf16"
        assert "autocast bfloat16" in bf16.describe()["provider"]
        ref, low = fp32.run(batch), bf16.run(batch)
        assert low.dtype == np.float32 and not np.array_equal(ref, low)  # it did run in bfloat16
        np.testing.assert_allclose(low, ref, atol=0.1 * float(np.abs(ref).max()) + 1e-3)
        assert bf16.run_features(batch).dtype == np.float32
    args = ["--engine", "torch", "--model", str(tiny_model["artifacts"]), "--data", str(tiny_model["data"])]
    out = tmp_path / "amp.csv"
    assert _predict(*args, "--out", str(out), "--option", "amp=bfloat16") == 0
    assert _predict(*args, "--out", str(out), "--option", "amp=int4") == 2


def test_tta(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    import numpy as np

    from runtime.engines import create_engine
    from runtime.pipeline import iter_batches, softmax

    data = tiny_model["data"]
    base = ["--model", str(tiny_model["artifacts"]), "--data", str(data), "--probs"]
    outs = {}
    for mode in ("none", "hflip", "hflip+vflip", "five-crop"):
        outs[mode] = tmp_path / f"{mode}.csv"
        assert _predict(*base, "--out", str(outs[mode]), "--tta", mode) == 0
    plain = tmp_path / "plain.csv"
    assert _predict(*base, "--out", str(plain)) == 0
    assert pd.read_csv(outs["none"]).equals(pd.read_csv(plain))
    classes = ["defect_000", "defect_033", "defect_067", "defect_100"]
    images = [data / "test" / i for i in pd.read_csv(data / "test.csv")["image_id"]]
    with create_engine("onnx", tiny_model["artifacts"]) as engine:
        x = np.concatenate(list(iter_batches(images, engine.meta, 32)))
        expected = (softmax(engine.run(x)) + softmax(engine.run(np.ascontiguousarray(x[..., ::-1])))) / 2
    np.testing.assert_allclose(pd.read_csv(outs["hflip"])[classes].to_numpy(), expected, atol=1e-5)
    five = pd.read_csv(outs["five-crop"])
    assert len(five) == len(images) and np.allclose(five[classes].sum(axis=1), 1, atol=1e-5)
    assert _predict(*base, "--out", str(tmp_path / "x.csv"), "--tta", "tencrop") == 2


@pytest.fixture(scope="module")
def second_model(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another backbone at another input size (test_efficientnet, 48 px), exported to ONNX."""
    from export.cli import main as export_main
    from train.cli import main as train_main

    work = tmp_path_factory.mktemp("second")
    cfg = work / "second.yaml"
    text = tiny_model["config"].read_text().replace("test_resnet", "test_efficientnet")
    cfg.write_text(text.replace("img_size: 64", "img_size: 48").replace(str(tiny_model["work"]), str(work)))
    assert run_cli(train_main, ["--model", str(cfg)]) == 0
    args = ["--model", "second", "--data", str(tiny_model["data"]), "--targets", "onnx", "--config",
            str(ROOT / "configs/export.yaml"), "--set", f"artifacts={work / 'artifacts'}"]  # fmt: skip
    assert run_cli(export_main, args) == 0
    return work / "artifacts" / "second"


def test_ensembles(
    tiny_model: dict[str, Path], second_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    from export.onnx import write_onnx_meta
    from runtime.engines import create_engine

    data = ["--data", str(tiny_model["data"]), "--probs"]
    classes = ["defect_000", "defect_033", "defect_067", "defect_100"]
    a, b = str(tiny_model["artifacts"]), str(second_model)
    outs = {}
    for name, models in {"a": [a], "b": [b], "aa": [a, a]}.items():
        outs[name] = tmp_path / f"{name}.csv"
        assert _predict(*[x for m in models for x in ("--model", m)], *data, "--out", str(outs[name])) == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]  # the "aa" run's line names each engine once
    assert "| engine ensemble of 2: 2x " in summary and "fp32 fp32" not in summary
    assert _predict("--model", a, *data, "--tta", "hflip", "--out", str(tmp_path / "t.csv")) == 0
    assert ", TTA hflip) |" in capsys.readouterr().err
    pa, pb = (pd.read_csv(outs[k])[classes].to_numpy() for k in ("a", "b"))
    same = pd.read_csv(outs["aa"])
    np.testing.assert_allclose(same[classes].to_numpy(), pa, atol=1e-6)
    assert same["label"].tolist() == pd.read_csv(outs["a"])["label"].tolist()
    spec = tmp_path / "ens.yaml"
    spec.write_text(f"members:\n  - {{model: {a}, weight: 3}}\n  - {{model: {b}, engine: onnx, weight: 1}}\n")
    assert _predict("--ensemble", str(spec), *data, "--out", str(tmp_path / "ens.csv")) == 0
    assert _predict("--ensemble", str(spec), "--model", a, *data, "--out", str(tmp_path / "no.csv")) == 2
    assert not (tmp_path / "no.csv").exists()
    np.testing.assert_allclose(pd.read_csv(tmp_path / "ens.csv")[classes].to_numpy(), (3 * pa + pb) / 4, atol=1e-5)
    other = tmp_path / "other.onnx"
    shutil.copy(second_model / "model.onnx", other)
    with create_engine("onnx", other) as engine:
        meta = engine.meta
    meta.class_names = ["cat", "dog", "defect_067", "defect_100"]
    write_onnx_meta(other, meta)
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.predict", "--model", a, "--model", str(other), *data, "--out",
         str(tmp_path / "x.csv")], cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert_one_line_error(proc, "other classes", "cat")


def test_engine_options_reach_every_ensemble_member(
    tiny_model: dict[str, Path], second_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.members import Member
    from runtime.predictor import Predictor

    a, b = str(tiny_model["artifacts"]), str(second_model)
    wanted = {"arena_extend_strategy": "kSameAsRequested"}
    own = {"provider_options": {"arena_extend_strategy": "kNextPowerOfTwo"}}
    members = [Member(a), Member(b), Member(a, options=own)]
    with Predictor(members, options={"provider_options": wanted}) as predictor:
        got = [e.options["provider_options"] for e in predictor.engines]
        assert [len(ix) for _, ix in predictor.groups] == [2, 1]  # 64 px members share decoded batches
    assert got == [wanted, wanted, own["provider_options"]]  # run-wide options, under each member's own
    data = ["--data", str(tiny_model["data"]), "--out", str(tmp_path / "x.csv")]
    assert _predict("--model", a, "--model", b, *data, "--option", "bogus=1") == 2  # not dropped silently
    assert "unknown option 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_an_ensemble_shards_and_merges_like_one_model(
    tiny_model: dict[str, Path], second_model: Path, tmp_path: Path
) -> None:
    from runtime.merge import main as merge_main

    args = ["--model", str(tiny_model["artifacts"]), "--model", str(second_model), "--data", str(tiny_model["data"]),
            "--batch-size", "4", "--probs"]  # fmt: skip
    assert _predict(*args, "--out", str(tmp_path / "all.csv")) == 0
    parts = [tmp_path / f"p{i}.csv" for i in (1, 2)]
    for i, part in enumerate(parts, 1):
        assert _predict(*args, "--out", str(part), "--shard", f"{i}/2") == 0
    assert run_cli(merge_main, [*map(str, parts), "--out", str(tmp_path / "merged.csv")]) == 0
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "all.csv").read_bytes()


def test_resume_and_merge_refuse_mismatched_runs(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    from runtime.merge import main as merge_main

    base = ["--model", str(tiny_model["artifacts"]), "--data", str(tiny_model["data"])]
    out = tmp_path / "sub.csv"
    partial = Path(f"{out}.partial.csv")
    assert _predict(*base, "--out", str(out)) == 0
    # an interrupted fp32 run, resumed with another precision: refused
    partial.write_text("image_id,label,confidence,error\n")
    Path(f"{partial}.json").write_text('{"precision": "fp32"}\n')
    assert _predict(*base, "--out", str(out), "--resume", "--precision", "int8") == 2
    partial.unlink()
    Path(f"{partial}.json").unlink()
    parts = []
    for i, precision in ((1, "fp32"), (2, "int8")):
        parts.append(tmp_path / f"p{i}.csv")
        assert _predict(*base, "--out", str(parts[-1]), "--shard", f"{i}/2", "--precision", precision) == 0
    assert run_cli(merge_main, [*map(str, parts), "--out", str(tmp_path / "m.csv")]) == 2  # mixed precisions
    assert _predict(*base, "--out", str(parts[1]), "--shard", "2/2") == 0
    lines = parts[1].read_text().splitlines(keepends=True)
    parts[1].write_text("".join(lines[:-1]))  # a row lost
    assert run_cli(merge_main, [*map(str, parts), "--out", str(tmp_path / "m.csv")]) == 2
    assert run_cli(merge_main, [*map(str, parts), "--out", str(parts[0])]) == 2  # would overwrite a shard
    assert not (tmp_path / "m.csv").exists()


def test_predict_never_overwrites_its_input_and_fail_mode_leaves_no_partial(
    tiny_model: dict[str, Path], elpv_small: Path, tmp_path: Path
) -> None:
    data = Path(shutil.copytree(elpv_small, tmp_path / "data"))
    before = (data / "test.csv").read_bytes()
    assert _predict("--model", str(tiny_model["artifacts"]), "--data", str(data), "--out", str(data / "test.csv")) == 2
    assert (data / "test.csv").read_bytes() == before
    bad = _make_bad("zero-byte", data, tmp_path)
    pd.DataFrame({"image_id": ["", bad]}).to_csv(data / "test.csv", index=False)
    out = tmp_path / "o.csv"
    args = ["--model", str(tiny_model["artifacts"]), "--data", str(data), "--out", str(out)]
    assert _predict(*args) == 3  # an empty id is listed, not fatal
    assert "empty image id" in Path(f"{out}.errors.csv").read_text()
    assert _predict(*args, "--on-error", "fail") == 2
    assert not Path(f"{out}.partial.csv").exists()


def test_an_ensemble_says_what_each_member_ran() -> None:
    from runtime.engines import describe_members

    onnx = {"engine": "onnx", "provider": "CPUExecutionProvider", "device": "cpu", "precision": "int8", "threads": 2}
    torch_ = {"engine": "torch", "provider": "torch eager", "device": "cpu", "precision": "fp32", "threads": 2}
    assert describe_members([onnx]) == onnx
    mixed = describe_members([onnx, torch_, onnx])
    assert mixed["engine"] == "ensemble of 3: 2x onnx int8 + torch fp32"
    assert mixed["provider"] == "CPUExecutionProvider + torch eager" and mixed["precision"] == "int8 + fp32"
    assert mixed["device"] == "cpu" and mixed["threads"] == 2


def test_a_k_fold_run_alone_points_to_folds(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "artifacts" / "kf"
    (model / "fold0").mkdir(parents=True)
    (model / "cv.json").write_text('{"folds": 2}')
    args = ["--model", str(model), "--data", str(tiny_model["data"]), "--out", str(tmp_path / "x.csv")]
    proc = subprocess.run([sys.executable, "-m", "runtime.predict", *args], cwd=ROOT, capture_output=True, text=True)
    assert_one_line_error(proc, "holds a k-fold run: predict with --folds", "MODEL=kf/fold0")


def test_decode_mode_is_recorded_and_auto_follows_the_decode_check(
    tiny_model: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from runtime import decode

    record = json.loads((tiny_model["artifacts"] / "verify.json").read_text())[decode.DECODE_RECORD_KEY]
    assert record["images"] > 0 and record["top1_agreement"] == 1.0 and record["passed"]  # PNGs: the same pixels
    base = ["--model", str(tiny_model["artifacts"]), "--data", str(tiny_model["data"]), "--shard", "1/2"]
    labels = {}
    for mode in ("exact", "fast", "auto"):
        out = tmp_path / f"{mode}.csv"
        capsys.readouterr()
        assert _predict(*base, "--out", str(out), "--decode", mode) == 0
        used = "fast" if mode == "auto" else mode  # auto: fast, as the export's decode check passed
        assert f"decode {used}, " in capsys.readouterr().err
        assert json.loads(Path(f"{out}.shard.json").read_text())["run"]["decode"] == used
        labels[mode] = pd.read_csv(out)["label"].tolist()
    assert labels["exact"] == labels["fast"] == labels["auto"]
    decode._libraries.cache_clear()
    monkeypatch.setitem(sys.modules, "cv2", None)
    try:
        proc_code = _predict(*base, "--out", str(tmp_path / "x.csv"), "--decode", "fast")
        assert proc_code == 2 and "opencv-python-headless" in capsys.readouterr().err
        assert _predict(*base, "--out", str(tmp_path / "auto.csv"), "--decode", "auto") == 0  # falls back to exact
        assert "decode exact, " in capsys.readouterr().err
    finally:
        decode._libraries.cache_clear()


def test_a_batch_with_no_readable_image_keeps_the_stream_in_order(
    tiny_model: dict[str, Path], elpv_small: Path, tmp_path: Path
) -> None:
    """OpenVINO streams several batches ahead of their results; a batch whose every image is unreadable (nothing
    to run) still comes out in its place: the rows are the readable images in input order, as torch writes them."""
    data = Path(shutil.copytree(elpv_small, tmp_path / "data"))
    good = sorted(p.name for p in (data / "test").iterdir())[:5]
    for name in ("bad1.png", "bad2.png"):
        (data / "test" / name).write_text("not an image")
    ids = [good[0], good[1], "bad1.png", "bad2.png", good[2], good[3], good[4]]
    pd.DataFrame({"image_id": ids}).to_csv(data / "test.csv", index=False)
    labels = {}
    for engine in ("openvino", "torch"):
        out = tmp_path / f"{engine}.csv"
        args = ["--engine", engine, "--model", str(tiny_model["artifacts"]), "--data", str(data), "--out", str(out)]
        assert _predict(*args, "--batch-size", "2") == 3
        written = pd.read_csv(out)
        assert written["image_id"].tolist() == good
        assert pd.read_csv(f"{out}.errors.csv")["image_id"].tolist() == ["bad1.png", "bad2.png"]
        labels[engine] = written["label"].tolist()
    assert labels["openvino"] == labels["torch"]
