"""`chestaid compare RUN_A RUN_B`: is run B better than run A on the same test images?

Read from each run's `metrics/<split>_predictions.csv` (written by `evaluate`, raw scores at full precision),
joined on image id (refused when the image sets or their truth differ). Per shared finding: each AUC on the raw
score, the difference B − A with its paired DeLong interval clustered by patient, z and p, Holm-adjusted over
findings; McNemar on each run's decisions at its own operating point. The mean-AUROC difference gets a paired
patient-bootstrap interval. Writes RUN_A/compare/<RUN_B's name>/comparison.json and comparison.html."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import write_json
from chestaid.core.run_paths import RunPaths
from chestaid.evaluation.bootstrap import patient_codes, patient_weights, weighted_auc
from chestaid.evaluation.delong import delong_paired, holm, mcnemar
from chestaid.reporting.comparison import write_comparison_page


def _predictions(paths: RunPaths, split: str) -> pd.DataFrame:
    file = paths.metrics / f"{split}_predictions.csv"
    if not file.is_file():
        raise ChestaidError(f"{paths.root}: no {file.name}; run `chestaid evaluate {paths.root}` first")
    table = pd.read_csv(file, dtype={"image_id": str, "patient_id": str})
    if not any(c.endswith("_logit") for c in table.columns):
        raise ChestaidError(f"{file}: has no raw scores (made by an older chestaid); run `chestaid evaluate "
                            f"{paths.root}` again")
    return table


def _join(a: pd.DataFrame, b: pd.DataFrame, run_a: RunPaths, run_b: RunPaths) -> tuple[pd.DataFrame, list[str]]:
    only_a, only_b = set(a["image_id"]) - set(b["image_id"]), set(a["image_id"]) ^ set(b["image_id"])
    only_b -= only_a
    if only_a or only_b or len(a) != len(b):
        raise ChestaidError(f"{run_b.root}: evaluated on other images than {run_a.root} ({len(only_a)} only in A, "
                            f"{len(only_b)} only in B); compare runs evaluated on the same test images")
    findings = [c[:-6] for c in a.columns if c.endswith("_logit") and c in b.columns]
    if not findings:
        raise ChestaidError(f"{run_a.root} and {run_b.root} share no finding")
    joined = a.merge(b, on="image_id", suffixes=("_a", "_b"), validate="one_to_one")
    for name in findings:
        if not (joined[f"{name}_true_a"] == joined[f"{name}_true_b"]).all():
            raise ChestaidError(f"{run_b.root}: its truth for {name} differs from {run_a.root}'s on the same images")
    return joined, findings


def compare_runs(run_a: str | Path, run_b: str | Path, split: str = "test", resamples: int = 2000,
                 seed: int = 0, alpha: float = 0.05) -> dict:
    """The comparison of B against A (differences are B − A); see the module's docstring."""
    paths_a, paths_b = RunPaths(run_a).require(), RunPaths(run_b).require()
    joined, findings = _join(_predictions(paths_a, split), _predictions(paths_b, split), paths_a, paths_b)
    patients = joined["patient_id_a"].to_numpy()
    rows = {}
    for name in findings:
        y = joined[f"{name}_true_a"].to_numpy().astype(int)
        if y.min() == y.max():
            rows[name] = {"positives": int(y.sum()), "images": len(y), "note": "one class only: no AUC"}
            continue
        r = delong_paired(y, joined[f"{name}_logit_b"].to_numpy(float), joined[f"{name}_logit_a"].to_numpy(float),
                          patients, alpha)
        test = mcnemar(joined[f"{name}_decision_a"].to_numpy(bool), joined[f"{name}_decision_b"].to_numpy(bool),
                       y.astype(bool))
        rows[name] = {"auc_a": r.auc_b, "auc_b": r.auc_a, "delta": r.delta, "ci_low": r.ci_low,
                      "ci_high": r.ci_high, "z": r.z, "p": r.p, "positives": int(y.sum()), "images": len(y),
                      "mcnemar": {"a_right_b_wrong": test.b, "b_right_a_wrong": test.c, "p": test.p}}
    tested = [n for n in findings if "p" in rows[n]]
    for name, adjusted in zip(tested, holm([rows[n]["p"] for n in tested])):
        rows[name]["p_holm"] = float(adjusted)
    result = {"run_a": str(paths_a.root), "run_b": str(paths_b.root), "split": split, "images": int(len(joined)),
              "patients": int(len(set(patients))), "differences": "B - A, on the raw score (logit)",
              "ci_method": "paired DeLong clustered by patient (Obuchowski), Wald", "findings": rows,
              "mean": _mean_difference(joined, tested, patients, resamples, seed, alpha)}
    out = paths_a.compare / paths_b.root.name
    write_json(out / "comparison.json", result)
    result["page"] = str(write_comparison_page(out / "comparison.html", result))
    return result


def _mean_difference(joined: pd.DataFrame, findings: list[str], patients: np.ndarray, resamples: int, seed: int,
                     alpha: float) -> dict:
    """Mean AUROC over findings of each run and B − A with a paired patient-bootstrap percentile interval."""
    if not findings:
        return {"note": "no finding with positives and negatives"}
    weights = patient_weights(patient_codes(patients), resamples, seed)
    ones = np.ones((1, len(joined)), np.float32)

    def mean_auc(side: str, w: np.ndarray) -> np.ndarray:
        return np.nanmean(np.stack([weighted_auc(joined[f"{n}_true_a"].to_numpy(), joined[f"{n}_logit_{side}"]
                                                 .to_numpy(float), w) for n in findings]), axis=0)

    a, b = mean_auc("a", ones)[0], mean_auc("b", ones)[0]
    draws = mean_auc("b", weights) - mean_auc("a", weights)
    draws = draws[np.isfinite(draws)]
    low, high = np.percentile(draws, [50 * alpha, 100 - 50 * alpha]) if len(draws) else (np.nan, np.nan)
    return {"auc_a": float(a), "auc_b": float(b), "delta": float(b - a), "ci_low": float(low),
            "ci_high": float(high), "findings": len(findings), "resamples": int(len(draws)),
            "ci_method": "paired patient bootstrap (percentile)"}
