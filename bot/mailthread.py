"""Find the ticket a mail belongs to: message references first, then the subject tag."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from bot.mailparse import ParsedMail


class ThreadView(Protocol):
    def ticket_for_message_ids(self, message_ids: tuple[str, ...]) -> str | None:
        """Reference of the ticket that any of these Message-IDs (ours or theirs) belongs to."""

    def ticket_exists(self, reference: str) -> bool: ...


@dataclass(frozen=True)
class ThreadMatch:
    reference: str
    evidence: str


@lru_cache(maxsize=8)
def subject_tag_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(r"\[(" + re.escape(prefix) + r"-\d{6,})\]")


def thread_ids(mail: ParsedMail) -> tuple[str, ...]:
    """The Message-IDs a mail answers, In-Reply-To first, without repeats."""
    return tuple(dict.fromkeys(((mail.in_reply_to,) if mail.in_reply_to else ()) + mail.references))


def subject_tags(mail: ParsedMail, prefix: str) -> list[str]:
    return subject_tag_pattern(prefix).findall(mail.subject)


def find_ticket(mail: ParsedMail, view: ThreadView, prefix: str) -> ThreadMatch | None:
    """References/In-Reply-To win (clients keep them); the [SUP-000042] tag is the fallback
    for clients and people that drop them."""
    ids = thread_ids(mail)
    if ids:
        reference = view.ticket_for_message_ids(ids)
        if reference:
            return ThreadMatch(reference, "references a message of the ticket")
    for tag in subject_tags(mail, prefix):
        if view.ticket_exists(tag):
            return ThreadMatch(tag, f"subject tag [{tag}]")
    return None
