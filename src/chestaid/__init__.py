"""chestaid: chest X-ray classifiers (DenseNet-121 by default) that support triage; they do not diagnose.

The public API mirrors the command line (its functions live in chestaid.api). Importing chestaid is light and
changes nothing in your process (no matplotlib backend, Pillow limit, warning filter or logging handler is
touched); torch loads on first use.

>>> import chestaid
>>> predictor = chestaid.load("runs/nih")                      # doctest: +SKIP
>>> result = predictor.predict("chest.dcm")                    # or a 2-D numpy array, with age=, sex=, view=
>>> result.risk["Effusion"], result.decision["Effusion"]       # doctest: +SKIP
(0.41, True)
>>> cam = result.heatmap("Effusion")                           # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from chestaid.api import (calibrate, compare, evaluate, export, export_verdicts, fit_gate, import_model,
                          import_verdicts, import_xrv, load, localise, monitor, open_worklist, predict, prepare,
                          stats, synth, thresholds, train, triage_report)
from chestaid.core.errors import ChestaidError
from chestaid.core.version import __version__

__all__ = ["ChestaidError", "Prediction", "Predictor", "__version__", "calibrate", "compare", "evaluate", "export",
           "export_verdicts", "fit_gate", "import_model", "import_verdicts", "import_xrv", "load", "localise",
           "monitor", "open_worklist", "predict", "prepare", "stats", "synth", "thresholds", "train", "triage_report"]


def __getattr__(name: str) -> Any:  # the classes load torch: only when asked for
    if name == "Predictor":
        from chestaid.inference.predictor import Predictor

        return Predictor
    if name == "Prediction":
        from chestaid.inference.prediction import Prediction

        return Prediction
    raise AttributeError(f"module 'chestaid' has no attribute {name!r}")
