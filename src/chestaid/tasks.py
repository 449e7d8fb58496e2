"""The two tasks chestaid knows: the 14-finding NIH model and the binary pneumonia triage model."""

from __future__ import annotations

from dataclasses import dataclass

NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
    "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax",
)
NO_FINDING = "No Finding"
PNEUMONIA_LABELS: tuple[str, ...] = ("Pneumonia",)

# The NIH box file spells one finding differently from the label CSV.
BOX_LABEL_ALIASES = {"Infiltrate": "Infiltration"}


@dataclass(frozen=True)
class Task:
    """A task: its name and the ordered label names of its multi-hot target."""

    name: str
    labels: tuple[str, ...]

    @property
    def num_outputs(self) -> int:
        return len(self.labels)


TASKS = {"nih": Task("nih", NIH_FINDINGS), "pneumonia": Task("pneumonia", PNEUMONIA_LABELS)}


def get_task(name: str) -> Task:
    """Look a task up by name ('nih' or 'pneumonia')."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}") from None
