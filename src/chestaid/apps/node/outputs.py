"""The node's outputs: two registries, as backbones are one (models.backbone).

A **result writer** makes one kind of result object from a typed `ImageResult` (an SR for every image, a heat map
for a scored one, a FHIR report bundle …); a **transport** delivers objects of the kinds it accepts to a destination
(DIMSE C-STORE, STOW-RS, FHIR). The outbox keeps each row's kind and transport by name; the worker asks every
writer, the sender dispatches each destination's batch to its transport. Adding an output is a module (its writer
or transport) and one entry here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlsplit

import numpy as np

from chestaid.core.errors import ChestaidError


class Kind(str, Enum):
    """A kind of result object (the outbox's `kind`)."""

    SR = "sr"  # TID 1500 Comprehensive SR (results.make_sr)
    HEAT_MAP = "sc"  # Secondary Capture heat map of the top finding (results.make_heat_map)
    FHIR_REPORT = "fhir"  # a FHIR R4 transaction Bundle (fhir.report_bundle)
    STUDY_SR = "study-sr"  # one TID 1500 SR per study, a new version superseding the last (study_sr.make_study_sr)


class Transport(str, Enum):
    """How a destination is reached (the outbox's `transport`)."""

    DIMSE = "dimse"
    STOW_RS = "stow-rs"
    FHIR = "fhir"


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
class StudyResult:
    """What the node says about one study: its images' headers (the scored ones; all of them when none was
    scored), per finding the highest score among its scored images and whether any was flagged (None when none was
    scored, with `not_analysed` saying why), the version of this result, the instances it covers and the result it
    supersedes (None for the first)."""

    sources: list
    algorithm: object
    labels: list[str]
    risk: np.ndarray | None
    decisions: np.ndarray | None
    thresholds: dict | None
    version: int
    covered: list[str]
    previous: object | None = None
    not_analysed: str = ""


@dataclass(frozen=True)
class ResultObject:
    """One made object: its kind, its UID (the outbox's key), its SOP class (or what it is), its bytes and the
    suffix of its file in the store."""

    kind: Kind
    uid: str
    sop_class: str
    data: bytes
    suffix: str = ".dcm"


@dataclass(frozen=True)
class Destination:
    """Where results go: a transport, and its address."""

    transport: Transport
    ae_title: str = ""
    host: str = ""
    port: int = 0
    tls: bool = False
    url: str = ""

    @classmethod
    def parse(cls, text: str) -> "Destination":
        """AET@HOST:PORT (+tls), a DICOMweb root https://…/dicom-web, or fhir:https://… (a FHIR server's base);
        http:// only to this machine."""
        text = text.strip()
        if text.startswith("fhir:"):
            found = cls.parse(text.removeprefix("fhir:"))
            if not found.url:
                raise ChestaidError(f"--fhir-url must be http(s)://…, got {text.removeprefix('fhir:')!r}")
            return cls(Transport.FHIR, "", found.host, found.port, found.tls, found.url)
        if text.startswith(("http://", "https://")):
            parts = urlsplit(text)
            if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
                raise ChestaidError(f"--send-to {text}: plain http only to this machine; use https://")
            return cls(Transport.STOW_RS, "", parts.hostname or "",
                       parts.port or (443 if parts.scheme == "https" else 80), parts.scheme == "https",
                       text.rstrip("/"))
        match = re.fullmatch(r"([^@]{1,16})@([^:@]+):(\d{1,5})(\+tls)?", text)
        if not match or not 0 < int(match[3]) < 65536:
            raise ChestaidError(f"--send-to must be AET@HOST:PORT or AET@HOST:PORT+tls (e.g. ORTHANC@127.0.0.1:4242), "
                                f"got {text!r}")
        return cls(Transport.DIMSE, match[1], match[2], int(match[3]), bool(match[4]))

    def __str__(self) -> str:
        if self.transport is Transport.FHIR:
            return f"fhir:{self.url}"
        if self.url:
            return self.url
        return f"{self.ae_title}@{self.host}:{self.port}" + ("+tls" if self.tls else "")

    @property
    def accepts(self) -> frozenset[Kind]:
        return TRANSPORTS[self.transport].accepts


@dataclass(frozen=True)
class TransportSpec:
    """A transport: the kinds it delivers and its send function, `send(sender, destination, rows)` (one batch of
    outbox rows for one destination; it records each row sent or failed through the sender)."""

    accepts: frozenset[Kind]
    send: Callable = field(repr=False)


def _sr(result: ImageResult) -> ResultObject:
    from chestaid.apps.node.results import encode, make_sr

    ds = make_sr(result.source, result.algorithm, result.labels, result.risk, result.decisions,
                 result.thresholds, not_analysed=result.not_analysed or None)
    return ResultObject(Kind.SR, str(ds.SOPInstanceUID), str(ds.SOPClassUID), encode(ds))


def _heat_map(result: ImageResult) -> ResultObject | None:
    if result.heat_map is None or result.risk is None:
        return None
    from chestaid.apps.node.results import encode, make_heat_map

    ds = make_heat_map(result.source, result.algorithm, result.heat_map, result.labels[result.top],
                       float(result.risk[result.top]))
    return ResultObject(Kind.HEAT_MAP, str(ds.SOPInstanceUID), str(ds.SOPClassUID), encode(ds))


def _fhir_report(result: ImageResult) -> ResultObject | None:
    if result.risk is None:
        return None
    from chestaid.apps.node.fhir import bundle_bytes, report_bundle

    bundle, key = report_bundle(result.source, result.algorithm, result.labels, result.risk, result.decisions)
    return ResultObject(Kind.FHIR_REPORT, key, "FHIR Bundle", bundle_bytes(bundle), ".json")


def _study_sr(result: StudyResult) -> ResultObject:
    from chestaid.apps.node.results import encode
    from chestaid.apps.node.study_sr import make_study_sr

    ds = make_study_sr(result)
    return ResultObject(Kind.STUDY_SR, str(ds.SOPInstanceUID), str(ds.SOPClassUID), encode(ds))


STUDY_WRITERS: dict[Kind, Callable[[StudyResult], ResultObject | None]] = {Kind.STUDY_SR: _study_sr}
KEPT = frozenset({Kind.SR, Kind.HEAT_MAP})  # made for every image, destinations or not: the store's own results

def queue_made(store, made: ResultObject, destinations: list[Destination]) -> list[dict]:
    """`made` written durably into the store's results, and its outbox rows: one per destination taking its kind
    (to be committed with the state that made it)."""
    from chestaid.store import durable_write

    path = store.result_path(made.uid).with_suffix(made.suffix)
    durable_write(path, made.data)
    return [{"kind": made.kind.value, "uid": made.uid, "sop_class": made.sop_class,
             "path": str(path.relative_to(store.root)), "destination": str(d), "transport": d.transport.value}
            for d in destinations if made.kind in d.accepts]


# The registries: a writer per kind (None when it makes nothing for this image), a transport per way of delivery
WRITERS: dict[Kind, Callable[[ImageResult], ResultObject | None]] = {
    Kind.SR: _sr, Kind.HEAT_MAP: _heat_map, Kind.FHIR_REPORT: _fhir_report}


def _send_dimse(sender, destination, rows):
    return sender.send_dimse(destination, rows)


def _send_stow(sender, destination, rows):
    return sender.send_stow(destination, rows)


def _send_fhir(sender, destination, rows):
    return sender.send_fhir(destination, rows)


TRANSPORTS: dict[Transport, TransportSpec] = {
    Transport.DIMSE: TransportSpec(frozenset({Kind.SR, Kind.HEAT_MAP, Kind.STUDY_SR}), _send_dimse),
    Transport.STOW_RS: TransportSpec(frozenset({Kind.SR, Kind.HEAT_MAP, Kind.STUDY_SR}), _send_stow),
    Transport.FHIR: TransportSpec(frozenset({Kind.FHIR_REPORT}), _send_fhir)}
