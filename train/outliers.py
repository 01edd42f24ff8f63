"""Per-image scores for dataset cleaning on deep features: four outlier detectors and label issues.

Every method returns a score per image, higher = more suspect, plus a flag. Sources:

- ``knn``: cosine distance to the k-th nearest neighbour of L2-normalised features (Sun et al. 2022, "Out-of-
  distribution detection with deep nearest neighbors"), scikit-learn ``NearestNeighbors``.
- ``isolation_forest``: scikit-learn ``IsolationForest`` (Liu et al. 2008); the seed project's method.
- ``lof``: scikit-learn ``LocalOutlierFactor`` (Breunig et al. 2000).
- ``dbscan``: scikit-learn ``DBSCAN`` (Ester et al. 1996); no score, only noise points (score 1) are flagged.
- ``label_issues``: cleanlab (Northcutt et al. 2021, confident learning) on out-of-fold predicted probabilities
  of a K-fold logistic regression on the features (or on given out-of-fold probabilities); the score is
  1 - self-confidence, the suggestion is the most probable other class.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.cluster import DBSCAN
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors
from sklearn.preprocessing import normalize

from runtime.errors import UserError

METHODS = ("knn", "isolation_forest", "lof", "dbscan", "label_issues")


@dataclasses.dataclass
class MethodResult:
    """Scores (float64, N; higher = more suspect), flags (bool, N) and, for label issues, suggested labels."""

    scores: np.ndarray
    flags: np.ndarray
    suggested: np.ndarray | None = None


def top_fraction_flags(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Flag the ``fraction`` of images with the highest scores (at least one when fraction > 0)."""
    n = len(scores)
    k = min(n, max(1, round(n * fraction))) if fraction > 0 else 0
    flags = np.zeros(n, dtype=bool)
    if k:
        flags[np.argsort(-scores, kind="stable")[:k]] = True
    return flags


def knn_scores(features: np.ndarray, k: int = 10) -> np.ndarray:
    """Cosine distance to the k-th nearest other image (float64, N)."""
    x = normalize(features.astype(np.float64))
    k = min(k, len(x) - 1)
    dist, _ = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x).kneighbors(x)
    return dist[:, k]


def isolation_forest_scores(features: np.ndarray, seed: int = 0, n_estimators: int = 300) -> np.ndarray:
    """Negated ``IsolationForest.score_samples`` on L2-normalised features (float64, N)."""
    x = normalize(features.astype(np.float64))
    return -IsolationForest(n_estimators=n_estimators, random_state=seed).fit(x).score_samples(x)


def lof_scores(features: np.ndarray, n_neighbors: int = 20) -> np.ndarray:
    """Local outlier factor on L2-normalised features (float64, N; about 1 for inliers)."""
    x = normalize(features.astype(np.float64))
    lof = LocalOutlierFactor(n_neighbors=min(n_neighbors, len(x) - 1), metric="cosine").fit(x)
    return -lof.negative_outlier_factor_


def dbscan_noise(features: np.ndarray, min_samples: int = 5, eps_quantile: float = 0.95) -> np.ndarray:
    """1.0 for DBSCAN noise points, else 0.0. ``eps`` is the ``eps_quantile`` of the distances to the
    ``min_samples``-th neighbour (the usual k-distance heuristic), in cosine distance."""
    x = normalize(features.astype(np.float64))
    eps = float(np.quantile(knn_scores(features, min_samples), eps_quantile))
    labels = DBSCAN(eps=max(eps, 1e-9), min_samples=min_samples, metric="cosine").fit_predict(x)
    return (labels == -1).astype(np.float64)


def out_of_fold_probs(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold class probabilities (N, K) of a logistic regression on L2-normalised features.

    Raises:
        UserError: a class has fewer images than ``folds``.
    """
    counts = np.bincount(labels)
    if counts[counts > 0].min() < folds:
        raise UserError(
            f"label_issues: the smallest class has {counts[counts > 0].min()} images, fewer than {folds} folds"
        )
    x = normalize(features.astype(np.float64))
    probs = np.zeros((len(x), int(labels.max()) + 1))
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, labels):
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(x[train_idx], labels[train_idx])
        probs[np.ix_(test_idx, clf.classes_)] = clf.predict_proba(x[test_idx])
    return probs


def label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> MethodResult:
    """cleanlab ``find_label_issues`` flags and 1 - self-confidence scores (``get_label_quality_scores``)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    flags = find_label_issues(labels, pred_probs, filter_by="prune_by_noise_rate")
    scores = 1.0 - get_label_quality_scores(labels, pred_probs, method="self_confidence")
    return MethodResult(scores, np.asarray(flags, dtype=bool), pred_probs.argmax(axis=1))


def run_method(
    method: str,
    features: np.ndarray,
    labels: np.ndarray,
    flag_fraction: float,
    knn_k: int = 10,
    seed: int = 0,
    folds: int = 5,
    pred_probs: np.ndarray | None = None,
) -> MethodResult:
    """Score and flag every image with ``method`` (see the module docstring).

    Raises:
        UserError: unknown method, or too few images per class for label issues.
    """
    if method == "knn":
        scores = knn_scores(features, knn_k)
    elif method == "isolation_forest":
        scores = isolation_forest_scores(features, seed)
    elif method == "lof":
        scores = lof_scores(features)
    elif method == "dbscan":
        scores = dbscan_noise(features)
        return MethodResult(scores, scores > 0)
    elif method == "label_issues":
        probs = pred_probs if pred_probs is not None else out_of_fold_probs(features, labels, folds, seed)
        return label_issues(labels, probs)
    else:
        raise UserError(f"unknown cleaning method {method!r} (choose from {', '.join(METHODS)})")
    return MethodResult(scores, top_fraction_flags(scores, flag_fraction))
