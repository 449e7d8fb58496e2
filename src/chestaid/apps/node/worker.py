"""The worker: scores queued instances in batches through the Predictor, outside the C-STORE handler.

Each instance ends in one state with its reason: scored (risk per finding, decisions, top finding), not read
(another image of a chest study: a lateral, a CT scout), refused (the input gate: tags or distance), unreadable (the
decoder's reason) — `ignored` is decided at receipt. Its result objects (an SR for every image; a Secondary Capture
heat map of the top finding for a scored one; what else the writers make for its destinations) are written durably,
then the state and the outbox rows are committed in one transaction: a crash in between
re-scores the instance at the next start and makes the same objects again (deterministic UIDs).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from chestaid.apps.node.outputs import KEPT, WRITERS, Destination, Writer, queue_made
from chestaid.apps.node.result_types import ImageResult, ResultObject
from chestaid.apps.node.results import Algorithm
from chestaid.store import DATABASE_ERRORS, NO_RESULT_OBJECTS, Store
from chestaid.core.errors import describe
from chestaid.core.refusals import Refusal
from chestaid.data.patient import read_header, tag_values

log = logging.getLogger("chestaid.node")


def monitored_meta(header) -> dict | None:
    """What `chestaid monitor` compares across time: the unit (manufacturer, station), modality, view, sex and
    age band (decades) of an instance's header; None without one. Never a name or an identifier."""
    if header is None:
        return None
    text = {key: str(header.get(tag, "") or "").strip()[:64] for key, tag in (
        ("manufacturer", "Manufacturer"), ("station", "StationName"), ("modality", "Modality"))}
    patient = tag_values(header)  # sex M/F and view PA/AP as the training manifest counts them
    age = patient["age"]
    return {**text, "view": patient["view"] or "", "sex": patient["sex"] or "",
            "age_band": f"{int(age // 10) * 10}s" if age is not None else ""}


class Worker:
    """A thread that scores what the receiver queued; `wake()` after each receipt, `stop()` to end."""

    def __init__(self, store: Store, predictor, algorithm: Algorithm, destinations: list[str] | None = None,
                 batch_size: int = 16, heat_maps: bool = True, latency=None, per_image: bool = True) -> None:
        self.latency = latency  # a prometheus Histogram of seconds per instance (chestaid.apps.node.metrics)
        self.store, self.predictor, self.algorithm = store, predictor, algorithm
        self.destinations = [Destination.parse(d) for d in destinations or []]
        self.per_image = per_image  # per-image SRs and FHIR reports sent (False: kept; the study results are sent)
        self.writers = {kind: w for kind, w in WRITERS.items()
                        if kind in KEPT or (self._sent(w) and any(d.takes(kind) for d in self.destinations))}
        self.batch_size, self.heat_maps = batch_size, heat_maps
        self.labels = list(predictor.task.labels)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chestaid-node-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                rows = self.store.claim_queued(self.batch_size)
            except DATABASE_ERRORS as e:  # a shared database away: nothing claimed, tried again
                log.error("worker: cannot reach the store's database (%s); retrying in 5 s", describe(e))
                self._stop.wait(5)
                continue
            if not rows:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self.process(rows)
            except (OSError, *DATABASE_ERRORS) as e:  # the store's disk full or gone, its database locked or away
                log.error("worker: batch of %d not recorded (%s); the instances stay queued, retrying in 5 s",
                          len(rows), describe(e))
                self._stop.wait(5)
            except Exception as e:  # noqa: BLE001 - a bug here must not stop the node; the rows stay queued
                log.exception("worker: batch of %d failed (%s); retrying in 5 s", len(rows), describe(e))
                self._stop.wait(5)

    def process(self, rows) -> None:
        """Score one batch of queued rows and record each one's state, reason and results."""
        began = time.perf_counter()
        self._process(rows)
        if self.latency is not None:
            for _ in rows:
                self.latency.observe((time.perf_counter() - began) / len(rows))

    def _process(self, rows) -> None:
        by_path = {str(self.store.file_of(r)): r for r in rows}
        if any(not p.is_file() for p in map(self.store.file_of, rows)) and not (self.store.root / "instances").is_dir():
            raise OSError(f"{self.store.root}: the store's folder holds no instances (shared storage not mounted?)")
        scored, failed = self.predictor.score_files(list(by_path), self.batch_size, keep_images=True)
        for path, reason in failed:
            self._not_analysed(by_path[path], "unreadable", reason)
        refused = [s for s in scored if s.refused]
        for s in refused:  # another view of a chest study is not read; anything else is refused
            state = "not read" if s.refusal_kind is Refusal.VIEW else "refused"
            self._not_analysed(by_path[s.path], state, s.refusal, s.distance, s.refusal_kind)
        good = [s for s in scored if not s.refused]
        cams = self._cams(good) if good and self.heat_maps else [None] * len(good)
        for s, cam in zip(good, cams):
            self._scored(by_path[s.path], s, cam)

    def _cams(self, good) -> list[np.ndarray | None]:
        from chestaid.explain.gradcam import overlay

        try:
            # fp32, never measured: a re-score after a restart must make the same object under the same UID,
            # and a measured choice could flip between starts on a noisy machine
            explainer = self.predictor.explainer(precision="fp32")
            top = [int(np.argmax(s.risk)) for s in good]
            maps = explainer.maps(np.stack([s.image for s in good]), np.stack([s.tabular for s in good]), top)
            return [overlay(s.image, m) for s, m in zip(good, maps)]
        except Exception as e:  # noqa: BLE001 - no heat map is better than no result
            log.error("worker: heat maps failed for %d instances (%s)", len(good), describe(e))
            return [None] * len(good)

    def _results(self, result: ImageResult) -> list[dict]:
        """Every object the writers make for `result` (the DICOM objects always, kept in the store; other kinds
        where a destination takes them), made durable, and an outbox row for each destination taking it."""
        queued = []
        for writer in self.writers.values():
            made: ResultObject | None = writer.build(result)
            if made is not None:
                queued += queue_made(self.store, made, self.destinations if self._sent(writer) else [])
        return queued

    def _sent(self, writer: Writer) -> bool:
        return self.per_image or not writer.per_image

    def _source(self, row):
        header = read_header(self.store.file_of(row))
        if header is None or "StudyInstanceUID" not in header or "SOPInstanceUID" not in header:
            return None
        return header

    def _not_analysed(self, row, state: str, reason: str, distance: float | None = None,
                      refusal: Refusal = Refusal.NONE) -> None:
        sop_uid = row["sop_uid"]
        results, note, source = [], "", None
        try:
            source = self._source(row)
            if source is not None:
                results = self._results(ImageResult(source, self.algorithm, self.labels,
                                                    not_analysed=f"{state}: {reason}"))
        except OSError:
            raise  # the store cannot write now: stay queued rather than finish without the result
        except Exception as e:  # noqa: BLE001
            note = f"; no SR ({describe(e)})"
        if not self.store.finish(sop_uid, state, reason + note, results=results, model=self.algorithm.identity,
                                 distance=distance, meta=monitored_meta(source), refusal=refusal):
            return  # another node finished it first (this one was taken for gone)
        log.info("instance %s: %s (%s)", sop_uid, state, reason + note)

    def _scored(self, row, s, cam: np.ndarray | None) -> None:
        sop_uid = row["sop_uid"]
        top = int(np.argmax(s.risk))
        flagged = "|".join(self.labels[i] for i in np.flatnonzero(s.decisions))
        scores = {label: {"risk": float(s.risk[k]), "decision": int(s.decisions[k]), "logit": float(s.logits[k])}
                  for k, label in enumerate(self.labels)}
        note, source = "", None
        try:
            source = self._source(row)
            if source is None:
                raise ValueError("no DICOM header to reference")
            results = self._results(ImageResult(source, self.algorithm, self.labels, s.risk, s.decisions,
                                                self.predictor.thresholds.values, cam))
        except OSError:
            raise  # the store cannot write now: stay queued rather than finish without the results
        except Exception as e:  # noqa: BLE001
            results, note = [], f"{NO_RESULT_OBJECTS} ({describe(e)})"
        if not self.store.finish(sop_uid, "scored", note, risk=float(s.risk[top]), top=self.labels[top],
                                 flagged=flagged, scores=scores, results=results, model=self.algorithm.identity,
                                 distance=s.distance, meta=monitored_meta(source)):
            return  # another node finished it first (this one was taken for gone)
        log.info("instance %s: scored, risk %.4f (%s), flagged: %s%s", sop_uid, float(s.risk[top]),
                 self.labels[top], flagged or "none", f"; {note}" if note else "")
