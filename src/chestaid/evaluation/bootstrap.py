"""Bootstrap confidence intervals that resample patients, not images (one patient's images are not independent).

Each resample draws the test split's patients with replacement; an image then counts as often as its patient was
drawn. Per finding: ROC-AUC, and sensitivity and specificity at the operating point (the fitted thresholds);
overall: the mean ROC-AUC over findings. ROC-AUC: percentile intervals; a resample in which a finding has no
positives or no negatives gives no AUC for it and is left out of that interval (`resamples_used` says how many
were kept). Sensitivity and specificity: a Wilson score interval on the effective count (the count divided by the
Kish design effect that the patient bootstrap measures), because a percentile interval has zero width when the rate
is 0 or 1 (every one of 14 positives found is not proof of a sensitivity of 1.000).
Resamples are weight matrices, a block of them at a time, so memory stays bounded on NIH's 25,596 test images.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
BLOCK = 200  # resamples per weight matrix


def patient_codes(patients: np.ndarray) -> np.ndarray:
    """Each image's patient as an index 0…P−1."""
    return np.unique(np.asarray(patients).astype(str), return_inverse=True)[1].reshape(-1)


def patient_weights(codes: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """[resamples, images]: how often each image is counted in each patient-level resample (`codes`:
    patient_codes)."""
    n_patients = int(codes.max()) + 1 if len(codes) else 0
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_patients, size=(resamples, n_patients))
    counts = np.zeros((resamples, n_patients), np.float32)
    np.add.at(counts, (np.arange(resamples)[:, None], drawn), 1.0)
    return counts[:, codes]


def weighted_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC (ties count half) of one finding under each row of `weights` [R, n]; NaN where undefined."""
    order = np.argsort(score, kind="stable")
    s, pos = score[order], y[order].astype(bool)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie groups of equal scores
    w = weights[:, order]
    w_pos = np.add.reduceat(w * pos, starts, axis=1)
    w_neg = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(w_neg, axis=1) - w_neg  # negatives strictly below each group
    total_pos, total_neg = w_pos.sum(1), w_neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (w_pos * (below + 0.5 * w_neg)).sum(1) / (total_pos * total_neg)
    return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)


def _rate(hits: np.ndarray, members: np.ndarray, weights: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ (hits & members).astype(float)) / (weights @ members.astype(float))


def _interval(values: np.ndarray, level: float) -> dict:
    kept = values[np.isfinite(values)]
    if len(kept) == 0:
        return {"low": None, "high": None, "resamples_used": 0}
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(kept, [tail, 100 - tail])
    return {"low": float(low), "high": float(high), "resamples_used": int(len(kept))}


def wilson_interval(rate: float, n: float, level: float) -> tuple[float, float]:
    """Wilson score interval of a proportion `rate` observed on `n` (possibly effective, non-integer) trials."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * float(np.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)))
    return min(max(0.0, centre - half), rate), max(min(1.0, centre + half), rate)


def _rate_interval(hits: np.ndarray, members: np.ndarray, codes: np.ndarray, draws: np.ndarray,
                   level: float) -> dict:
    """Wilson interval of hits/members on the effective count n / design effect, the design effect being the
    bootstrap variance over the binomial one (at least 1; where the rate is 0 or 1 and the bootstrap cannot tell,
    the images per patient among the members, i.e. one patient's images counted as one)."""
    n = int(members.sum())
    kept = draws[np.isfinite(draws)]
    if n == 0 or len(kept) == 0:
        return {"low": None, "high": None, "resamples_used": int(len(kept)), "effective_n": 0.0}
    rate = float(hits[members].mean())
    cluster = n / len(np.unique(codes[members]))
    binomial = rate * (1 - rate) / n
    design = float(np.clip(np.var(kept) / binomial, 1.0, None)) if binomial > 0 else cluster
    low, high = wilson_interval(rate, n / design, level)
    return {"low": low, "high": high, "resamples_used": int(len(kept)), "effective_n": round(n / design, 1)}


def confidence_intervals(y: np.ndarray, scores: np.ndarray, decisions: np.ndarray, patients: np.ndarray,
                         labels: tuple[str, ...], resamples: int = RESAMPLES, level: float = LEVEL,
                         seed: int = 0) -> dict:
    """Patient-level intervals: per finding (roc_auc, sensitivity, specificity at the operating point) and the
    mean ROC-AUC over the findings that have an AUC on the whole set."""
    y, decisions, scores = np.asarray(y).astype(bool), np.asarray(decisions).astype(bool), np.asarray(scores)
    draws = {k: [] for k in ("roc_auc", "sensitivity", "specificity")}
    rng, codes = np.random.default_rng(seed), patient_codes(patients)
    for start in range(0, resamples, BLOCK):
        weights = patient_weights(codes, min(BLOCK, resamples - start), int(rng.integers(2 ** 31)))
        draws["roc_auc"].append(np.stack([weighted_auc(y[:, i], scores[:, i], weights)
                                          for i in range(len(labels))], 1))
        draws["sensitivity"].append(np.stack([_rate(decisions[:, i], y[:, i], weights)
                                              for i in range(len(labels))], 1))
        draws["specificity"].append(np.stack([_rate(~decisions[:, i], ~y[:, i], weights)
                                              for i in range(len(labels))], 1))
    draws = {k: np.concatenate(v) for k, v in draws.items()}  # [resamples, labels]
    per_finding = {name: {"roc_auc": _interval(draws["roc_auc"][:, i], level),
                          "sensitivity": _rate_interval(decisions[:, i], y[:, i], codes,
                                                        draws["sensitivity"][:, i], level),
                          "specificity": _rate_interval(~decisions[:, i], ~y[:, i], codes,
                                                        draws["specificity"][:, i], level)}
                   for i, name in enumerate(labels)}
    defined = [i for i in range(len(labels)) if 0 < y[:, i].sum() < len(y)]
    with np.errstate(invalid="ignore"):
        mean_auc = np.nanmean(draws["roc_auc"][:, defined], axis=1) if defined else np.full(resamples, np.nan)
    return {"method": "patients resampled with replacement; ROC-AUC: percentile bootstrap; sensitivity and "
                      "specificity: Wilson score interval on the effective count (bootstrap design effect)",
            "level": level,
            "resamples": resamples, "seed": seed, "patients": int(codes.max()) + 1 if len(codes) else 0,
            "mean_roc_auc": _interval(mean_auc, level), "per_finding": per_finding}


def with_interval(values: dict, name: str) -> str:
    """'0.912 (0.884–0.936)' from `values[name]` and its `name_ci_low`, `name_ci_high`; '–' when undefined."""
    value, low, high = values.get(name), values.get(f"{name}_ci_low"), values.get(f"{name}_ci_high")
    if not isinstance(value, (int, float)) or value != value:
        return "–"
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or low != low or high != high:
        return f"{value:.3f}"
    return f"{value:.3f} ({low:.3f}–{high:.3f})"
