"""RUN/metrics/<split>_predictions.csv: per image what anyone needs to recompute every figure — image and patient
id, age/sex/view as the model saw them, and per finding the truth, the raw score (logit), the calibrated risk
score and the decision, at full float precision."""

from __future__ import annotations

import numpy as np
import pandas as pd

PATIENT_COLUMNS = ("age", "sex", "view")


def predictions_table(target, risk: np.ndarray, decisions: np.ndarray, labels: tuple[str, ...] | list[str]
                      ) -> pd.DataFrame:
    """`target`: scored rows of a cache (logits, y, rows); one output row per image."""
    rows = target.rows
    table = rows[["image_id", "patient_id"]].copy()
    for column in PATIENT_COLUMNS:  # the cache's values; unknown ones reach the model as the neutral default
        table[column] = rows[column] if column in rows else None
    for i, finding in enumerate(labels):
        table[f"{finding}_true"] = target.y[:, i]
        table[f"{finding}_logit"] = np.asarray(target.logits[:, i], dtype=np.float64)
        table[f"{finding}_risk"] = np.asarray(risk[:, i], dtype=np.float64)
        table[f"{finding}_decision"] = decisions[:, i].astype(int)
    return table
