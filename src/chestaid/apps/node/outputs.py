"""The node's outputs: two registries, as backbones are one (models.backbone).

A **result writer** makes one kind of result object from a typed `ImageResult` (an SR for every image, a heat map
for a scored one, a FHIR report bundle …) or `StudyResult` (the study SR …), in one medium (DICOM or FHIR); a
**transport** delivers the media it accepts to a destination (DIMSE C-STORE, STOW-RS, FHIR). The outbox keeps each
row's kind and transport by name; the worker and the study assembler ask every writer, the sender dispatches each
destination's batch to its transport. Adding an output is a module (its writer or transport), its `Kind` and one
entry here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlsplit

from chestaid.apps.node import hl7_oru, mllp, notice_transports, study_fhir
from chestaid.apps.node.result_types import ImageResult, Kind, Media, ResultObject, StudyResult
from chestaid.core.errors import ChestaidError


class Transport(str, Enum):
    """How a destination is reached (the outbox's `transport`)."""

    DIMSE = "dimse"
    STOW_RS = "stow-rs"
    FHIR = "fhir"
    MLLP = "mllp"
    SMTP = "smtp"
    WEBHOOK = "webhook"


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
        """AET@HOST:PORT (+tls), a DICOMweb root https://…/dicom-web, fhir:https://… (a FHIR server's base) or
        mllp://HOST:PORT (a RIS taking HL7 v2); http:// only to this machine."""
        text = text.strip()
        if text.startswith("smtp://"):
            host, port = _host_port(text, f"--notify-smtp {text}: a mail server is HOST:PORT")
            return cls(Transport.SMTP, "", host, port, True, f"smtp://{host}:{port}")
        if text.startswith("webhook:"):
            found = cls.parse(text.removeprefix("webhook:"))
            if not found.url:
                raise ChestaidError(f"--notify-webhook must be http(s)://…, got {text.removeprefix('webhook:')!r}")
            return cls(Transport.WEBHOOK, "", found.host, found.port, found.tls, found.url)
        if text.startswith("mllp://"):
            host, port = _host_port(text, f"--send-to {text}: an HL7 destination is mllp://HOST:PORT")
            return cls(Transport.MLLP, "", host, port, False, text.rstrip("/"))
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
        if self.transport in (Transport.MLLP, Transport.SMTP):
            return f"{self.transport.value}://{self.host}:{self.port}"
        if self.transport is Transport.WEBHOOK:
            return f"webhook:{self.url}"
        if self.url:
            return self.url
        return f"{self.ae_title}@{self.host}:{self.port}" + ("+tls" if self.tls else "")

    def takes(self, kind: Kind) -> bool:
        """Whether this destination's transport delivers results of `kind`."""
        return writer_of(kind).media in TRANSPORTS[self.transport].media


def _host_port(text: str, problem: str) -> tuple[str, int]:
    """HOST and PORT of a scheme://HOST:PORT address; `problem` raised when either is missing."""
    parts = urlsplit(text)
    if not parts.hostname or not parts.port:
        raise ChestaidError(problem)
    return parts.hostname, parts.port


@dataclass(frozen=True)
class TransportSpec:
    """A transport: the media it delivers and its send function, `send(sender, destination, rows)` (one batch of
    outbox rows for one destination; it records each row sent or failed through the sender)."""

    media: frozenset[Media]
    send: Callable = field(repr=False)


@dataclass(frozen=True)
class Writer:
    """A result writer: its medium, `build(result)` → a ResultObject or None (nothing for this result), and whether
    it makes one object per image that a node making study results sends only where the site asks for it
    (`--per-image-results`; it is still kept in the store when it is a KEPT kind)."""

    media: Media
    build: Callable = field(repr=False)
    per_image: bool = False
    replaces: bool = False  # a study result's new version replaces the last at its destination: an older one not
    #                         yet sent is not sent at all (a FHIR update), rather than sent after it (an SR's chain)


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


KEPT = frozenset({Kind.SR, Kind.HEAT_MAP})  # made for every image, destinations or not: the store's own results


def queue_made(store, made: ResultObject, destinations: list[Destination]) -> list[dict]:
    """`made` written durably into the store's results, and its outbox rows: one per destination taking its kind
    (to be committed with the state that made it)."""
    from chestaid.store import durable_write

    path = store.result_path(made.uid).with_suffix(made.suffix)
    durable_write(path, made.data)
    return [{"kind": made.kind.value, "uid": made.uid, "sop_class": made.sop_class,
             "path": str(path.relative_to(store.root)), "destination": str(d), "transport": d.transport.value}
            for d in destinations if d.takes(made.kind)]


def writer_of(kind: Kind) -> Writer:
    return WRITERS.get(kind) or STUDY_WRITERS.get(kind) or NOTICE_WRITERS[kind]


# The registries: a writer per kind, of an image's result or of a study's; a transport per way of delivery
WRITERS: dict[Kind, Writer] = {
    Kind.SR: Writer(Media.DICOM, _sr, per_image=True),
    Kind.HEAT_MAP: Writer(Media.DICOM, _heat_map),
    Kind.FHIR_REPORT: Writer(Media.FHIR, _fhir_report, per_image=True)}
STUDY_WRITERS: dict[Kind, Writer] = {
    Kind.STUDY_SR: Writer(Media.DICOM, _study_sr),
    Kind.STUDY_FHIR: Writer(Media.FHIR, study_fhir.write, replaces=True),
    Kind.STUDY_HL7: Writer(Media.HL7, hl7_oru.write, replaces=True)}
NOTICE_WRITERS: dict[Kind, Writer] = {  # made by notices.notices for a notification, not per result
    Kind.NOTICE_EMAIL: Writer(Media.EMAIL, None), Kind.NOTICE_WEBHOOK: Writer(Media.WEBHOOK, None)}


def _send_dimse(sender, destination, rows):
    return sender.send_dimse(destination, rows)


def _send_stow(sender, destination, rows):
    return sender.send_stow(destination, rows)


def _send_fhir(sender, destination, rows):
    return sender.send_fhir(destination, rows)


TRANSPORTS: dict[Transport, TransportSpec] = {
    Transport.DIMSE: TransportSpec(frozenset({Media.DICOM}), _send_dimse),
    Transport.STOW_RS: TransportSpec(frozenset({Media.DICOM}), _send_stow),
    Transport.FHIR: TransportSpec(frozenset({Media.FHIR}), _send_fhir),
    Transport.MLLP: TransportSpec(frozenset({Media.HL7}), mllp.send_mllp),
    Transport.SMTP: TransportSpec(frozenset({Media.EMAIL}), notice_transports.send_smtp),
    Transport.WEBHOOK: TransportSpec(frozenset({Media.WEBHOOK}), notice_transports.send_webhook)}
