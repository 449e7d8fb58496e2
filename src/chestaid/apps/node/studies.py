"""The study assembler: a thread that turns complete studies into study results (store.studies decides which are
due: every instance decided, then a quiet period without a new image or a forced completion). A study result is made
by the study writers (outputs.STUDY_WRITERS), made durable and queued for every destination taking it, in the same
transaction that records it as the study's current result; a late image makes the next version, which supersedes
the last. A study that fails is tried again after a pause, never in a tight loop."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import pydicom

from chestaid.apps.node.notices import NoticeSettings, notices, summary_of
from chestaid.apps.node.outputs import STUDY_WRITERS, Destination, queue_made
from chestaid.apps.node.periodic import Periodic
from chestaid.apps.node.result_types import StudyImage, StudyResult, Triage
from chestaid.core.errors import describe
from chestaid.data.patient import read_header
from chestaid.inference.identity import same_model
from chestaid.inference.triage_rules import Level, TriageRules, highest, ordered_level
from chestaid.store import State, Store

log = logging.getLogger("chestaid.node")
RETRY_AFTER = 30.0  # seconds before a study whose result failed is tried again
TIER_CHECK = 60.0  # seconds between checks of whether the live likely-normal tier must switch off


class StudyAssembler(Periodic):
    """`start()` a thread checking every `period` s; `stop()` to end; `run_once()` for one pass."""

    name = "chestaid-node-studies"

    def __init__(self, store: Store, algorithm, labels: list[str], thresholds: dict | None,
                 destinations: list[str], quiet_period: float = 60.0, period: float = 1.0,
                 rules: TriageRules | None = None, notify: NoticeSettings | None = None) -> None:
        self.store, self.algorithm, self.labels, self.thresholds = store, algorithm, labels, thresholds
        self.rules, self.notify = rules, notify
        self.destinations = [Destination.parse(d) for d in destinations]
        self.quiet_period = quiet_period
        self._failed: dict[str, float] = {}
        self._tier_off, self._tier_checked = "", float("-inf")
        super().__init__(period)

    def run_once(self) -> int:
        """Report every due study; returns how many were reported."""
        done = 0
        for due in self.store.studies_due(self.quiet_period):
            if time.time() < self._failed.get(due["study_uid"], 0):
                continue
            try:
                self.report(due)
                done += 1
            except Exception as e:  # noqa: BLE001 - one study's failure is that study's, logged, tried again
                self._failed[due["study_uid"]] = time.time() + RETRY_AFTER
                log.error("study %s: no study result (%s); tried again in %.0f s", due["study_uid"], describe(e),
                          RETRY_AFTER)
        return done

    def report(self, due: dict) -> None:
        """The study result of one due study, durable and queued, recorded as the study's current one."""
        store = self.store
        images = []
        for d in (store.decision(uid) for uid in due["instances"]):
            header = read_header(store.file_of(store.instance(d.sop_uid))) if d is not None else None
            if header is None:
                continue  # covered, but with no header to reference (its own row says why)
            scored = d.state is State.SCORED and bool(d.scores) and same_model(d.model, self.algorithm.identity)
            if d.state is State.SCORED and not scored:  # another run's scores are never this run's result
                d = replace(d, state=State.NOT_READ, reason="scored by another run than this result's")
            images.append(StudyImage(header, d.state.value, d.reason,
                                     np.array([d.scores[f].risk for f in self.labels]) if scored else None,
                                     np.array([d.scores[f].decision for f in self.labels]) if scored else None))
        if not images:
            raise ValueError("no readable DICOM header among the study's instances")
        read = [i for i in images if i.risk is not None]
        risk = np.max([i.risk for i in read], axis=0) if read else None  # the study rule: the highest score
        decisions = np.any([i.decisions for i in read], axis=0) if read else None  # and present when any image says so
        why = "" if read else "no image of the study was read: " + "; ".join(
            f"{i.state}: {i.reason}"[:120] for i in images[:3])
        previous = pydicom.dcmread(store.result_path(due["result_uid"])) if due["result_uid"] else None
        result = StudyResult(images, self.algorithm, self.labels, risk, decisions, self.thresholds,
                             due["version"] + 1, due["instances"], previous, why, self._triage(images, risk))
        rows, uid, replaced = [], "", []
        for kind, writer in STUDY_WRITERS.items():
            made = writer.build(result)
            if made is not None:
                uid = uid or made.uid
                rows += queue_made(store, made, self.destinations)
                replaced += [kind.value] if writer.replaces else []
        self._failed.pop(due["study_uid"], None)
        if not store.study_reported(due["study_uid"], result.version, uid, due["instances"], rows, replaced,
                                    self._notice(result), result.triage.level if result.triage else ""):
            log.debug("study %s: version %d reported by another node", due["study_uid"], result.version)
            return
        log.info("study %s: result version %d (%d of %d instance(s) read)%s%s", due["study_uid"], result.version,
                 len(read), len(due["instances"]), "; supersedes the previous" if previous is not None else "",
                 f"; triage {result.triage.level}" if result.triage else "")

    def _notice(self, result: StudyResult) -> tuple[str, dict, list[dict]] | None:
        """A critical study's first notices (opened with its result unless it has a notification already)."""
        if self.notify is None or not self.notify.active or result.triage is None or (
                result.triage.found != Level.CRITICAL.value):  # what the findings reached, not the order's priority
            return None
        summary = summary_of(result, self.notify.patient_names)
        destinations = list(self.notify.destinations.values())
        return (result.triage.level, summary, [row for made in notices(self.notify, summary, 0)
                                               for row in queue_made(self.store, made, destinations)])

    def _triage(self, images: list[StudyImage], risk) -> Triage | None:
        """The study's level under the site's rules, never below the level its order came with."""
        if self.rules is None:
            return None
        found, raised = (Level.ROUTINE, []) if risk is None else self.rules.level_of(
            dict(zip(self.labels, map(float, risk))), self.thresholds or {})
        ordered = ordered_level([i.source for i in images])
        level = highest([found, ordered] if ordered is not None else [found])
        tier = self.rules.likely_normal
        below = (tier is not None and risk is not None and level is Level.ROUTINE
                 and all(float(v) < tier.rule_out for v in risk))  # never below what the order asked
        off = self.tier_off() if tier is not None and tier.live else ""
        if below and tier.live and not off:
            level = Level.LIKELY_NORMAL
        return Triage(level.value, found.value, tuple(raised), ordered.value if ordered else None,
                      self.rules.identity, shadow_likely_normal=below and not tier.live, tier_off=off)

    def tier_off(self, now: float | None = None) -> str:
        """Why the live likely-normal tier is off ("" while it is on), checked at most every TIER_CHECK s; once off
        it stays off until the node starts again (and re-earns its evidence): the monitor alarms in this model's
        latest window, or cannot watch it, or a verdict shows a study it lowered abnormal."""
        now = time.time() if now is None else now
        if self._tier_off or now - self._tier_checked < TIER_CHECK:
            return self._tier_off
        from chestaid.inference.identity import describe_model
        from chestaid.workflows.monitor import monitor

        self._tier_checked, reasons = now, []
        try:
            lowered = self.store.lowered_abnormal()
            if lowered:
                reasons.append(f"a verdict shows {len(lowered)} stud(ies) it lowered abnormal")
            watched = monitor(self.store.root)
            own = describe_model(self.algorithm.identity)
            if any(a["model"] == own for a in watched["latest_alarms"]):
                reasons.append("the monitor alarms on this model's latest window: "
                               + ", ".join(a["signal"] for a in watched["latest_alarms"] if a["model"] == own)[:200])
            if any(m["model"] == own for m in watched["not_monitored"]):
                reasons.append("the monitor cannot watch this model (no monitoring reference)")
        except Exception as e:  # noqa: BLE001 - a check that cannot run switches the tier off (fail closed)
            reasons.append(f"its safety check failed ({describe(e)})")
        self._tier_off = "; ".join(reasons)
        self.store.set_tier("off" if reasons else "live", self._tier_off)
        if reasons:
            log.warning("likely-normal tier switched off: %s", self._tier_off)
        return self._tier_off
