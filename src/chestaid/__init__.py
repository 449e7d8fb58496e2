"""chestaid: DenseNet-121 chest X-ray classifiers that support triage; they do not diagnose."""

__version__ = "0.1.0"
