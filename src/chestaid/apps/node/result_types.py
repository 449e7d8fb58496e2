"""The node's result values, as its writers take and make them: what was decided about an image (`ImageResult`) or
a study (`StudyResult`, of `StudyImage`s), and a made object (`ResultObject`) of a `Kind` in a `Media`. The
registries that make and deliver them are in `outputs`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class Kind(str, Enum):
    """A kind of result object (the outbox's `kind`)."""

    SR = "sr"  # TID 1500 Comprehensive SR (results.make_sr)
    HEAT_MAP = "sc"  # Secondary Capture heat map of the top finding (results.make_heat_map)
    FHIR_REPORT = "fhir"  # a FHIR R4 transaction Bundle (fhir.report_bundle)
    STUDY_SR = "study-sr"  # one TID 1500 SR per study, a new version superseding the last (study_sr.make_study_sr)
    STUDY_FHIR = "study-fhir"  # one FHIR DiagnosticReport per study, amended in place (study_fhir.write)
    STUDY_HL7 = "study-hl7"  # one HL7 v2.5.1 ORU^R01 per study version, its triage level as priority (hl7_oru.write)
    NOTICE_EMAIL = "notice-email"  # a critical-finding e-mail to one contact (notices.notices)
    NOTICE_WEBHOOK = "notice-webhook"  # a critical-finding webhook body, signed (notices.notices)


class Media(str, Enum):
    """What a result object is made of, and so which transports can deliver it."""

    DICOM = "dicom"
    FHIR = "fhir"
    HL7 = "hl7"
    EMAIL = "email"
    WEBHOOK = "webhook"


@dataclass(frozen=True)
class ImageResult:
    """What the node decided about one image, as its writers take it: the source header, the model, the labels,
    and for a scored image its risk scores, decisions, thresholds, top finding and heat map (None when not made);
    for an image not analysed, why (`not_analysed`)."""

    source: object  # the pydicom Dataset of the received instance's header
    algorithm: object  # results.Algorithm
    labels: list[str]
    risk: np.ndarray | None = None
    decisions: np.ndarray | None = None
    thresholds: dict | None = None
    heat_map: np.ndarray | None = None
    not_analysed: str = ""

    @property
    def top(self) -> int:
        return int(np.argmax(self.risk))


@dataclass(frozen=True)
class Triage:
    """A study's triage level under the site's rules (inference.triage_rules.Level values): the level delivered,
    the level the findings reached and the findings that raised it, the level the order came with (never lowered;
    None when the study carried none), and the rules' identity (version and digest)."""

    level: str
    found: str
    raised: tuple[str, ...]
    ordered: str | None
    rules: str
    shadow_likely_normal: bool = False  # the likely-normal tier, in shadow, would have lowered it (not sent)
    tier_off: str = ""  # why the live likely-normal tier is off ("" when it is not, or there is none)


@dataclass(frozen=True)
class StudyImage:
    """One image of a study as its study result lists it: its header, its state and reason (a `State` value), and
    for a scored image its own scores and decisions."""

    source: object
    state: str
    reason: str = ""
    risk: np.ndarray | None = None
    decisions: np.ndarray | None = None


@dataclass(frozen=True)
class StudyResult:
    """What the node says about one study: every image of it with a readable header, per finding the highest score
    among its scored images and whether any was flagged (None when none was scored, with `not_analysed` saying why),
    the version of this result, the instances it covers and the result it supersedes (None for the first)."""

    images: list[StudyImage]
    algorithm: object
    labels: list[str]
    risk: np.ndarray | None
    decisions: np.ndarray | None
    thresholds: dict | None
    version: int
    covered: list[str]
    previous: object | None = None
    not_analysed: str = ""
    triage: "Triage | None" = None

    @property
    def scored(self) -> list[StudyImage]:
        return [i for i in self.images if i.risk is not None]


@dataclass(frozen=True)
class ResultObject:
    """One made object: its kind, its UID (the outbox's key), its SOP class (or what it is), its bytes and the
    suffix of its file in the store."""

    kind: Kind
    uid: str
    sop_class: str
    data: bytes
    suffix: str = ".dcm"
