"""DeLong ROC-AUC inference clustered by patient, the paired DeLong test, Holm's adjustment and McNemar's test.

The AUC and its structural components (placements) come from the fast algorithm of Sun & Xu (2014, IEEE Signal
Process. Lett. 21:1389), midranks included, so ties count one half as in pROC. One patient's images are not
independent, so the variance follows Obuchowski (1997, Biometrics 53:567): placements are summed per patient
cluster before their (co)variances are taken. The K/(K−1) small-sample factor is taken per component over the
clusters that contribute to it (clusters holding a positive for the positives' component, a negative for the
negatives'; the geometric mean of the two for their covariance, which keeps the variance a sum of squares). That is
Obuchowski's estimator when every cluster holds both classes and plain DeLong (1988) exactly when every patient has
one image. Only numpy, scipy and the standard library are used.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from scipy import stats
from scipy.special import expit, logit


class DelongResult(NamedTuple):
    """One score's AUC with its (cluster-robust) DeLong variance; `n_disjoint_pairs`: the most (positive, negative)
    pairs that can be formed with every image from a different patient (used by the perfect-separation bound)."""

    auc: float
    variance: float
    se: float
    n_pos: int
    n_neg: int
    n_clusters: int
    n_disjoint_pairs: int


class PairedDelongResult(NamedTuple):
    """Two scores' AUCs on the same images, their difference a − b, its variance, z, two-sided p and interval."""

    auc_a: float
    auc_b: float
    delta: float
    var_delta: float
    z: float
    p: float
    ci_low: float
    ci_high: float


class McNemarResult(NamedTuple):
    """b: a correct and b wrong; c: a wrong and b correct; p: exact two-sided binomial p on the b + c discordant."""

    b: int
    c: int
    p: float


def midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1…n of `x` in float64, tied values sharing the mean of their ranks."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    run_start = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(run_start)
    ends = np.r_[starts[1:], len(x)]
    run_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def _check_inputs(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    y = np.asarray(y_true).reshape(-1)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if scores.shape[-1] != len(y):
        raise ValueError(f"{scores.shape[-1]} scores for {len(y)} labels")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("the AUC needs at least one positive and one negative")
    return y


def _cluster_codes(groups: Sequence | np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        return np.arange(n)
    groups = np.asarray(groups).reshape(-1)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} images")
    return np.unique(groups, return_inverse=True)[1].reshape(-1)


def _fast_delong_placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sun & Xu: AUC per row of `scores` [k, n], the positives' placements V10 [k, m] and negatives' V01 [k, n0]."""
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    tz = np.stack([midranks(row) for row in np.concatenate([pos, neg], axis=1)])
    tx = np.stack([midranks(row) for row in pos])
    ty = np.stack([midranks(row) for row in neg])
    auc = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return auc, v10, v01


def _cluster_influence(y: np.ndarray, scores: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUC per row and the per-cluster influence g [k, K] whose inner products are the (co)variances of the AUCs."""
    auc, v10, v01 = _fast_delong_placements(y, scores)
    n_clusters = int(codes.max()) + 1
    pos_codes, neg_codes = codes[y], codes[~y]
    m, n = len(pos_codes), len(neg_codes)
    k10, k01 = len(np.unique(pos_codes)), len(np.unique(neg_codes))
    if k10 < 2 or k01 < 2:
        return auc, np.full((len(auc), n_clusters), np.nan)
    g = np.empty((len(auc), n_clusters))
    for row in range(len(auc)):
        u = np.bincount(pos_codes, weights=v10[row] - auc[row], minlength=n_clusters)
        w = np.bincount(neg_codes, weights=v01[row] - auc[row], minlength=n_clusters)
        g[row] = np.sqrt(k10 / (k10 - 1)) * u / m + np.sqrt(k01 / (k01 - 1)) * w / n
    return auc, g


def _disjoint_pairs(y: np.ndarray, codes: np.ndarray) -> int:
    """Most (positive, negative) pairs with all images from distinct patients: min(P + B, Q + B, ⌊(P + Q + B)/2⌋)
    for P positive-only, Q negative-only and B mixed patients."""
    has_pos = np.bincount(codes[y], minlength=codes.max() + 1) > 0
    has_neg = np.bincount(codes[~y], minlength=codes.max() + 1) > 0
    both = int((has_pos & has_neg).sum())
    only_pos, only_neg = int(has_pos.sum()) - both, int(has_neg.sum()) - both
    return min(only_pos + both, only_neg + both, (only_pos + only_neg + both) // 2)


def delong_auc(y_true: np.ndarray, score: np.ndarray, groups: Sequence | np.ndarray | None = None) -> DelongResult:
    """ROC-AUC of `score` (higher = positive) with DeLong's variance, clustered by `groups` (patient ids; None: each
    image its own patient, i.e. plain DeLong). Variance is NaN with fewer than two patients in either class."""
    scores = np.asarray(score, dtype=np.float64).reshape(1, -1)
    y = _check_inputs(y_true, scores)
    codes = _cluster_codes(groups, len(y))
    auc, g = _cluster_influence(y, scores, codes)
    variance = float(g[0] @ g[0])
    return DelongResult(float(auc[0]), variance, float(np.sqrt(variance)), int(y.sum()), int((~y).sum()),
                        int(codes.max()) + 1, _disjoint_pairs(y, codes))


def auc_interval(result: DelongResult, alpha: float = 0.05, scale: str = "logit") -> tuple[float, float, str]:
    """(low, high, method) two-sided 1 − alpha interval for the AUC.

    scale "logit" (default): Wald on logit(AUC) with delta-method SE se/(AUC(1 − AUC)), mapped back, so it stays
    inside (0, 1); "plain": Wald on the AUC itself, clipped to [0, 1].

    Perfect separation (AUC 1 or 0, where every placement is 1 or 0 and the DeLong variance is 0): an exact,
    distribution-free rank bound, Clopper–Pearson with all trials successes on the k = `n_disjoint_pairs`
    disjoint (positive, negative) pairs from distinct patients. Those pairs are independent and each is concordant
    with probability at most the true AUC θ, and perfect separation implies that all k are, so
    P(perfect separation | θ) ≤ θ^k for any score distributions; the lower bound is θ_L = (alpha/2)^(1/k) and the
    upper 1 (mirrored for AUC 0). Chosen over a variance-based fix because it holds for any distribution and needs
    no model: with 7 positives, (0.025)^(1/7) ≈ 0.59 — the least AUC that a finding which is either obvious or
    missed outright could have and still separate seven of seven with probability 2.5%.
    Variance 0 with 0 < AUC < 1 (e.g. every score tied): logit Wald with the largest possible variance of a
    Mann–Whitney AUC, θ(1 − θ)/min(m, n) (Birnbaum & Klose 1957), with k in place of min(m, n)
    (the two agree when every patient has one image).
    """
    z = stats.norm.isf(alpha / 2)
    auc, variance, k = result.auc, result.variance, result.n_disjoint_pairs
    if auc >= 1.0 or auc <= 0.0:
        bound = (alpha / 2) ** (1.0 / k) if k > 0 else 0.0
        if auc >= 1.0:
            return bound, 1.0, "exact-rank-bound (perfect separation)"
        return 0.0, 1.0 - bound, "exact-rank-bound (perfect separation)"
    if not np.isfinite(variance):
        return float("nan"), float("nan"), "undefined (fewer than two patients in a class)"
    clustered = result.n_clusters < result.n_pos + result.n_neg
    name = "delong-clustered" if clustered else "delong"
    se, method = result.se, f"{name}-{scale}"
    if variance <= 0.0:
        se, method = np.sqrt(auc * (1 - auc) / max(k, 1)), "max-variance-bound-logit (zero DeLong variance)"
        scale = "logit"
    if scale == "plain":
        return float(max(0.0, auc - z * se)), float(min(1.0, auc + z * se)), method
    if scale != "logit":
        raise ValueError(f"scale must be 'logit' or 'plain', not {scale!r}")
    half = z * se / (auc * (1 - auc))
    return float(expit(logit(auc) - half)), float(expit(logit(auc) + half)), method


def delong_paired(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray,
                  groups: Sequence | np.ndarray | None = None, alpha: float = 0.05) -> PairedDelongResult:
    """Paired DeLong test of AUC(a) − AUC(b) on the same images with the cluster-robust covariance. Identical
    scores give delta 0, z 0, p 1; a non-zero delta with zero variance gives z and p NaN (not estimable)."""
    scores = np.stack([np.asarray(score_a, np.float64).reshape(-1), np.asarray(score_b, np.float64).reshape(-1)])
    y = _check_inputs(y_true, scores)
    auc, g = _cluster_influence(y, scores, _cluster_codes(groups, len(y)))
    diff = g[0] - g[1]
    delta, var_delta = float(auc[0] - auc[1]), float(diff @ diff)
    if var_delta <= 0.0 and delta == 0.0:
        return PairedDelongResult(float(auc[0]), float(auc[1]), 0.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    if not var_delta > 0.0:
        nan = float("nan")
        return PairedDelongResult(float(auc[0]), float(auc[1]), delta, var_delta, nan, nan, nan, nan)
    se = np.sqrt(var_delta)
    z = delta / se
    half = stats.norm.isf(alpha / 2) * se
    return PairedDelongResult(float(auc[0]), float(auc[1]), delta, var_delta, float(z),
                              float(2 * stats.norm.sf(abs(z))), float(delta - half), float(delta + half))


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values in the input order: monotone, capped at 1; NaNs stay NaN and are not
    counted among the hypotheses."""
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    adjusted = np.full(len(p), np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="mergesort")]
    m = len(order)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def mcnemar(decisions_a: np.ndarray, decisions_b: np.ndarray, truth: np.ndarray) -> McNemarResult:
    """Exact McNemar test on discordant correctness of two sets of decisions against `truth`:
    p = min(1, 2·P(Bin(b + c, ½) ≤ min(b, c))), 1 when there are no discordant pairs."""
    truth = np.asarray(truth).reshape(-1)
    right_a = np.asarray(decisions_a).reshape(-1) == truth
    right_b = np.asarray(decisions_b).reshape(-1) == truth
    b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    if b + c == 0:
        return McNemarResult(b, c, 1.0)
    return McNemarResult(b, c, float(min(1.0, 2 * stats.binom.cdf(min(b, c), b + c, 0.5))))
