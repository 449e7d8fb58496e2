"""The figures of SPEC A19 and B7 for a run: RUN/plots/*.png (matplotlib's object API)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from chestaid.data.balance import balance
from chestaid.data.stats import plot_metadata
from chestaid.evaluation.metrics import confusion_matrices
from chestaid.core.figures import save, subplots
from chestaid.reporting.reviewer_plots import decision_curves, reliability_wilson
from chestaid.inference.calibration import Calibration


def _curves(kind: str, y: np.ndarray, scores: np.ndarray, labels, path: Path) -> Path:
    fig, ax = subplots(figsize=(7.5, 6))
    for i, name in enumerate(labels):
        if not 0 < y[:, i].sum() < len(y):
            continue
        if kind == "roc":
            fpr, tpr, _ = roc_curve(y[:, i], scores[:, i])
            ax.plot(fpr, tpr, lw=1.2, label=f"{name} ({roc_auc_score(y[:, i], scores[:, i]):.2f})")
        else:
            precision, recall, _ = precision_recall_curve(y[:, i], scores[:, i])
            ax.plot(recall, precision, lw=1.2, label=f"{name} (prevalence {y[:, i].mean():.2f})")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curves (AUC)")
    else:
        ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curves")
    ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
    return save(fig, path)


def _confusion(y: np.ndarray, decisions: np.ndarray, labels, path: Path) -> Path:
    matrices = confusion_matrices(y, decisions)
    cols = min(len(labels), 5)
    rows = int(np.ceil(len(labels) / cols))
    fig, axes = subplots(rows, cols, figsize=(2.6 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name, m in zip(axes.ravel(), labels, matrices):
        ax.axis("on")
        ax.imshow(m, cmap="Blues")
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, str(v), ha="center", va="center", fontsize=10,
                    color="white" if v > m.max() / 2 else "black")
        ax.set_xticks([0, 1], ["pred 0", "pred 1"], fontsize=7)
        ax.set_yticks([0, 1], ["true 0", "true 1"], fontsize=7)
        ax.set_title(name, fontsize=8)
    return save(fig, path)


def _examples(cache, rows: pd.DataFrame, y, scores, decisions, labels, path: Path, count: int = 12) -> Path:
    rng = np.random.default_rng(0)
    picks = rng.choice(len(rows), size=min(count, len(rows)), replace=False) if len(rows) else []
    cols = 4
    fig, axes = subplots(int(np.ceil(len(picks) / cols)) or 1, cols, figsize=(3.2 * cols, 3.6 * max(1, len(picks) // cols)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, k in zip(axes.ravel(), picks):
        ax.imshow(cache.images[int(rows["row"].iloc[k])], cmap="gray", vmin=0, vmax=255)
        truth = [labels[i] for i in np.flatnonzero(y[k])] or ["none"]
        predicted = [f"{labels[i]} {scores[k, i]:.2f}" for i in np.flatnonzero(decisions[k])] or ["none"]
        ax.set_title(f"true: {', '.join(truth)}\npred: {', '.join(predicted)}", fontsize=7)
    fig.suptitle("Examples (risk scores of the findings above their thresholds)", fontsize=9)
    return save(fig, path)


def _training(train_log: Path, out: Path) -> list[Path]:
    if not train_log.is_file():
        return []
    log = pd.read_csv(train_log)
    fig, ax = subplots(figsize=(6, 4))
    ax.plot(log["epoch"], log["train_loss"], "o-", label="train loss")
    ax.plot(log["epoch"], log["val_loss"], "o-", label="validation loss")
    ax.set(xlabel="epoch", ylabel="BCE loss (pos_weight)", title="Loss per epoch")
    ax.legend()
    written = [save(fig, out / "training_loss.png")]
    fig, ax = subplots(figsize=(6, 4))
    for column, name in (("precision_mean", "mean precision"), ("recall_mean", "mean recall"), ("f1_mean", "mean F1"),
                         ("macro_f1", "macro F1"), ("auroc_mean", "mean AUROC")):
        ax.plot(log["epoch"], log[column], "o-", label=name)
    ax.set(xlabel="epoch", ylim=(0, 1.02), title="Validation metrics per epoch (decisions at 0.5)")
    ax.legend(fontsize=8)
    written.append(save(fig, out / "training_metrics.png"))
    return written


def _reliability(y: np.ndarray, logits: np.ndarray, calibration: Calibration, labels, title: str, path: Path) -> Path:
    """Pooled over findings: observed frequency against mean score, before and after calibration."""
    fig, ax = subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
    for name, scores in (("before (sigmoid of logits)", Calibration.identity(labels)(logits)),
                         ("after (chosen calibrators)", calibration(logits))):
        frac, mean = calibration_curve(y.ravel(), scores.ravel(), n_bins=15, strategy="uniform")
        ax.plot(mean, frac, "o-", label=name)
    ax.set(xlabel="mean risk score in bin", ylabel="observed frequency", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    return save(fig, path)


def write_plots(paths, predictor, cache, target, scores, decisions, val_report) -> list[Path]:
    """Every figure of the run into RUN/plots/; returns their paths. `cache` is the run's own (data figures);
    the examples come from the cache `target` was scored on (a recalibration cohort for val_report)."""
    out = paths.plots
    out.mkdir(exist_ok=True)
    labels, name = predictor.task.labels, "test" if target is not val_report else "val_report"
    table = cache.table
    train = table[table["split"] == "train"]
    balanced = (train, balance(train, labels, predictor.cfg.data.balance, predictor.cfg.train.seed)) \
        if predictor.cfg.data.balance != "none" else None
    written = plot_metadata(table, labels, out, balanced)
    written += _training(paths.train_log, out)
    written.append(_curves("roc", target.y, scores, labels, out / "roc_curves.png"))
    written.append(_curves("pr", target.y, scores, labels, out / "pr_curves.png"))
    written.append(_confusion(target.y, decisions, labels, out / "confusion_matrices.png"))
    written.append(_examples(target.cache, target.rows, target.y, scores, decisions, labels, out / "examples.png"))
    written.append(_reliability(val_report.y, val_report.logits, predictor.calibration, labels,
                                "Reliability on val_report", out / "reliability_val_report.png"))
    if target is not val_report:
        written.append(_reliability(target.y, target.logits, predictor.calibration, labels,
                                    f"Reliability on {name}", out / f"reliability_{name}.png"))
    written.append(reliability_wilson(target.y, scores, name, out / f"reliability_wilson_{name}.png"))
    curves = decision_curves(target.y, scores, labels, name, out / f"decision_curves_{name}.png")
    return written + ([curves] if curves else [])
