"""How notices leave (outputs.TRANSPORTS): e-mail to an SMTP server with STARTTLS (`smtp://HOST:PORT`; the server's
certificate checked against --tls-ca or the system's; a login from $CHESTAID_SMTP_USER / $CHESTAID_SMTP_PASSWORD when
set), and a webhook POST (`webhook:https://…`; http only to this machine) of the signed JSON body. A server that
cannot be reached, or answers "not now" (SMTP 4xx, HTTP 429 or 5xx), is down: its notices stay pending and are retried
until it takes them; a refusal for good (SMTP 5xx, HTTP 4xx) is a failed try, a dead letter after --send-tries — the
notification itself stays open on the page and keeps escalating."""

from __future__ import annotations

import email
import os
import smtplib
import urllib.error
import urllib.request

from chestaid.apps.node.notices import SIGNATURE_HEADER
from chestaid.apps.node.tls import client_context


def send_smtp(sender, destination, rows: list) -> None:
    try:
        server = smtplib.SMTP(destination.host, destination.port, timeout=sender.timeout)
    except OSError as e:
        for row in rows:
            sender.record_failure(row, f"SMTP {destination}: cannot connect ({e.strerror or e})", down=True)
        return
    try:
        server.starttls(context=client_context(sender.tls))  # never in clear: refused when the server cannot
        if os.environ.get("CHESTAID_SMTP_USER"):
            server.login(os.environ["CHESTAID_SMTP_USER"], os.environ.get("CHESTAID_SMTP_PASSWORD", ""))
        for row in rows:
            try:
                message = email.message_from_bytes((sender.store.root / row["path"]).read_bytes())
                refused = server.send_message(message)
            except smtplib.SMTPRecipientsRefused as e:
                sender.record_failure(row, f"SMTP {destination} refused the recipient ({list(e.recipients)})")
                continue
            except smtplib.SMTPResponseException as e:  # 4xx: try again later, as long as it takes; 5xx: a try
                sender.record_failure(row, f"SMTP {destination}: {e.smtp_code} {e.smtp_error!r}",
                                      down=400 <= e.smtp_code < 500)
                continue
            except (smtplib.SMTPServerDisconnected, OSError) as e:  # the server went away: this and the rest wait
                for rest in rows[rows.index(row):]:
                    sender.record_failure(rest, f"SMTP {destination}: {type(e).__name__}", down=True)
                return
            except smtplib.SMTPException as e:
                sender.record_failure(row, f"SMTP {destination}: {type(e).__name__}")
                continue
            if refused:
                sender.record_failure(row, f"SMTP {destination} refused {sorted(refused)}")
            else:
                sender.store.sent(row["id"])
    except (smtplib.SMTPException, OSError) as e:  # STARTTLS or login failed now: tried again, as long as it takes
        permanent = isinstance(e, smtplib.SMTPResponseException) and e.smtp_code >= 500
        for row in rows:
            sender.record_failure(row, f"SMTP {destination}: {type(e).__name__} ({e})", down=not permanent)
    finally:
        try:
            server.quit()
        except (smtplib.SMTPException, OSError):
            pass


def send_webhook(sender, destination, rows: list) -> None:
    context = client_context(sender.tls) if destination.tls else None
    for row in rows:
        signature, body = (sender.store.root / row["path"]).read_bytes().split(b"\n", 1)
        request = urllib.request.Request(destination.url, data=body, method="POST", headers={
            "Content-Type": "application/json", SIGNATURE_HEADER: signature.decode()})
        try:
            with urllib.request.urlopen(request, timeout=sender.timeout, context=context) as response:
                response.read()
        except urllib.error.HTTPError as e:  # 429 and 5xx: the receiver is not taking anything now, retried until it does
            sender.record_failure(row, f"webhook {destination.url}: HTTP {e.code}", down=e.code == 429 or e.code >= 500)
            continue
        except OSError as e:
            sender.record_failure(row, f"webhook {destination.url}: {e}", down=True)
            continue
        sender.store.sent(row["id"])
