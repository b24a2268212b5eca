"""Build the outgoing MIME message: multipart/alternative, threading and loop-guard headers."""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from bot.templating import RenderedMail

# Every automatic mail says so (RFC 3834) and asks Exchange not to auto-answer it.
LOOP_GUARD_HEADERS = {
    "Auto-Submitted": "auto-replied",
    "X-Auto-Response-Suppress": "All",
}


def stable_message_id(purpose: str, reference: str, source_key: str, domain: str) -> str:
    """The same decision always yields the same Message-ID, so a retry is recognisable."""
    digest = hashlib.sha256(f"{purpose}\0{reference}\0{source_key}".encode()).hexdigest()[:20]
    return f"<supportbot.{purpose}.{reference.lower()}.{digest}@{domain}>"


def one_line(value: str) -> str:
    """Header injection guard: no CR, LF or other control characters survive."""
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())


def compose(rendered: RenderedMail, *, sender: str, sender_name: str, recipient: str,
            recipient_name: str, message_id: str, date: datetime, in_reply_to: str | None,
            references: tuple[str, ...], ticket_reference: str | None) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = formataddr((one_line(sender_name), sender))
    msg["To"] = formataddr((one_line(recipient_name), recipient))
    msg["Subject"] = one_line(rendered.subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references[-20:])
    for name, value in LOOP_GUARD_HEADERS.items():
        msg[name] = value
    if ticket_reference:
        msg["X-Supportbot-Ticket"] = ticket_reference
    msg.set_content(rendered.text, subtype="plain", charset="utf-8")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return msg.as_bytes()
