"""RUN/metrics/<split>_predictions.csv: per image what anyone needs to recompute every figure — image and patient
id, age/sex/view as the model saw them, and per finding the truth, the raw score (logit), the calibrated risk
score and the decision, at full float precision. Each row is the one result type's (inference.result.Scored)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from chestaid.data.patient import FIELDS, PatientData
from chestaid.inference.result import Scored


def _patient(row) -> PatientData:
    """A cache row's age/sex/view; what the table does not know reached the model as the neutral value."""
    age = pd.to_numeric(row.get("age"), errors="coerce")
    values = {"age": None if pd.isna(age) else float(age), "sex": row.get("sex") or None,
              "view": row.get("view") or None}
    return PatientData(values, {k: "table" if values[k] is not None else "assumed" for k in FIELDS})


def predictions_table(target, risk: np.ndarray, decisions: np.ndarray, labels: tuple[str, ...] | list[str],
                      thresholds: np.ndarray) -> pd.DataFrame:
    """`target`: scored rows of a cache (logits, y, rows); one output row per image."""
    labels, empty = tuple(labels), np.zeros(0, np.float32)
    rows = []
    for k, row in enumerate(target.rows.to_dict("records")):
        result = Scored(str(row["image_id"]), labels, target.logits[k], risk[k], thresholds, decisions[k],
                        _patient(row), empty)
        rows.append({"image_id": row["image_id"], "patient_id": row["patient_id"],
                     **result.prediction_row(target.y[k])})
    columns = ["image_id", "patient_id", *FIELDS,
               *(f"{n}_{kind}" for n in labels for kind in ("true", "logit", "risk", "decision"))]
    return pd.DataFrame(rows, columns=columns)
