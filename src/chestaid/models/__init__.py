"""Models: DenseNet-121 backbone, optional FPN and patient-data fusion, one module for both tasks."""

from chestaid.models.chestnet import ChestNet, build_model

__all__ = ["ChestNet", "build_model"]
