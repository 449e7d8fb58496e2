"""Critical-finding notifications that someone must acknowledge (issue 44): a real SMTP server (aiosmtpd, STARTTLS
required, a certificate made by openssl) that is down when the first notices are made; a webhook receiver that
checks each body's HMAC-SHA256 signature; two critical studies — one acknowledged on the page in chromium, which
escalates no further, one left alone, which escalates to the second contact after the set time. Both the
acknowledgement and the escalation are in the audit trail; no notice and no log line carries the patient's name;
the time to acknowledge is a Prometheus histogram."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from chestaid.apps.node.notices import SIGNATURE_HEADER, NoticeSettings
from chestaid.apps.node.tls import TlsSettings
from node_helpers import DCMTK, dcmsend, free_port, phantom
from serving import serve_command, serving
from test_node import run, start_node, wait_for  # noqa: F401 - run: the module's fixture
from test_page_browser import _browser

aiosmtpd = pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd (a real SMTP server) is a test dependency")
pytestmark = [pytest.mark.peers, pytest.mark.skipif(not (DCMTK / "dcmsend").is_file(), reason="needs DCMTK")]
SECRET = "test-secret-not-for-production"
ESCALATE = 25.0
RULES = "version: notify-test-1\nfindings:\n  Effusion: {level: critical, threshold: 0.0}\n"  # every study critical


class Mailbox:
    """aiosmtpd's handler: every message with its envelope and whether it came over TLS."""

    def __init__(self) -> None:
        self.mails: list[dict] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        import email
        from email import policy

        message = email.message_from_bytes(envelope.content, policy=policy.default)
        self.mails.append({"to": list(envelope.rcpt_tos), "text": f"{message['Subject']}\n{message.get_content()}",
                           "tls": session.ssl is not None})
        return "250 OK"


def certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "smtp.pem", folder / "smtp.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def webhook_receiver(port: int, bodies: list) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            bodies.append((json.loads(body), hmac.compare_digest(expected, self.headers[SIGNATURE_HEADER] or "")))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_critical_studies_notify_one_acknowledged_on_the_page_one_escalated(run, tmp_path, monkeypatch,  # noqa: F811
                                                                            caplog):
    from aiosmtpd.controller import Controller
    from playwright.sync_api import sync_playwright

    caplog.set_level("DEBUG", logger="chestaid")
    monkeypatch.setenv("CHESTAID_WEBHOOK_SECRET", SECRET)
    cert, key = certificate(tmp_path)
    (tmp_path / "rules.yaml").write_text(RULES)
    smtp_port, hook_port, page_port = free_port(), free_port(), free_port()
    bodies: list = []
    hook = webhook_receiver(hook_port, bodies)
    mailbox, smtp = Mailbox(), None
    settings = NoticeSettings(("first@hospital.test", "second@hospital.test"), f"127.0.0.1:{smtp_port}",
                              "chestaid@hospital.test", f"http://127.0.0.1:{hook_port}/hook", escalate_after=ESCALATE)
    store = tmp_path / "store"
    node = start_node(run, store, heat_maps=False, study_quiet_period=1.0, per_image_results=False,
                      triage_rules=tmp_path / "rules.yaml", notify=settings, tls=TlsSettings(ca=cert),
                      retry_delay=0.5, max_retry_delay=2.0)
    studies = [generate_uid(), generate_uid()]
    try:
        with serving(serve_command(run.root, page_port, "--store", str(store)), page_port) as url, \
                sync_playwright() as p:
            dcmsend(node.port, [phantom(tmp_path / f"{k}.dcm", s, k, patient=f"P{k}") for k, s in enumerate(studies)])
            wait_for(lambda: len(node.store.notifications()) == 2, 120, what="two critical notifications")
            opened = time.time()
            wait_for(lambda: any(o["down_tries"] for o in node.store.outbox() if o["kind"] == "notice-email"), 60,
                     what="the mail server down at first")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port, tls_context=context,
                              require_starttls=True)
            smtp.start()
            wait_for(lambda: len(mailbox.mails) == 2, 60, what="the first contact's two e-mails")
            browser = _browser(p)
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(url)
            page.click("button[role=tab]:has-text('Worklist')")
            page.wait_for_function(f"() => document.querySelector('#notifications').innerText.includes('{studies[0]}')",
                                   timeout=30_000)
            page.fill("#worklist-study textarea, #worklist-study input", studies[0])
            page.click("#worklist-open-study")
            page.wait_for_function("() => document.querySelector('#study-status textarea').value.includes('image')",
                                   timeout=30_000)
            page.click("#notification-ack")
            page.wait_for_function("() => document.querySelector('#study-status textarea').value.includes("
                                   "'acknowledged')", timeout=30_000)
            browser.close()
            assert time.time() - opened < ESCALATE, "acknowledged too late for this test to mean anything"
            wait_for(lambda: len(mailbox.mails) == 3, ESCALATE + 60, what="the escalation e-mail")
            time.sleep(ESCALATE / 2 + 3)  # the acknowledged study would escalate now
    finally:
        node.stop()
        hook.shutdown()
        if smtp is not None:
            smtp.stop()
    first = [m for m in mailbox.mails if m["to"] == ["first@hospital.test"]]
    second = [m for m in mailbox.mails if m["to"] == ["second@hospital.test"]]
    assert len(first) == 2 and len(second) == 1 and all(m["tls"] for m in mailbox.mails)
    assert studies[1] in second[0]["text"] and "escalated" in second[0]["text"]
    assert len(mailbox.mails) == 3  # the acknowledged study called no one else
    assert len(bodies) == 3 and all(ok for _, ok in bodies)  # every webhook body's signature verifies
    assert sorted((b["study_uid"], b["escalation"]) for b, _ in bodies) == sorted(
        [(studies[0], 0), (studies[1], 0), (studies[1], 1)])
    from chestaid.apps.node.metrics import StoreCollector
    from chestaid.store import Store

    opened_store = Store.open(store)
    trail = [(r["action"], r["user"], r["sop_uid"]) for r in opened_store.audit_rows()]
    assert ("acknowledge", "local", studies[0]) in trail and ("escalate", "chestaid", studies[1]) in trail
    said = json.dumps([m["text"] for m in mailbox.mails]) + json.dumps([b for b, _ in bodies]) + caplog.text
    assert "PHANTOM" not in said  # no patient name by default (the phantoms are PHANTOM^TEST)
    metrics = {m.name: m for m in StoreCollector(opened_store).collect()}
    assert metrics["chestaid_notifications_open"].samples[0].value == 1
    count = next(s for s in metrics["chestaid_notification_ack_seconds"].samples if s.name.endswith("_count"))
    assert count.value == 1
    opened_store.close()
