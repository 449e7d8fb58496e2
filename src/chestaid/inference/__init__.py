"""The one inference layer: a run's model, calibration, thresholds and input gate, applied to images."""
