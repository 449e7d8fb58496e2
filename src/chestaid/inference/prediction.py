"""One image's result for the Python API: everything keyed by finding name, plus the input gate's verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from chestaid.core.errors import ChestaidError

if TYPE_CHECKING:
    from chestaid.inference.predictor import Predictor
    from chestaid.inference.result import Scored


@dataclass
class Prediction:
    """What `Predictor.predict` returns.

    risk       {finding: calibrated risk score in [0, 1]} — a risk score for ranking and triage, not a
               clinical probability; uncalibrated runs give the plain sigmoid (`calibrated` says which)
    decision   {finding: True when the risk score reaches the run's threshold} (`thresholded`: fitted on
               validation data; otherwise 0.5)
    threshold  {finding: that threshold};  raw {finding: sigmoid of the logit, before calibration}
    patient    age/sex/view the model was given; `patient_source` says "tag", "given" or "assumed" per value
    refused    True when the input gate refused the image (`refusal` says why): its scores exist but are not
               a result — the model was not made for this image
    gate_distance  distance from the training images (None when the run has no fitted gate)

    `heatmap(finding)` makes the Grad-CAM map for one finding: qualitative, it shows where the network looked,
    not where a lesion is."""

    source: str
    risk: dict[str, float]
    decision: dict[str, bool]
    threshold: dict[str, float]
    raw: dict[str, float]
    patient: dict
    patient_source: dict[str, str]
    refused: bool
    refusal: str
    gate_distance: float | None
    calibrated: bool
    thresholded: bool
    image: np.ndarray = field(repr=False)  # the uint8 image the model saw (before its centre crop)
    _scored: "Scored" = field(repr=False)
    _predictor: "Predictor" = field(repr=False)

    @classmethod
    def of(cls, scored: "Scored", predictor: "Predictor") -> "Prediction":
        labels = predictor.task.labels
        return cls(
            source=scored.path,
            risk={n: float(v) for n, v in zip(labels, scored.risk)},
            decision={n: bool(v) for n, v in zip(labels, scored.decisions)},
            threshold={n: float(v) for n, v in zip(labels, scored.thresholds)},
            raw={n: float(v) for n, v in zip(labels, scored.raw)},
            patient=dict(scored.data.values), patient_source=dict(scored.data.sources),
            refused=scored.refused, refusal=scored.refusal, gate_distance=scored.distance,
            calibrated=predictor.calibrated, thresholded=predictor.thresholded,
            image=scored.image, _scored=scored, _predictor=predictor)

    @property
    def flagged(self) -> list[str]:
        """Findings at or above their threshold, highest risk first (empty for a refused image)."""
        if self.refused:
            return []
        return sorted((n for n, d in self.decision.items() if d), key=lambda n: -self.risk[n])

    def heatmap(self, finding: str) -> np.ndarray:
        """The Grad-CAM map [S, S] in [0, 1] for `finding`, over `image` (qualitative)."""
        labels = list(self.risk)
        if finding not in labels:
            raise ChestaidError(f"unknown finding {finding!r}; this model's findings: {', '.join(labels)}")
        return self._predictor.explainer().maps(self.image[None], self._scored.tabular[None], [labels.index(finding)])[0]
