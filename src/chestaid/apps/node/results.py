"""Result objects for one source image (highdicom): a Comprehensive SR following TID 1500 and a Secondary
Capture heat map, both in new series of the source's study, with deterministic UIDs.

UIDs are derived (pydicom's generate_uid over fixed entropy sources: 2.25.<hash>) from the source
SOPInstanceUID, the run (its name and weights digest) and the kind, so a resend or a re-score after a crash
makes the same object, never a second one; the series UIDs from the study, the run and the kind.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from chestaid.apps.node.receiver import MANUFACTURER
from chestaid.inference.calibration import score_name

CAPTION = "NOT FOR DIAGNOSTIC USE \u2014 qualitative explanation"
SCHEME = "99CHESTAID"  # private coding scheme (DICOM: designators beginning with 99 are local)
RISK = CodedConcept("RISK", SCHEME, "Calibrated risk score, not a probability")
UNCALIBRATED = CodedConcept("UNCALSCORE", SCHEME, "Uncalibrated score, not a risk or probability")
ANALYSED = CodedConcept("ANALYSED", SCHEME, "Image analysed by the algorithm")
REASON = CodedConcept("REASON", SCHEME, "Reason the image was not analysed")
NOTE = CodedConcept("NOTE", SCHEME, "Note on the result")
NO_UNITS = CodedConcept("1", "UCUM", "no units")
PRESENT, ABSENT = CodedConcept("52101004", "SCT", "Present"), CodedConcept("2667000", "SCT", "Absent")
YES, NO = CodedConcept("373066001", "SCT", "Yes"), CodedConcept("373067005", "SCT", "No")
CHEST_XRAY = CodedConcept("363679005", "SCT", "Imaging procedure")
# SNOMED CT where the finding has a well-known concept; the run's own label in the private scheme otherwise
FINDING_CODES = {
    "Atelectasis": ("46621007", "SCT", "Atelectasis"), "Cardiomegaly": ("8186001", "SCT", "Cardiomegaly"),
    "Effusion": ("60046008", "SCT", "Pleural effusion"), "Pneumonia": ("233604007", "SCT", "Pneumonia"),
    "Pneumothorax": ("36118008", "SCT", "Pneumothorax"), "Edema": ("19242006", "SCT", "Pulmonary edema"),
    "Emphysema": ("87433001", "SCT", "Pulmonary emphysema"), "Fibrosis": ("51615001", "SCT", "Pulmonary fibrosis"),
    "Consolidation": ("95436008", "SCT", "Lung consolidation"),
    "Infiltration": ("409609008", "SCT", "Radiologic infiltrate of lung"),
    "Mass": ("309529002", "SCT", "Lung mass"), "Nodule": ("786838002", "SCT", "Pulmonary nodule"),
    "Hernia": ("84089009", "SCT", "Hiatal hernia"),  # NIH's "Hernia" on a chest film: a hiatal hernia
}  # Pleural_Thickening keeps a private code: no SNOMED CT concept for it was confirmed (docs/node.md)
SR_SERIES, SC_SERIES = 9101, 9102


@dataclass(frozen=True)
class Algorithm:
    """What made the results: chestaid's version, the run's name, its weights' SHA-256, and whether its scores
    are calibrated (an uncalibrated run's SR says "uncalibrated score")."""

    version: str
    run_name: str
    weights_sha256: str
    calibrated: bool = True
    identity: dict | None = None  # chestaid.inference.identity.run_identity: also recorded with each instance

    def identification(self) -> hd.sr.AlgorithmIdentification:
        known = self.identity or {}
        extra = [f"{name}={str(known.get(f'{name}_sha256') or 'none')[:16]}"
                 for name in ("calibration", "thresholds", "gate")] if known else []
        return hd.sr.AlgorithmIdentification(name="chestaid", version=self.version[:64],
                                             parameters=[f"run={self.run_name}"[:64],
                                                         f"weights_sha256={self.weights_sha256}"[:64], *extra])


def derived_uid(*parts: str) -> str:
    """A UID that is a function of `parts` ("2.25." and 128 bits of their SHA-256, as PS3.5 B.2 allows for UUID-
    derived UIDs): a result made again (after a restart) gets the same UID, so a destination keeps one copy.
    (pydicom's generate_uid ignores its entropy sources when the prefix is None: that UID was random.)"""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()[:32]
    return f"2.25.{int(digest, 16)}"


def result_uids(source_uid: str, study_uid: str, algorithm: Algorithm, kind: str) -> tuple[str, str]:
    """(SOPInstanceUID, SeriesInstanceUID) of the `kind` ("sr" or "sc") result of one source image."""
    run = (algorithm.run_name, algorithm.weights_sha256)
    return derived_uid("chestaid", kind, source_uid, *run), derived_uid("chestaid", kind, "series", study_uid, *run)


def finding_code(label: str) -> CodedConcept:
    if label in FINDING_CODES:
        return CodedConcept(*FINDING_CODES[label])
    return CodedConcept(label.upper()[:16], SCHEME, label.replace("_", " ")[:64])


def _observation_context(algorithm: Algorithm) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=derived_uid("chestaid", "device", algorithm.run_name),
                                                       name="chestaid", manufacturer_name=MANUFACTURER,
                                                       model_name=algorithm.run_name[:64])
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))


def _text(name: CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


# Type 2 attributes of the Patient and General Study modules: required, possibly empty. Modalities and
# anonymisers often leave some out; highdicom copies them from the source, so a missing one would mean no results.
TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                       "ReferringPhysicianName", "StudyID", "AccessionNumber")
# Optional (Type 3) ones a result may carry over from its source
TYPE3_PATIENT_STUDY = ("PatientAge", "PatientSize", "PatientWeight", "StudyDescription", "IssuerOfPatientID")
SEXES = ("M", "F", "O")  # PatientSex's enumerated values (PS3.3 C.7.1.1)


def results_header(source: Dataset) -> tuple[Dataset, list[str]]:
    """The header results are derived from: the source's, with its missing Type 2 patient and study attributes
    present and empty, and each patient/study value that is not valid for its VR (or PatientSex not M, F or O)
    emptied (Type 2) or left out (Type 3), so that a broken or hostile header never costs an image its results;
    with one note per value changed (naming the attribute, never its value). The source is never changed."""
    from pydicom.config import RAISE
    from pydicom.valuerep import validate_value

    changes: dict[str, str | None] = {k: "" for k in TYPE2_PATIENT_STUDY if k not in source}
    notes = []
    for keyword in (*TYPE2_PATIENT_STUDY, *TYPE3_PATIENT_STUDY):
        element = source.data_element(keyword) if keyword in source else None
        if element is None or element.value in (None, ""):
            continue
        try:
            values = element.value if element.VM > 1 else [element.value]
            for value in values:
                validate_value(element.VR, value, RAISE)
                if any(ord(c) < 32 and c != "\x1b" for c in str(value)):
                    raise ValueError("control characters")
            if keyword == "PatientSex" and str(element.value).strip() not in SEXES:
                raise ValueError("not M, F or O")
        except (ValueError, TypeError):
            changes[keyword] = "" if keyword in TYPE2_PATIENT_STUDY else None
            notes.append(f"{keyword} in the source is not a valid {element.VR} value: "
                         + ("left empty in this result" if keyword in TYPE2_PATIENT_STUDY else "left out of this result"))
    if not changes:
        return source, notes
    completed = Dataset(dict(source.items()))  # a new element dict (Dataset(source) would share its dict)
    if hasattr(source, "file_meta"):
        completed.file_meta = source.file_meta
    for keyword, value in changes.items():
        if value is None:
            del completed[keyword]
        else:
            setattr(completed, keyword, None)
    return completed, notes


def make_sr(source: Dataset, algorithm: Algorithm, labels: list[str], risk: np.ndarray | None,
            decisions: np.ndarray | None, thresholds: dict[str, float] | None, not_analysed: str = "") -> Dataset:
    """A TID 1500 measurement report: one group per finding (its code, present/absent at the run's
    threshold, the calibrated risk score), or, when `not_analysed` gives a reason, one group saying so."""
    source, header_notes = results_header(source)
    sop_uid, series_uid = result_uids(source.SOPInstanceUID, source.StudyInstanceUID, algorithm, "sr")
    image = hd.sr.SourceImageForMeasurementGroup.from_source_image(source)
    groups = finding_groups(sop_uid, algorithm, [image], labels, risk, decisions, thresholds, not_analysed)
    for note in header_notes:  # what was emptied or left out of the source's header, and why
        groups[0][0].ContentSequence.append(_text(NOTE, note))
    return report_sr(algorithm, groups, [source], series_uid, sop_uid)


def report_sr(algorithm: Algorithm, groups: list, evidence: list, series_uid: str, sop_uid: str,
              previous: list | None = None, description: str = "") -> Dataset:
    """The Comprehensive SR of a measurement report made of `groups` about `evidence` (preliminary, unverified);
    `previous`: the SRs it supersedes."""
    report = hd.sr.MeasurementReport(observation_context=_observation_context(algorithm),
                                     procedure_reported=CHEST_XRAY, imaging_measurements=groups)
    return hd.sr.ComprehensiveSR(evidence=evidence, content=report[0], series_instance_uid=series_uid,
                                 series_number=SR_SERIES, sop_instance_uid=sop_uid, instance_number=1,
                                 manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
                                 series_description=(description or f"chestaid {algorithm.run_name} (preliminary, "
                                                                    "unverified)")[:64],
                                 software_versions=algorithm.version[:64], previous_versions=previous or None)


def finding_groups(sop_uid: str, algorithm: Algorithm, images: list, labels: list[str], risk, decisions,
                   thresholds: dict[str, float] | None, not_analysed: str = "", scope: str = "") -> list:
    """The TID 1500 measurement groups of a result about `images`: one per finding (its code, present/absent at
    the run's threshold, the score), or one saying it was not analysed and why; `scope` ends each group's tracking
    identifier (which image of a study it is about)."""
    algo = algorithm.identification()
    groups = []
    if not_analysed:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(sop_uid, "not analysed"),
                                                         identifier=f"not analysed{scope}"[:64]),
            algorithm_id=algo, source_images=images,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(ANALYSED, NO)])
        group[0].ContentSequence.append(_text(REASON, not_analysed[:1024]))
        return [group]
    for k, label in enumerate(labels):
        code = finding_code(label)
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(sop_uid, label),
                                                         identifier=f"{label}{scope}"[:64]),
            finding_type=code, algorithm_id=algo, source_images=images,
            measurements=[hd.sr.Measurement(name=RISK if algorithm.calibrated else UNCALIBRATED,
                                            value=round(float(risk[k]), 6), unit=NO_UNITS, algorithm_id=algo)],
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(code, PRESENT if decisions[k] else ABSENT)])
        threshold = (thresholds or {}).get(label)
        note = (f"{label}: {score_name(algorithm.calibrated)}, not a probability: {float(risk[k]):.4f}; "
                f"{'present' if decisions[k] else 'absent'} at the run's threshold"
                + (f" {threshold:.4f}" if threshold is not None else ""))
        group[0].ContentSequence.append(_text(NOTE, note))
        groups.append(group)
    return groups


def _font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib; it has the em dash), else Pillow's default font."""
    import matplotlib

    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except OSError:
        return ImageFont.load_default(size=size)


def caption_image(rgb: np.ndarray, lines: list[str], width: int = 512) -> np.ndarray:
    """The heat map enlarged to `width` with a black band holding the caption lines burned into the pixels."""
    picture = Image.fromarray(rgb).resize((width, round(width * rgb.shape[0] / rgb.shape[1])), Image.BILINEAR)
    font = _font(max(12, width // 30))
    line_h = int(font.size * 1.4)
    band = line_h * len(lines) + 8
    canvas = Image.new("RGB", (picture.width, picture.height + band), (0, 0, 0))
    canvas.paste(picture, (0, band))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((6, 4 + i * line_h), line, fill=(255, 255, 0), font=font)
    return np.asarray(canvas)


def make_heat_map(source: Dataset, algorithm: Algorithm, rgb: np.ndarray, finding: str, risk: float) -> Dataset:
    """A Secondary Capture of the top finding's heat map (RGB), its caption burned in and in SeriesDescription."""
    source, _ = results_header(source)
    sop_uid, series_uid = result_uids(source.SOPInstanceUID, source.StudyInstanceUID, algorithm, "sc")
    pixels = caption_image(rgb, [CAPTION, f"Grad-CAM: {finding}  ({score_name(algorithm.calibrated)} {risk:.3f})"])
    orientation = tuple(str(v) for v in (source.get("PatientOrientation") or []))
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=SC_SERIES,
        sop_instance_uid=sop_uid, instance_number=1, manufacturer=MANUFACTURER,
        patient_orientation=orientation if len(orientation) == 2 and all(orientation) else ("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1")
    sc.SpecificCharacterSet = "ISO_IR 192"
    sc.SeriesDescription = CAPTION
    sc.ImageComments = f"{CAPTION}. Grad-CAM of {finding}; {algorithm.run_name}, chestaid {algorithm.version}"
    sc.BurnedInAnnotation = "YES"
    if "Laterality" not in sc:  # type 2C (dciodvfy asks for it): the chest is not a paired structure: empty
        sc.Laterality = None
    sc.SoftwareVersions = algorithm.version[:64]
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    return sc


def encode(ds) -> bytes:
    """A dataset as the bytes of its Part-10 file."""
    import io

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
