"""Why an image gets no score, as a kind a program can test (the reason beside it is for a person)."""

from __future__ import annotations

from enum import Enum


class Refusal(str, Enum):
    """NONE: scored. VIEW: its DICOM tags say it is another image of a chest study, one this model does not read (a
    lateral or decubitus view, a CT scout): a normal part of a study, not an alarm. HEADER: its DICOM tags say it is
    not what the model was made for (another body part; another modality outside a chest study). GATE: the input gate
    found it unlike the training images (a distance over the threshold)."""

    NONE = ""
    VIEW = "view"
    HEADER = "header"
    GATE = "input gate"


GATE_REASON = "unlike the training images"  # how the input gate's reason begins (inference.gate)
