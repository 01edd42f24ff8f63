"""Per-image scores for dataset cleaning on deep features: eight outlier scores and label issues.

Every method returns a score per image, higher = more suspect, plus a flag. Sources:

- ``knn``: cosine distance to the k-th nearest neighbour of L2-normalised features (Sun et al. 2022, "Out-of-
  distribution detection with deep nearest neighbors"), scikit-learn ``NearestNeighbors``; k = ``knn_k``.
- ``knn_wide``: the same with a k larger than a batch of junk (``knn_wide_k``, default 50): foreign images that
  arrive together are each other's nearest neighbours and hide from a small k (field notes, "Cleaning"), but
  not from the 50th neighbour when fewer than 50 of them came (k is capped at half the images).
- ``isolation_forest``: scikit-learn ``IsolationForest`` (Liu et al. 2008); the seed project's method.
- ``pca_isolation_forest``: ``IsolationForest`` on the first ``pca_dims`` (16) principal components (scikit-
  learn ``PCA``): random axis-parallel splits waste few cuts on the many near-constant directions of deep
  features (the "swamping and masking" discussion of Liu et al. 2008 and the subspace view of Aggarwal 2017,
  "Outlier Analysis", ch. 5).
- ``mahalanobis``: class-conditional Mahalanobis distance (Lee et al. 2018, "A simple unified framework for
  detecting out-of-distribution samples"): per-class means and one shared covariance (scikit-learn
  ``LedoitWolf``) on the first 64 principal components; the score is the distance to the nearest class mean.
- ``rank_ensemble``: the mean of the normalised ranks of ``knn_wide``, ``isolation_forest`` and
  ``pca_isolation_forest`` (rank averaging of detectors with incomparable scales: Aggarwal and Sathe 2017,
  "Outlier Ensembles", ch. 5; scipy ``rankdata``).
- ``lof``: scikit-learn ``LocalOutlierFactor`` (Breunig et al. 2000).
- ``dbscan``: scikit-learn ``DBSCAN`` (Ester et al. 1996); no score, only noise points (score 1) are flagged.
- ``label_issues``: cleanlab (Northcutt et al. 2021, confident learning) on out-of-fold predicted probabilities
  of a K-fold logistic regression on the features (or on given out-of-fold probabilities); the score is
  1 - self-confidence, the suggestion is the most probable other class.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.stats import rankdata
from sklearn.cluster import DBSCAN
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors
from sklearn.preprocessing import normalize

from runtime.errors import UserError

METHODS = (
    "knn", "knn_wide", "isolation_forest", "pca_isolation_forest", "mahalanobis", "rank_ensemble", "lof", "dbscan",
    "label_issues",
)  # fmt: skip
#: the detectors :func:`rank_ensemble_scores` averages
ENSEMBLE = ("knn_wide", "isolation_forest", "pca_isolation_forest")


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """How the methods run: ``flag_fraction`` (share of top scores flagged), ``knn_k`` / ``knn_wide_k``
    (neighbours), ``pca_dims`` (components before ``pca_isolation_forest``), ``seed``, ``folds`` (K-fold
    logistic regression of label issues)."""

    flag_fraction: float = 0.02
    knn_k: int = 10
    knn_wide_k: int = 50
    pca_dims: int = 16
    seed: int = 0
    folds: int = 5


@dataclasses.dataclass
class MethodResult:
    """Scores (float64, N; higher = more suspect), flags (bool, N) and, for label issues, suggested labels."""

    scores: np.ndarray
    flags: np.ndarray
    suggested: np.ndarray | None = None


def concat_normalized(sets: list[np.ndarray]) -> np.ndarray:
    """Several feature sets of the same N images (rows aligned) as one float32 (N, sum D_i) matrix: each set's
    rows L2-normalised, concatenated, scaled by 1/sqrt(number of sets) so every row has unit norm again (each set
    then weighs the same in cosine distances)."""
    parts = [normalize(s.astype(np.float64)) for s in sets]
    return (np.concatenate(parts, axis=1) / np.sqrt(len(parts))).astype(np.float32)


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


def pca_isolation_forest_scores(features: np.ndarray, dims: int = 16, seed: int = 0) -> np.ndarray:
    """Negated ``IsolationForest.score_samples`` on the first ``dims`` principal components of the L2-normalised
    features (float64, N). At most one component per 20 images (at least 2): with few images the later components
    each describe a single image, which then looks isolated."""
    x = normalize(features.astype(np.float64))
    z = PCA(min(dims, max(2, len(x) // 20), x.shape[1]), random_state=seed).fit_transform(x)
    return -IsolationForest(n_estimators=300, random_state=seed).fit(z).score_samples(z)


def mahalanobis_scores(features: np.ndarray, labels: np.ndarray, dims: int = 64) -> np.ndarray:
    """Squared Mahalanobis distance to the nearest class mean (float64, N), with one shared Ledoit-Wolf
    covariance of the within-class residuals, on the first ``dims`` principal components of the L2-normalised
    features. ``labels``: int class indices (N)."""
    x = normalize(features.astype(np.float64))
    z = PCA(min(dims, *x.shape), random_state=0).fit_transform(x)
    classes, inverse = np.unique(labels, return_inverse=True)
    means = np.stack([z[inverse == c].mean(axis=0) for c in range(len(classes))])
    precision = LedoitWolf().fit(z - means[inverse]).precision_
    dist = np.stack([np.einsum("ij,jk,ik->i", z - m, precision, z - m) for m in means], axis=1)
    return dist.min(axis=1)


def rank_ensemble_scores(scores: list[np.ndarray]) -> np.ndarray:
    """Mean of the normalised ranks (average ranks of ties, in (0, 1]) of several scores of the same N images."""
    return np.mean([rankdata(s) / len(s) for s in scores], axis=0)


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


def outlier_scores(method: str, features: np.ndarray, labels: np.ndarray, opts: MethodOptions) -> np.ndarray:
    """The score (float64, N; higher = more suspect) of one outlier ``method`` (not dbscan or label issues).

    Raises:
        UserError: unknown method.
    """
    if method == "knn":
        return knn_scores(features, opts.knn_k)
    if method == "knn_wide":  # at most half the images: the k-th neighbour of every image must not be the junk
        return knn_scores(features, max(1, min(opts.knn_wide_k, (len(features) - 1) // 2)))
    if method == "isolation_forest":
        return isolation_forest_scores(features, opts.seed)
    if method == "pca_isolation_forest":
        return pca_isolation_forest_scores(features, opts.pca_dims, opts.seed)
    if method == "mahalanobis":
        return mahalanobis_scores(features, labels)
    if method == "rank_ensemble":
        return rank_ensemble_scores([outlier_scores(m, features, labels, opts) for m in ENSEMBLE])
    if method == "lof":
        return lof_scores(features)
    raise UserError(f"unknown cleaning method {method!r} (choose from {', '.join(METHODS)})")


def run_method(
    method: str,
    features: np.ndarray,
    labels: np.ndarray,
    opts: MethodOptions | None = None,
    pred_probs: np.ndarray | None = None,
) -> MethodResult:
    """Score and flag every image with ``method`` (see the module docstring).

    Args:
        features: float (N, D) features, one row per image.
        labels: int class indices (N), used by ``mahalanobis`` and ``label_issues``.
        opts: see :class:`MethodOptions` (default: its defaults).
        pred_probs: out-of-fold probabilities (N, K) for ``label_issues`` instead of the K-fold regression.

    Raises:
        UserError: unknown method, or too few images per class for label issues.
    """
    opts = opts or MethodOptions()
    if method == "dbscan":
        scores = dbscan_noise(features)
        return MethodResult(scores, scores > 0)
    if method == "label_issues":
        probs = pred_probs if pred_probs is not None else out_of_fold_probs(features, labels, opts.folds, opts.seed)
        return label_issues(labels, probs)
    scores = outlier_scores(method, features, labels, opts)
    return MethodResult(scores, top_fraction_flags(scores, opts.flag_fraction))
