"""Why an image gets no score, as a kind a program can test (the reason beside it is for a person)."""

from __future__ import annotations

from enum import Enum


class Refusal(str, Enum):
    """NONE: scored. HEADER: its DICOM tags say it is not what the model was made for (a lateral view, another body
    part or modality). GATE: the input gate found it unlike the training images (a distance over the threshold)."""

    NONE = ""
    HEADER = "header"
    GATE = "input gate"


GATE_REASON = "unlike the training images"  # how the input gate's reason begins (inference.gate)
