"""Patient data for one image: age, sex and view, and where each came from; DICOM identifiers.

The order is fixed and the same everywhere (`predict`, the page, the API, localisation):
1. a DICOM tag of the file itself (PatientAge, PatientSex, ViewPosition), when present and well-formed;
2. a value given by the caller (command line, page, API, NIH metadata), which only fills what the file lacks:
   it never overrides a tag;
3. otherwise unknown: the model is given the neutral 0.5 (documented in `data.sources.patient_info`).

Each field's source is recorded as "tag", "given" or "assumed", so a worklist row says which values the model
saw and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

FIELDS = ("age", "sex", "view")
IDENTIFIERS = ("PatientID", "AccessionNumber", "StudyInstanceUID", "SOPInstanceUID")
_AGE = re.compile(r"^(\d{1,3})([YMWD]?)$")


@dataclass(frozen=True)
class PatientData:
    """Age (years), sex ('M'/'F'), view ('PA'/'AP') with their sources, and a DICOM file's identifiers."""

    values: dict[str, float | str | None]
    sources: dict[str, str]
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def assumed(self) -> list[str]:
        """The fields nobody knew (the model saw the neutral value)."""
        return [k for k in FIELDS if self.sources[k] == "assumed"]


def clean_given(given: dict | None) -> dict[str, float | str | None]:
    """Caller-given values normalised; None, '', 'unknown' and values out of range mean "not given"."""
    out: dict[str, float | str | None] = dict.fromkeys(FIELDS)
    for key, value in (given or {}).items():
        if key not in out or value is None or (isinstance(value, str) and value.strip().lower() in ("", "unknown")):
            continue
        if key == "age":
            try:
                age = float(value)
            except (TypeError, ValueError):
                continue
            out["age"] = age if 0 <= age <= 120 else None
        else:
            text = str(value).strip().upper()
            allowed = ("M", "F") if key == "sex" else ("PA", "AP")
            out[key] = text if text in allowed else None
    return out


def tag_values(ds) -> dict[str, float | str | None]:
    """Age/sex/view from a pydicom dataset's tags; None where a tag is absent or malformed."""
    match = _AGE.match(str(ds.get("PatientAge", "") or "").strip().upper())
    age = None
    if match:
        divisor = {"Y": 1, "": 1, "M": 12, "W": 52, "D": 365}[match.group(2)]
        age = min(int(match.group(1)) / divisor, 100.0)
    sex = str(ds.get("PatientSex", "") or "").strip().upper()[:1]
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    return {"age": age, "sex": sex if sex in ("M", "F") else None, "view": view if view in ("PA", "AP") else None}


def read_header(path: str | Path):
    """A DICOM file's header without pixels, or None when the file is not DICOM or cannot be parsed."""
    from chestaid.data.images import is_dicom

    if not is_dicom(path):
        return None
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:  # no preamble/file meta (older exports): the same fallback as the decoder's
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001
            return None
        return ds if "Modality" in ds or "SOPClassUID" in ds else None
    except Exception:  # noqa: BLE001 - a broken header only means "no tags"; the decoder reports the file
        return None


def patient_for(path: str | Path, given: dict | None = None) -> PatientData:
    """Patient data for one file: its DICOM tags first, then `given` values for what it lacks."""
    return patient_from_header(read_header(path), given)


def patient_from_header(ds, given: dict | None = None) -> PatientData:
    """The same from an already read DICOM header (None for a file that is not DICOM)."""
    tags = tag_values(ds) if ds is not None else dict.fromkeys(FIELDS)
    extra = clean_given(given)
    values, sources = {}, {}
    for key in FIELDS:
        if tags[key] is not None:
            values[key], sources[key] = tags[key], "tag"
        elif extra[key] is not None:
            values[key], sources[key] = extra[key], "given"
        else:
            values[key], sources[key] = None, "assumed"
    ids = {} if ds is None else {k: str(ds.get(k, "") or "") for k in IDENTIFIERS}
    return PatientData(values, sources, ids)
