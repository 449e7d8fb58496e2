"""Evaluation: metrics, thresholds fitted on validation data, calibrated risk scores, plots, the report."""
