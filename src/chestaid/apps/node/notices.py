"""Critical-finding notifications with acknowledgement: a study whose result reaches the critical level under the
site's rules is notified — an e-mail to the first contact (SMTP with STARTTLS) and a signed JSON webhook — and stays
open until a user acknowledges it on the page (audited). Unacknowledged after `--escalate-after` seconds it goes
to the next contact (audited as an escalation), and so on down the list. Every notice is a result object in the
durable outbox, so a mail server or a webhook that is down is retried and no notice is lost; a notice never carries
a patient's name unless the site turns names on (`--notify-patient-names`).

The webhook body is signed with HMAC-SHA256 under the site's secret (read from the environment variable the site
names, never from a file in the store): header `X-Chestaid-Signature: sha256=<hex of HMAC(secret, body)>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate

from chestaid.apps.node.periodic import Periodic
from chestaid.apps.node.result_types import Kind, ResultObject, StudyResult
from chestaid.apps.node.results import derived_uid
from chestaid.core.errors import ChestaidError

log = logging.getLogger("chestaid.node")
SIGNATURE_HEADER = "X-Chestaid-Signature"


@dataclass(frozen=True)
class NoticeSettings:
    """Who is told, how, and when the next contact is: e-mail `contacts` in escalation order through `smtp`
    (HOST:PORT, STARTTLS), a `webhook` URL signed with the secret in the environment variable `secret_env`."""

    contacts: tuple[str, ...] = ()
    smtp: str = ""
    sender: str = "chestaid@localhost"
    webhook: str = ""
    secret_env: str = "CHESTAID_WEBHOOK_SECRET"
    escalate_after: float = 900.0
    patient_names: bool = False
    page_url: str = ""
    destinations: dict = field(default_factory=dict, compare=False)

    def check(self) -> "NoticeSettings":
        if self.contacts and not self.smtp:
            raise ChestaidError("--notify-email needs --notify-smtp HOST:PORT (a mail server speaking STARTTLS)")
        if self.webhook and not os.environ.get(self.secret_env):
            raise ChestaidError(f"--notify-webhook signs its bodies: set the secret in ${self.secret_env}")
        return self

    @property
    def active(self) -> bool:
        return bool(self.contacts or self.webhook)


def summary_of(result: StudyResult, names: bool) -> dict:
    """What a notice says about a study: identifiers, the findings that raised it, the model and the rules."""
    first = result.images[0].source
    raised = result.triage.raised if result.triage else ()
    scores = {label: round(float(result.risk[k]), 4) for k, label in enumerate(result.labels)
              if label in raised} if result.risk is not None else {}
    said = {"study_uid": str(first.StudyInstanceUID), "accession": str(first.get("AccessionNumber", "") or ""),
            "patient_id": str(first.get("PatientID", "") or ""), "level": result.triage.level if result.triage else "",
            "findings": scores, "run": result.algorithm.run_name, "rules": result.triage.rules if result.triage else "",
            "version": result.version}
    if names:
        said["patient_name"] = str(first.get("PatientName", "") or "")
    return said


def notices(settings: NoticeSettings, summary: dict, contact: int) -> list[ResultObject]:
    """The notices of one notification to contact number `contact` (0: the first; later ones escalate)."""
    made = []
    key = derived_uid("chestaid", "notice", summary["study_uid"], str(contact))
    escalation = f" (escalated: unacknowledged after {settings.escalate_after:.0f} s)" if contact else ""
    findings = ", ".join(f"{f} (score {s})" for f, s in summary["findings"].items()) or "see the study result"
    if settings.contacts:
        mail = EmailMessage()
        mail["Subject"] = (f"[chestaid] CRITICAL: study {summary['accession'] or summary['study_uid']}{escalation}"
                           )[:200]
        mail["From"], mail["To"] = settings.sender, settings.contacts[contact]
        mail["Date"], mail["Message-ID"] = formatdate(localtime=False), f"<{key}@chestaid>"
        mail.set_content("\n".join([
            f"A study reached the critical level under the site's triage rules{escalation}.", "",
            f"Study Instance UID: {summary['study_uid']}", f"Accession: {summary['accession'] or '(none)'}",
            f"Patient ID: {summary['patient_id'] or '(none)'}",
            *([f"Patient name: {summary['patient_name']}"] if "patient_name" in summary else []),
            f"Findings: {findings}", f"Model: chestaid run {summary['run']}; rules {summary['rules']}", "",
            "Acknowledge it on the worklist page" + (f" ({settings.page_url})" if settings.page_url else "")
            + ": open the study, 'Acknowledge critical finding'. Unacknowledged, it goes to the next contact.",
            "Preliminary, unverified machine result: triage support, not a diagnosis."]))
        made.append(ResultObject(Kind.NOTICE_EMAIL, derived_uid(key, "mail"), "e-mail", mail.as_bytes(), ".eml"))
    if settings.webhook:
        body = json.dumps({"event": "chestaid.critical_finding", "escalation": contact,
                           "contact": settings.contacts[contact] if settings.contacts else "", **summary},
                          sort_keys=True).encode()
        signature = hmac.new(os.environ[settings.secret_env].encode(), body, hashlib.sha256).hexdigest()
        made.append(ResultObject(Kind.NOTICE_WEBHOOK, derived_uid(key, "webhook"), "webhook",
                                 f"sha256={signature}\n".encode() + body, ".json"))
    return made


class Escalator(Periodic):
    """A thread that escalates open notifications past `escalate_after` to the next contact."""

    name = "chestaid-node-notices"

    def __init__(self, store, settings: NoticeSettings, queue, period: float = 1.0) -> None:
        self.store, self.settings, self.queue = store, settings, queue
        super().__init__(period)

    def run_once(self, now: float | None = None) -> int:
        done = 0
        for due in self.store.due_escalations(self.settings.escalate_after, max(1, len(self.settings.contacts)),
                                              now):
            rows = [r for made in notices(self.settings, due["summary"], due["contact"] + 1)
                    for r in self.queue(made)]
            if self.store.escalated(due, rows):
                done += 1
                log.warning("study %s: critical notification unacknowledged after %.0f s: escalated to contact %d",
                            due["study_uid"], time.time() - due["last_sent_at"], due["contact"] + 2)
        return done
