"""The C-ECHO and C-STORE SCP (pynetdicom): each instance is made durable and recorded before the status.

The handler never decodes pixels or runs the model: it writes the bytes as received (`Store.receive`: a durable
file, then a committed row) and answers 0x0000; when either fails, 0xA700 (out of resources) so that the sender
keeps the image and tries again. A SOPInstanceUID already stored is acknowledged and not stored or scored again.
An object without pixel data (an SR, a key object, a presentation state; a PACS forwards whole studies) and
the node's own results coming back are recorded as `ignored` with the reason.
"""

from __future__ import annotations

import hashlib

import logging
import threading

from pynetdicom import AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
from pydicom import uid

from chestaid.apps.node.connections import LISTEN_BACKLOG, NodeAE, Watchdog
from chestaid.apps.node.tls import log_handshake_failures
from chestaid.store import Instance, Store
from chestaid.core.errors import describe

log = logging.getLogger("chestaid.node")

MANUFACTURER = "chestaid"
SUCCESS, OUT_OF_RESOURCES = 0x0000, 0xA700
MAX_PDU = 1 << 20  # the largest P-DATA PDU the node accepts (senders split a dataset into PDUs of at most this)
# The transfer syntaxes chestaid's decoders read (pydicom + pylibjpeg/openjpeg/pyjpegls/gdcm), uncompressed first.
TRANSFER_SYNTAXES = [
    uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1,
    uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000, uid.RLELossless,
]
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _text(ds, keyword: str) -> str:
    try:
        return str(ds.get(keyword, "") or "").strip()
    except Exception:  # noqa: BLE001 - a malformed element is an empty identifier, never a failed store
        return ""


def describe_instance(event) -> Instance:
    """The identifiers of one C-STORE request (the request's own UIDs are authoritative)."""
    request = event.request
    sop_uid = str(request.AffectedSOPInstanceUID)
    sop_class = str(request.AffectedSOPClassUID)
    instance = Instance(sop_uid=sop_uid, sop_class=sop_class, calling_ae=event.assoc.requestor.ae_title,
                        transfer_syntax=str(event.context.transfer_syntax))
    try:
        ds = event.dataset
    except Exception as e:  # noqa: BLE001 - stored as received; the worker says why it cannot be read
        log.info("instance %s: header not parsed at receipt (%s)", sop_uid, describe(e))
        return instance
    return described(ds, instance)


def described(ds, instance: Instance) -> Instance:
    """`instance` with the identifiers of its dataset `ds` (and "ignored" when it is not an image or is one of
    our own results); unparsable headers leave it as it is (the worker says why)."""
    sop_uid, sop_class = instance.sop_uid, instance.sop_class
    try:
        instance.study_uid, instance.series_uid = _text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID")
        instance.modality, instance.patient_id = _text(ds, "Modality"), _text(ds, "PatientID")
        instance.accession = _text(ds, "AccessionNumber")
        instance.study_date, instance.view = _text(ds, "StudyDate"), _text(ds, "ViewPosition")
        count = _text(ds, "NumberOfStudyRelatedInstances")
        instance.study_instances = int(count) if count.isdigit() and 0 < int(count) < 100_000 else None
        has_pixels = any(keyword in ds for keyword in PIXEL_TAGS)
        if "PixelData" in ds:
            instance.pixel_sha256 = hashlib.sha256(ds.PixelData).hexdigest()
        ours = _text(ds, "Manufacturer") == MANUFACTURER
    except Exception as e:  # noqa: BLE001 - stored as received; the worker says why it cannot be read
        log.info("instance %s: header not parsed at receipt (%s)", sop_uid, describe(e))
        return instance
    name = getattr(uid.UID(sop_class), "name", "") or sop_class
    if ours:
        instance.state, instance.reason = "ignored", f"a {MANUFACTURER} result ({name}): not scored again"
    elif not has_pixels:
        instance.state, instance.reason = "ignored", f"not an image: {name} has no pixel data"
    return instance


def accept(store: Store, instance: Instance, data, peer: str) -> str:
    """Store one received instance durably (`data`: its Part-10 bytes, or a function making them), or recognise
    it: "stored", "duplicate" (the same content again: acknowledged once) or "conflict" (its SOPInstanceUID with
    other content: kept apart, not scored, a warning naming both studies' UIDs, never a patient). Raises when
    nothing could be made durable (the sender must not be told success)."""
    sop_uid = instance.sop_uid
    with store.claim(sop_uid):
        return _accept(store, instance, data, peer)


def _accept(store: Store, instance: Instance, data, peer: str) -> str:
    if not store.has(instance.sop_uid) and store.receive(instance, data() if callable(data) else data):
        log.info("instance %s (study %s, series %s, %s, %s) from %s: stored, %s", instance.sop_uid,
                 instance.study_uid, instance.series_uid, instance.modality or "no modality",
                 instance.transfer_syntax, peer,
                 instance.state if instance.state != "queued" else "queued for scoring")
        return "stored"
    return _known(store, instance, data, peer)  # stored before, or meanwhile (another node sharing the store)


def _known(store: Store, instance: Instance, data, peer: str) -> str:
    """An instance whose SOPInstanceUID the store holds: a duplicate, or a conflict kept apart."""
    sop_uid = instance.sop_uid
    differs = store.other_content(instance)
    if not differs:
        log.info("instance %s from %s: duplicate SOPInstanceUID, acknowledged, not stored again", sop_uid, peer)
        return "duplicate"
    earlier = store.instance(sop_uid)
    reason = (f"SOPInstanceUID reused with other content ({differs} differ): the earlier instance of study "
              f"{earlier['study_uid']} keeps the UID; this one (study {instance.study_uid}) is kept, not scored")
    store.conflict(instance, data() if callable(data) else data, reason)
    log.warning("instance %s from %s: %s", sop_uid, peer, reason)
    return "conflict"


class Receiver:
    """pynetdicom's AE as the node's SCP. `start()` listens (non-blocking), `stop()` closes the server."""

    def __init__(self, store: Store, port: int = 11112, ae_title: str = "CHESTAID", host: str = "0.0.0.0",
                 allow: list[str] | None = None, max_associations: int = 16, on_stored=None,
                 idle_timeout: float = 300.0, ssl_context=None, request_timeout: float = 30.0) -> None:
        self.ssl_context = ssl_context  # DICOM over TLS (chestaid.apps.node.tls); None: plain TCP
        self.store, self.port, self.host, self.on_stored = store, port, host, on_stored
        self.ae = NodeAE(ae_title=ae_title)
        self.ae.maximum_associations = max_associations
        self.ae.maximum_pdu_size = MAX_PDU  # bounded: a sender's progress shows as whole PDUs (the watchdog)
        # pynetdicom's idle timer also runs while our own handler writes and fsyncs (the sender waits for our
        # answer then), so its 60 s default can abort a sender on a loaded machine; the node's is longer
        self.ae.network_timeout = idle_timeout
        self.ae.acse_timeout = request_timeout  # also the watchdog's limit for a connection that has not asked
        if allow:
            self.ae.require_calling_aet = list(allow)
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification, [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian])
        self.server = self.watchdog = None
        self._counts: dict[int, list[int]] = {}
        self._lock = threading.Lock()  # guards _counts and _handling; never held while calling anything else
        self._handling: set[int] = set()  # associations a handler of ours is working for (never cut by the watchdog)

    def start(self) -> None:
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, self.handle_echo),
                    (evt.EVT_ACCEPTED, self._accepted), (evt.EVT_REJECTED, self._rejected),
                    (evt.EVT_RELEASED, self._closed), (evt.EVT_ABORTED, self._closed)]
        self.server = self.ae.start_server((self.host, self.port), block=False, evt_handlers=handlers,
                                           ssl_context=self.ssl_context)
        self.server.socket.listen(LISTEN_BACKLOG)  # bursts of connections wait in the kernel, not refused
        if self.ssl_context is not None:
            log_handshake_failures(self.server)
        self.port = self.server.server_address[1]  # port 0: the one the system chose
        self.watchdog = Watchdog(self.server, self.ae.acse_timeout, self.ae.network_timeout,
                                 busy=lambda assoc: id(assoc) in self._handling).start()

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    # -- association log lines ---------------------------------------------------------------------------------

    @staticmethod
    def _peer(event) -> str:
        r = event.assoc.requestor
        return f"{r.ae_title}@{r.address}:{r.port}"

    def _accepted(self, event) -> None:
        with self._lock:
            self._counts[id(event.assoc)] = [0, 0, 0]  # stored, duplicates, failed

    def _rejected(self, event) -> None:
        log.info("association from %s rejected: %s", self._peer(event), self._why_rejected(event))

    def _why_rejected(self, event) -> str:
        """The reason pynetdicom rejected an association, in the words of the node's options."""
        calling = event.assoc.requestor.ae_title.strip()
        allowed = [a.strip() for a in self.ae.require_calling_aet]
        if allowed and calling not in allowed:
            return f"calling AE title {calling!r} is not in --allow ({', '.join(allowed)})"
        active = len(self.ae.active_associations)
        if active > self.ae.maximum_associations:
            return (f"too many associations at once ({active - 1} active, --max-associations "
                    f"{self.ae.maximum_associations}): transient, the sender may retry")
        called = getattr(event.assoc.requestor.primitive, "called_ae_title", "")
        if self.ae.require_called_aet and called.strip() != self.ae.ae_title.strip():
            return f"called AE title {called.strip()!r} is not this node's ({self.ae.ae_title.strip()})"
        return "no presentation context this node accepts, or an invalid request"

    def _closed(self, event) -> None:
        with self._lock:
            stored, duplicates, failed = self._counts.pop(id(event.assoc), [0, 0, 0])
        how = "released" if event.event is evt.EVT_RELEASED else "aborted"
        if event.event is evt.EVT_ABORTED and event.assoc.dul.idle_timer_expired():
            how += f" (nothing received for {event.assoc.network_timeout:g} s)"
        log.info("association from %s %s: %d stored, %d duplicates, %d failed", self._peer(event), how, stored,
                 duplicates, failed)

    def _count(self, event, k: int) -> None:
        with self._lock:
            counts = self._counts.setdefault(id(event.assoc), [0, 0, 0])
            counts[k] += 1

    # -- DIMSE handlers ----------------------------------------------------------------------------------------

    def handle_echo(self, event) -> int:
        log.info("C-ECHO from %s", self._peer(event))
        return SUCCESS

    def handle_store(self, event) -> int:
        """Durable, then success; the same instance arriving on several associations at once is written by the
        first and acknowledged to the others as a duplicate once it is durable (`Store.claim` orders them)."""
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            self._handling.add(id(event.assoc))
        try:
            instance = describe_instance(event)
            outcome = accept(self.store, instance, lambda: event.encoded_dataset(include_meta=True),
                             self._peer(event))
        except Exception as e:  # noqa: BLE001 - never acknowledge what is not durable; the sender retries
            log.error("instance %s from %s not stored: %s -> 0xA700", sop_uid, self._peer(event), describe(e))
            self._count(event, 2)
            return OUT_OF_RESOURCES
        finally:
            with self._lock:
                self._handling.discard(id(event.assoc))
        self._count(event, 1 if outcome == "duplicate" else 0)
        if outcome == "stored" and self.on_stored is not None:
            self.on_stored()
        return SUCCESS
