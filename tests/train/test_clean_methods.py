"""The added cleaning methods rank planted junk first; the harness's metrics match scikit-learn; feature sets
combine by image id; the review gallery is ranked, lazy and scales; the pretrained-only checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from runtime.errors import UserError
from train.clean_eval import choose_defaults, evaluate_scores, summarize
from train.clean_features import combine_features
from train.clean_review import flagged_rows, gallery_html, thumb_name
from train.outliers import ENSEMBLE, MethodOptions, rank_ensemble_scores, run_method


def _junk(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 Gaussian classes close together (90 images each, 16-d, as deep features of one domain), 6 scattered
    foreign points (each in its own direction) and a tight batch of 10 foreign points: (features, labels, kind
    0 clean / 1 scattered / 2 clustered)."""
    rng = np.random.default_rng(seed)
    centers = 4 * np.eye(1, 16) + np.eye(3, 16, 1)
    x = [c + rng.standard_normal((90, 16)) * 0.6 for c in centers]
    scattered = np.zeros((6, 16))
    scattered[np.arange(6), 5 + np.arange(6)] = 6.0
    batch = np.zeros(16)
    batch[12:] = 5.0
    x += [scattered + rng.standard_normal((6, 16)) * 0.3, batch + rng.standard_normal((10, 16)) * 0.05]
    kinds = np.repeat([0, 1, 2], [270, 6, 10])
    labels = np.concatenate([np.repeat(np.arange(3), 90), rng.integers(0, 3, 16)])
    return np.concatenate(x).astype(np.float32), labels, kinds


def _ap(scores: np.ndarray, kinds: np.ndarray, kind: int) -> float:
    keep = (kinds == 0) | (kinds == kind)
    return float(average_precision_score(kinds[keep] == kind, scores[keep]))


OPTS = MethodOptions(knn_k=5, knn_wide_k=20, pca_dims=8)


@pytest.mark.parametrize("method", ["knn_wide", "pca_isolation_forest", "mahalanobis", "rank_ensemble"])
def test_new_methods_rank_scattered_junk_first(method: str) -> None:
    x, y, kinds = _junk()
    assert _ap(run_method(method, x, y, OPTS).scores, kinds, 1) >= 0.99


def test_rank_ensemble_is_the_mean_rank_of_its_members() -> None:
    x, y, _ = _junk()
    members = [run_method(m, x, y, OPTS).scores for m in ENSEMBLE]
    expected = np.mean([np.argsort(np.argsort(s)) + 1 for s in members], axis=0) / len(x)
    np.testing.assert_allclose(run_method("rank_ensemble", x, y, OPTS).scores, expected)
    # seen by every member beats seen by one: ranks (1.0, 1.0, 0.5) > (1.0, 0.25, 0.25)
    a, b = rank_ensemble_scores([np.array([3.0, 2, 1, 0]), np.array([1.0, 3, 2, 0]), np.array([2.0, 0, 3, 1])])[:2]
    assert a > b


def test_a_wide_k_sees_a_batch_of_junk_that_a_small_k_misses() -> None:
    x, y, kinds = _junk()
    small, wide = (run_method(m, x, y, OPTS).scores for m in ("knn", "knn_wide"))
    assert _ap(small, kinds, 2) < 0.3  # the batch's 5th neighbours are each other
    assert _ap(wide, kinds, 2) == pytest.approx(1.0)  # its 20th neighbour lies outside the batch of 10


def test_mahalanobis_uses_the_class_covariance() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 8)) * np.array([5, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])
    x[:5, 1] = 3.0  # 15 sigma along a thin axis, yet closer to the mean in Euclidean distance than many inliers
    x[:, 7] += 20.0  # away from the origin, so L2 normalisation keeps the shape
    scores = run_method("mahalanobis", x.astype(np.float32), np.zeros(300, int), OPTS).scores
    assert set(np.argsort(-scores)[:5]) == set(range(5))


def test_harness_metrics_match_scikit_learn_on_a_hand_made_case() -> None:
    truth = np.array([1, 0, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.7, 0.1])
    m = evaluate_scores(truth, scores)
    # ranked: 1 (hit), 0, 0, 1 (hit at rank 4): AP = (1/1 + 2/4) / 2; top-2 holds one of the two
    assert m["average_precision"] == pytest.approx(0.75) == average_precision_score(truth, scores)
    assert m["precision_at_k"] == 0.5
    assert m["auroc"] == pytest.approx(6 / 8)


def test_summary_and_default_choice() -> None:
    rows = [{"method": meth, "kind": kind, "seed": seed, "auroc": 0.5, "precision_at_k": 0.5,
             "average_precision": ap + 0.1 * seed}
            for seed in (0, 1)
            for meth, kind, ap in [("a", "scattered_foreign", 0.9), ("a", "clustered_foreign", 0.1),
                                   ("b", "scattered_foreign", 0.6), ("b", "clustered_foreign", 0.5),
                                   ("a", "mislabeled", 0.0), ("b", "mislabeled", 0.0),
                                   ("label_issues", "mislabeled", 0.4), ("label_issues", "scattered_foreign", 0.99),
                                   ("label_issues", "clustered_foreign", 0.99)]]  # fmt: skip
    summary = summarize(pd.DataFrame(rows))
    row = summary[(summary["method"] == "b") & (summary["kind"] == "clustered_foreign")].iloc[0]
    assert row["average_precision_mean"] == pytest.approx(0.55)
    assert row["average_precision_std"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    assert choose_defaults(summary) == ("b", "label_issues")  # a wins one kind only; label_issues is no outlier score


def test_feature_sets_combine_by_image_id() -> None:
    ids = ["a.png", "b.png", "c.png"]
    first = (np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], np.float32), pd.DataFrame({"image_id": ids, "label": "x"}))
    order = [2, 0, 1]
    second = (np.array([[0.0, 0.0, 5.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)[np.argsort(order)],
              pd.DataFrame({"image_id": [ids[i] for i in order], "label": "x"}))  # fmt: skip
    # second holds rows for c, a, b in that order
    second = (np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 5.0], [2.0, 0.0, 0.0]], np.float32), second[1])
    x, index = combine_features([first, second], ["f1", "f2"])
    assert index["image_id"].tolist() == ids
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(x[0], np.array([0.6, 0.8, 0, 0, 1]) * s, atol=1e-6)  # a: (3,4) and (0,0,5)
    np.testing.assert_allclose(x[2], np.array([0, 1, 0, 1, 0]) * s, atol=1e-6)  # c: (0,2) and (0,1,0)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    other = (second[0], pd.DataFrame({"image_id": ["c.png", "a.png", "z.png"], "label": "x"}))
    with pytest.raises(UserError, match=r"'b\.png' is missing from f2") as info:
        combine_features([first, other], ["f1", "f2"])
    assert "\n" not in str(info.value)


def _scores(n: int, flagged: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    knn = rng.random(n)
    issues = rng.random(n)
    return pd.DataFrame({
        "image_id": [f"img{i:05d}.png" for i in range(n)], "label": rng.choice(["ok", "bad"], n),
        "knn_wide_score": knn, "knn_wide_flag": knn >= np.sort(knn)[-flagged],
        "label_issues_score": issues, "label_issues_flag": issues >= np.sort(issues)[-5],
        "suggested_label": rng.choice(["ok", "bad"], n),
    })  # fmt: skip


def test_gallery_is_ranked_lazy_and_small_at_2000_flagged_images() -> None:
    scores = _scores(5000, 2000)
    have = set(scores["image_id"])
    page = gallery_html(scores, ["knn_wide", "label_issues"], ["knn_wide", "label_issues"], "thumbs", have)
    top = scores[scores["knn_wide_flag"]].sort_values("knn_wide_score", ascending=False)["image_id"].tolist()
    section = page[: page.index("label_issues: 5 flagged")]
    positions = [section.index(f"#{r} {i}") for r, i in enumerate(top, 1)]
    assert positions == sorted(positions) and len(positions) == 2000
    assert page.count('loading="lazy"') == 2005 and "data:image" not in page
    assert f'src="thumbs/{thumb_name(top[0])}"' in page
    assert len(page.encode()) < 2005 * 400  # thumbnails are files: a few hundred bytes of HTML per image
    issue = scores[scores["label_issues_flag"]].iloc[0]
    assert f"suggested: {issue['suggested_label']}" in page[page.index("label_issues: 5 flagged") :]


def test_flagged_rows_are_ranked_with_their_methods() -> None:
    scores = _scores(200, 10)
    rows = flagged_rows(scores, ["knn_wide", "label_issues"], ["knn_wide", "label_issues"])
    both = scores["knn_wide_flag"] | scores["label_issues_flag"]
    assert set(rows["image_id"]) == set(scores.loc[both, "image_id"])
    assert rows["flagged_by"].str.split(";").map(set).le({"knn_wide", "label_issues"}).all()
    only_knn = rows[rows["flagged_by"] == "knn_wide"]
    assert (only_knn["suggested_label"] == "").all()
    assert only_knn["knn_wide_score"].is_monotonic_decreasing
    assert rows["rank"].tolist() == list(range(1, len(rows) + 1)) and rows["percentile"].is_monotonic_decreasing
    assert rows["percentile"].between(0, 1).all()


def test_pretrained_only_checkpoint_keeps_the_backbone(tmp_path: Path) -> None:
    import json

    import timm
    import torch

    from runtime.engines.pytorch import load_checkpoint
    from train.config import TrainConfig
    from train.train import write_pretrained

    source = timm.create_model("test_resnet", num_classes=7)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "encode_classes.json").write_text(json.dumps({"a": 0, "b": 1}))
    cfg = TrainConfig(architecture="test_resnet", pretrained_path=str(tmp_path / "w.pth"), img_size=64,
                      data=str(tmp_path / "data"), artifacts=str(tmp_path / "artifacts"))  # fmt: skip
    path = write_pretrained("tiny", cfg)
    assert path == tmp_path / "artifacts" / "tiny_pretrained" / "best.pt"
    state = load_checkpoint(path)
    assert state["meta"]["metrics"] == {"trained": False} and state["meta"]["class_names"] == ["a", "b"]
    assert torch.equal(state["state_dict"]["conv1.0.weight"], source.state_dict()["conv1.0.weight"])
    with pytest.raises(UserError, match="no pretrained weights"):
        write_pretrained("tiny", TrainConfig(architecture="test_resnet", data=str(tmp_path / "data")))
    from bench.cells import trained_models
    from bench.config import BenchConfig

    (tmp_path / "artifacts" / "tiny").mkdir()
    (tmp_path / "artifacts" / "tiny" / "best.pt").write_bytes(b"")
    assert trained_models(BenchConfig(artifacts=str(tmp_path / "artifacts"))) == ["tiny"]  # not tiny_pretrained
