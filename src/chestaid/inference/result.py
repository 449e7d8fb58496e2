"""The one result type of scoring an image, and its three serialisations: the HTTP API's JSON, a worklist row
and a row of the predictions table. The Python API's `Prediction` (keyed by finding) is made from it too."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from chestaid.core.refusals import Refusal
from chestaid.data.patient import FIELDS, IDENTIFIERS, PatientData


@dataclass
class Scored:
    """One image's result: per finding (in `labels` order) the logit, the calibrated risk score, its threshold
    and the decision; the patient data used, where each value came from, and DICOM identifiers; the input gate's
    verdict (`refusal` is "" when the image passed, else the one-line reason; `distance` is None when the run has
    no fitted gate). A refused image's scores exist but must not be shown as a result."""

    path: str
    labels: tuple[str, ...]
    logits: np.ndarray
    risk: np.ndarray
    thresholds: np.ndarray
    decisions: np.ndarray
    data: PatientData
    tabular: np.ndarray  # the patient vector the model was given
    image: np.ndarray | None = None  # the preprocessed uint8 image (cache size), for heat maps
    refusal: str = ""
    distance: float | None = None
    refusal_kind: Refusal = Refusal.NONE  # what refused it (its tags, or the input gate), for programs

    @property
    def refused(self) -> bool:
        return bool(self.refusal)

    @property
    def raw(self) -> np.ndarray:
        """Sigmoid of the logit, before calibration."""
        return expit(self.logits)

    @property
    def patient(self) -> dict:
        return self.data.values

    @property
    def assumed(self) -> list[str]:
        return self.data.assumed

    @property
    def top(self) -> int:
        """Index of the highest risk score."""
        return int(np.argmax(self.risk))

    @property
    def flagged(self) -> list[str]:
        """Findings at or above their threshold, in label order."""
        return [self.labels[i] for i in np.flatnonzero(self.decisions)]

    def findings(self) -> dict[str, dict]:
        """{finding: {logit, raw_score, risk_score, threshold, decision}} at full float precision."""
        raw = self.raw
        return {name: {"logit": float(self.logits[i]), "raw_score": float(raw[i]), "risk_score": float(self.risk[i]),
                       "threshold": float(self.thresholds[i]), "decision": int(self.decisions[i])}
                for i, name in enumerate(self.labels)}

    def to_json(self) -> dict:
        """The HTTP API's per-image answer (the page adds the run's own facts: run, backend, calibrated, gate)."""
        return {"outside_gate": self.refused, **({"refused": self.refusal} if self.refused else {}),
                "findings": self.findings(), "patient": dict(self.patient), "assumed": self.assumed,
                "sources": dict(self.data.sources)}

    def worklist_row(self) -> dict:
        """A row of `predict`'s worklist CSV (ranked images)."""
        top = self.top
        row = {"file": self.path, "risk": float(self.risk[top]), "top_finding": self.labels[top],
               "flagged": "|".join(self.flagged),
               "_tie_break": float(self.logits[top])}  # a saturated calibrator ties scores; the logit still ranks
        for name, found in self.findings().items():
            row[f"{name}_risk"] = found["risk_score"]
            row[f"{name}_decision"] = found["decision"]
        row.update({key: self.data.values[key] for key in FIELDS})
        row.update({f"{key}_source": self.data.sources[key] for key in FIELDS})
        row.update({key: self.data.ids.get(key, "") for key in IDENTIFIERS})
        row["gate_distance"] = self.distance
        return row

    def refused_row(self) -> dict:
        """A row of `predict`'s refused.csv: the file, why, and its identifiers (no scores: not a result)."""
        return {"file": self.path, "reason": self.refusal, "gate_distance": self.distance,
                **{key: self.data.ids.get(key, "") for key in IDENTIFIERS}}

    def prediction_row(self, truth: np.ndarray | None = None) -> dict:
        """A row of `evaluate`'s predictions table: age/sex/view as the model saw them, per finding the truth
        (when given), the logit, the calibrated risk and the decision."""
        row = {key: self.data.values[key] for key in FIELDS}
        for i, (name, found) in enumerate(self.findings().items()):
            if truth is not None:
                row[f"{name}_true"] = int(truth[i])
            row.update({f"{name}_logit": found["logit"], f"{name}_risk": found["risk_score"],
                        f"{name}_decision": found["decision"]})
        return row


def worklist_columns(labels: list[str] | tuple[str, ...]) -> list[str]:
    """The worklist's columns, in order (the header is written even when nothing was ranked)."""
    findings = [f"{name}_{kind}" for name in labels for kind in ("risk", "decision")]
    return ["file", "risk", "top_finding", "flagged", "_tie_break", *findings, *FIELDS,
            *(f"{key}_source" for key in FIELDS), *IDENTIFIERS, "gate_distance"]
