"""Tasks as data: a name, the ordered labels of the model's outputs, and whether it is binary or multi-label.

Two tasks are built in (the 14-finding NIH model and the binary pneumonia triage model); any other task is
defined by its data (`chestaid prepare --table`, one 0/1 column per label) and recorded in the cache and the
run's config.yaml, so nothing else in chestaid needs to know its name.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
    "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax",
)
NO_FINDING = "No Finding"
PNEUMONIA_LABELS: tuple[str, ...] = ("Pneumonia",)

# The NIH box file spells one finding differently from the label CSV.
BOX_LABEL_ALIASES = {"Infiltrate": "Infiltration"}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Task(BaseModel):
    """A task: its name, the ordered label names of its multi-hot target, and its kind.

    `binary`: one label, one sigmoid output (e.g. pneumonia vs. not). `multi-label`: several labels, each an
    independent sigmoid output, so an image may have any number of them (e.g. the 14 NIH findings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    labels: tuple[str, ...]
    kind: Literal["binary", "multi-label"]

    @model_validator(mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        if isinstance(value, str):  # `task: nih` in a config names a built-in task
            return get_task(value).model_dump()
        if isinstance(value, dict) and "kind" not in value and "labels" in value:
            return {**value, "kind": "binary" if len(value["labels"]) == 1 else "multi-label"}
        return value

    @model_validator(mode="after")
    def _check(self) -> "Task":
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"task name {self.name!r}: use letters, digits, '_', '.', '-'")
        if not self.labels:
            raise ValueError("a task needs at least one label")
        duplicated = sorted({n for n in self.labels if self.labels.count(n) > 1})
        if duplicated:
            raise ValueError(f"task {self.name!r}: label(s) {duplicated} given twice")
        if (self.kind == "binary") != (len(self.labels) == 1):
            raise ValueError(f"task {self.name!r}: a binary task has exactly one label, a multi-label task more "
                             f"(got {len(self.labels)} for {self.kind})")
        return self

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    @property
    def binary(self) -> bool:
        return self.kind == "binary"


TASKS = {"nih": Task(name="nih", labels=NIH_FINDINGS, kind="multi-label"),
         "pneumonia": Task(name="pneumonia", labels=PNEUMONIA_LABELS, kind="binary")}


def get_task(name: str) -> Task:
    """A built-in task by name ('nih' or 'pneumonia')."""
    try:
        return TASKS[name]
    except KeyError as exc:
        raise ValueError(f"unknown task {name!r}: the built-in tasks are {', '.join(sorted(TASKS))}; a task of "
                         "your own is defined by its data (chestaid prepare --table) or as {name, labels}") from exc


# The headline test metrics of `evaluate`'s summary, per kind of task: shown by the CLI, the model card and the
# report (each with its interval where the summary has one).
HEADLINE_METRICS = {
    "binary": ("roc_auc", "pr_auc", "brier", "ece", "sensitivity", "specificity", "ppv", "npv"),
    "multilabel": ("roc_auc_macro", "pr_auc_macro", "f1_macro", "exact_match_ratio", "ece_mean"),
}


def headline_metrics(summary: dict) -> tuple[str, ...]:
    """The headline keys that `summary` holds as numbers (binary when it has a single ROC-AUC)."""
    keys = HEADLINE_METRICS["binary" if "roc_auc" in summary else "multilabel"]
    return tuple(k for k in keys if isinstance(summary.get(k), float))
