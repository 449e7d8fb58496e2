"""DeLong AUC inference (clustered by patient), the paired test, Holm and McNemar against published values and pROC."""

from __future__ import annotations

import csv
import shutil
import subprocess

import numpy as np
import pytest
from scipy.special import expit, logit

from chestaid.evaluation.delong import auc_interval, delong_auc, delong_paired, holm, mcnemar, midranks


def hanley_mcneil_ct() -> tuple[np.ndarray, np.ndarray]:
    """Hanley & McNeil (1982) CT ratings 1–5: 58 normals (33/6/6/11/2) and 51 abnormals (3/2/2/11/33)."""
    ratings = np.arange(1, 6)
    normals = np.repeat(ratings, [33, 6, 6, 11, 2])
    abnormals = np.repeat(ratings, [3, 2, 2, 11, 33])
    return np.r_[np.zeros(58), np.ones(51)], np.r_[normals, abnormals].astype(float)


def test_midranks_share_ranks_of_ties():
    assert midranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_hanley_mcneil_ct_ratings():
    y, score = hanley_mcneil_ct()
    result = delong_auc(y, score)
    assert result.auc == pytest.approx(0.8931711, abs=1e-7)
    assert result.variance == pytest.approx(0.00094399, abs=1e-8)
    assert result.se == pytest.approx(0.030724, abs=1e-6)
    assert (result.n_pos, result.n_neg, result.n_clusters) == (51, 58, 109)
    low, high, method = auc_interval(result, scale="plain")
    assert (round(low, 3), round(high, 4), method) == (0.833, 0.9534, "delong-plain")
    low, high, method = auc_interval(result)
    half = 1.959963985 * 0.0307244 / (0.8931711 * (1 - 0.8931711))
    assert low == pytest.approx(expit(logit(0.8931711) - half), abs=1e-6)
    assert high == pytest.approx(expit(logit(0.8931711) + half), abs=1e-6)
    assert method == "delong-logit" and low < 0.833 and high < 0.9534


R_SCRIPT = r"""
suppressMessages(library(pROC))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
out <- NULL
for (k in sort(unique(d$set))) {
  s <- d[d$set == k, ]
  r1 <- roc(s$y, s$a, direction = "<", levels = c(0, 1), quiet = TRUE)
  r2 <- roc(s$y, s$b, direction = "<", levels = c(0, 1), quiet = TRUE)
  t <- roc.test(r1, r2, method = "delong", paired = TRUE)
  out <- rbind(out, c(k, as.numeric(auc(r1)), var(r1, method = "delong"), as.numeric(auc(r2)),
                      var(r2, method = "delong"), unname(t$statistic), t$p.value))
}
write.table(format(out, digits = 17), args[2], sep = ",", row.names = FALSE, col.names = FALSE, quote = FALSE)
"""


@pytest.mark.peers
def test_matches_proc(tmp_path):
    rscript = shutil.which("Rscript")
    if rscript is None:
        pytest.skip("Rscript is not installed")
    if subprocess.run([rscript, "-e", "library(pROC)"], capture_output=True, timeout=120).returncode != 0:
        pytest.skip("R package pROC is not installed")
    rng = np.random.default_rng(11)
    sets = []
    for n, prevalence, shift in [(40, 0.3, 0.8), (75, 0.2, 1.5), (120, 0.5, 0.3), (33, 0.4, 0.0)]:
        y = (rng.random(n) < prevalence).astype(int)
        y[:2] = [0, 1]
        a = np.round(rng.normal(size=n) + shift * y, 1)  # rounded: ties within and across classes
        b = np.round(0.6 * a + rng.normal(size=n) + 0.5 * shift * y, 1)
        sets.append((y, a, b))
    data, answers = tmp_path / "scores.csv", tmp_path / "proc.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["set", "y", "a", "b"])
        for k, (y, a, b) in enumerate(sets):
            writer.writerows([k, int(yi), repr(float(ai)), repr(float(bi))] for yi, ai, bi in zip(y, a, b))
    script = tmp_path / "oracle.R"
    script.write_text(R_SCRIPT)
    subprocess.run([rscript, str(script), str(data), str(answers)], check=True, capture_output=True, timeout=300)
    expected = np.loadtxt(answers, delimiter=",", ndmin=2)
    assert len(expected) == len(sets)
    for row, (y, a, b) in zip(expected, sets):
        ra, rb, paired = delong_auc(y, a), delong_auc(y, b), delong_paired(y, a, b)
        got = [ra.auc, ra.variance, rb.auc, rb.variance, paired.z, paired.p]
        np.testing.assert_allclose(got, row[1:], rtol=0, atol=1e-9)
        assert paired.auc_a == ra.auc and paired.auc_b == rb.auc


def patients_with_images(seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(60) < 0.35).astype(int)
    score = np.round(rng.normal(size=60) + y, 1)
    return y, score, np.arange(60)


def test_clustered_equals_plain_with_one_image_per_patient():
    y, score, patients = patients_with_images()
    plain, clustered = delong_auc(y, score), delong_auc(y, score, groups=[f"p{i}" for i in patients])
    assert clustered.auc == plain.auc
    assert clustered.variance == pytest.approx(plain.variance, rel=1e-12, abs=0)
    b = score + np.random.default_rng(1).normal(size=60)
    assert delong_paired(y, score, b, groups=patients) == pytest.approx(delong_paired(y, score, b), rel=1e-12)


def test_duplicated_images_leave_clustered_variance_unchanged():
    y, score, patients = patients_with_images()
    y2, score2, patients2 = np.repeat(y, 2), np.repeat(score, 2), np.repeat(patients, 2)
    single = delong_auc(y, score, groups=patients)
    duplicated = delong_auc(y2, score2, groups=patients2)
    naive = delong_auc(y2, score2)
    assert duplicated.n_clusters == 60 and naive.n_clusters == 120
    assert duplicated.auc == pytest.approx(single.auc, abs=1e-15)
    assert duplicated.variance == pytest.approx(single.variance, abs=1e-12)
    assert naive.variance < 0.6 * single.variance


def test_mixed_class_patients_widen_the_interval():
    rng = np.random.default_rng(2)
    patient_effect = rng.normal(scale=2.0, size=40)
    patients = np.repeat(np.arange(40), 3)
    y = (rng.random(120) < 0.4).astype(int)
    score = patient_effect[patients] + 0.7 * y + rng.normal(size=120)
    clustered, naive = delong_auc(y, score, groups=patients), delong_auc(y, score)
    assert clustered.auc == naive.auc
    assert clustered.variance > naive.variance
    assert auc_interval(clustered)[2] == "delong-clustered-logit"


def test_perfect_separation_interval_is_not_zero_width():
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(7), np.zeros(100)]
    score = np.r_[rng.uniform(3, 4, 7), rng.uniform(-3, 2.9, 100)]
    result = delong_auc(y, score)
    assert result.auc == 1.0 and result.variance == 0.0
    low, high, method = auc_interval(result)
    assert 0.5 < low < 0.95 and high == 1.0 and high - low > 0
    assert low == pytest.approx(0.025 ** (1 / 7))
    assert method == "exact-rank-bound (perfect separation)"
    low0, high0, _ = auc_interval(delong_auc(y, -score))
    assert low0 == 0.0 and high0 == pytest.approx(1 - low)


def test_paired_test_of_a_score_with_itself():
    y, score, patients = patients_with_images()
    result = delong_paired(y, score, score, groups=patients)
    assert result.auc_a == result.auc_b == delong_auc(y, score).auc
    assert (result.delta, result.var_delta, result.z, result.p) == (0.0, 0.0, 0.0, 1.0)


def test_paired_test_detects_a_better_score():
    rng = np.random.default_rng(4)
    y = (rng.random(200) < 0.5).astype(int)
    strong, weak = rng.normal(size=200) + 2 * y, rng.normal(size=200) + 0.2 * y
    result = delong_paired(y, strong, weak)
    assert result.delta > 0.2 and result.z > 3 and result.p < 1e-3 and result.ci_low > 0


def test_holm_known_example():
    adjusted = holm([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    assert np.isnan(adjusted[4])
    np.testing.assert_allclose(holm([0.5, 0.4, 0.01]), [0.8, 0.8, 0.03], rtol=1e-12)  # monotone
    assert holm([0.6, 0.7]).tolist() == [1.0, 1.0]  # capped


def test_mcnemar_known_example():
    truth = np.ones(20, int)
    a = np.r_[np.ones(12), np.ones(1), np.zeros(6), np.zeros(1)]
    b = np.r_[np.ones(12), np.zeros(1), np.ones(6), np.zeros(1)]
    result = mcnemar(a, b, truth)
    assert (result.b, result.c) == (1, 6)
    assert result.p == pytest.approx(0.125, abs=1e-12)  # 2 · (1 + 7) / 2**7
    assert mcnemar(a, a, truth) == (0, 0, 1.0)
