"""The pure decision: raw bytes + arrival time + a read-only view → what to do with a mail.

Nothing here writes or sends; the store applies the Decision in one transaction. This is
what makes `check`, the demo and replay faithful to production.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from bot.authres import verify_sender
from bot.classify import Graded, grade
from bot.entitlement import BILINGUAL, ContractTerms, InvoiceState, Reason, Verdict, assess
from bot.exclusions import flag_exclusions
from bot.language import detect
from bot.identify import Sender
from bot.mailparse import ParsedMail, UnparseableMail, parse
from bot.mailthread import ThreadView, find_ticket
from bot.rules import Rules
from bot.sla import Deadline, deadline, terms_for

log = logging.getLogger(__name__)

# Decision kinds.
NEW_TICKET = "new_ticket"
FOLLOWUP = "followup"
AUTOMATIC = "automatic"
OWN = "own"
QUARANTINED = "quarantined"


# The ack rate limit counts automatic mails over this window.
RATE_WINDOW = timedelta(hours=1)


class DecisionView(ThreadView, Protocol):
    def automatic_mails_to(self, address: str, since: datetime) -> int:
        """How many automatic mails we queued for this address since then (loop guard)."""

    def sender_and_contracts(self, address: str) -> tuple[Sender, list[tuple[ContractTerms, list[InvoiceState]]]]:
        """Who wrote, and their customer's contracts with the invoices."""


@dataclass(frozen=True)
class Policy:
    """What decide() needs from the deployment settings."""

    support_address: str
    message_id_domain: str
    reference_prefix: str = "SUP"
    default_language: str = "en"
    ack_rate_limit_per_hour: int = 5
    # The contract policies. None: contracts are not consulted and every new request is
    # acknowledged (store tests that are not about contracts); the service always sets it.
    rules: Rules | None = None
    triage_address: str | None = None  # told about requests from unknown senders
    triage_notices_per_hour: int = 20
    authserv_id: str | None = None  # set: the From address must be authenticated by this server


@dataclass(frozen=True)
class OutgoingMail:
    """A mail to render and queue: which template, for whom, in reply to what."""

    purpose: str
    template: str
    language: str
    recipient: str
    recipient_name: str
    subject: str
    in_reply_to: str | None
    references: tuple[str, ...]
    reasons: tuple[str, ...] = ()  # why support was refused, for the refusal mail
    customer_name: str | None = None
    exclusions: tuple[dict, ...] = ()  # possibly excluded matters: description per language
    severity: dict[str, str] | None = None  # the label per language, for the acknowledgement
    deadline: Deadline | None = None  # none: best effort (or no acknowledgement)


@dataclass(frozen=True)
class Reading:
    """A mail's bytes read once: the parse, or why there is none, and the digest."""

    raw_sha256: str
    mail: ParsedMail | None
    problem: str = ""

    @property
    def message_key(self) -> str:
        """What makes a mail the same mail again: its Message-ID, else its bytes."""
        return self.mail.message_id if self.mail and self.mail.message_id else f"sha256:{self.raw_sha256}"


def read(raw: bytes) -> Reading:
    """Never raises: a mail that even breaks the parser is quarantined, not lost."""
    digest = hashlib.sha256(raw).hexdigest()
    try:
        return Reading(digest, parse(raw))
    except UnparseableMail as error:
        return Reading(digest, None, f"unparseable: {error.reason}")
    except Exception as error:  # noqa: BLE001 - a parser bug on hostile input
        log.exception("mail with SHA-256 %s broke the parser", digest)
        return Reading(digest, None, f"processing failed: {type(error).__name__}: {error}")


@dataclass(frozen=True)
class Decision:
    kind: str
    message_key: str
    raw_sha256: str
    received_at: datetime
    mail: ParsedMail | None
    reasons: tuple[str, ...]
    ticket_reference: str | None = None
    language: str = "en"
    outgoing: tuple[OutgoingMail, ...] = field(default=())
    status: str = "open"  # of a new ticket: open, refused or unidentified
    customer_id: int | None = None
    contract_id: int | None = None
    flags: tuple[str, ...] = ()  # possibly excluded matters (exclusion keys), for the agent
    severity: Graded | None = None  # of an entitled request
    deadline: Deadline | None = None  # its first response; none: best effort


def decide(reading: Reading, received_at: datetime, view: DecisionView, policy: Policy) -> Decision:
    """Decide what a mail that arrived at `received_at` (IMAP INTERNALDATE) means."""
    mail = reading.mail
    if mail is None:
        return Decision(QUARANTINED, reading.message_key, reading.raw_sha256, received_at, None,
                        (reading.problem,))
    base = dict(message_key=reading.message_key, raw_sha256=reading.raw_sha256,
                received_at=received_at, mail=mail)
    for screen in SCREENS:
        verdict = screen(mail, policy)
        if verdict:
            kind, reason = verdict
            match = find_ticket(mail, view, policy.reference_prefix)
            return Decision(kind, reasons=(reason,), ticket_reference=match and match.reference, **base)
    return _customer_mail(mail, view, policy, base)


def _own_mail(mail: ParsedMail, policy: Policy) -> tuple[str, str] | None:
    """Our own acknowledgements (or anything from our address) must never be answered."""
    if mail.message_id and mail.message_id.endswith(f"@{policy.message_id_domain}>") \
            and mail.message_id.startswith("<supportbot."):
        return OWN, "our own mail (Message-ID)"
    if mail.from_addr == policy.support_address.lower():
        return OWN, f"sent from our support address {policy.support_address}"
    return None


def _automatic_mail(mail: ParsedMail, policy: Policy) -> tuple[str, str] | None:
    """RFC 3834: never auto-answer auto-replies, bounces or list traffic."""
    return (AUTOMATIC, f"automatic mail ({mail.auto})") if mail.auto else None


def _no_sender(mail: ParsedMail, policy: Policy) -> tuple[str, str] | None:
    return None if mail.from_addr else (QUARANTINED, "no usable sender address in From")


# The screens run in this order; the first that matches decides.
SCREENS = (_own_mail, _automatic_mail, _no_sender)


def _customer_mail(mail: ParsedMail, view: DecisionView, policy: Policy, base: dict) -> Decision:
    match = find_ticket(mail, view, policy.reference_prefix)
    if match:
        return Decision(FOLLOWUP, reasons=(f"follow-up: {match.evidence}",),
                        ticket_reference=match.reference, language=policy.default_language, **base)
    request = _request(mail, view, policy, base["received_at"])
    reasons = ["new request", *request["reasons"]]
    reply = _reply(mail, request, policy)
    since = base["received_at"] - RATE_WINDOW
    if view.automatic_mails_to(mail.from_addr, since) >= policy.ack_rate_limit_per_hour:
        reasons.append(f"no automatic reply: rate limit of {policy.ack_rate_limit_per_hour} "
                       f"automatic mails per hour to {mail.from_addr} reached")
        reply = ()
    notices = request["notices"]
    if notices and view.automatic_mails_to(policy.triage_address, since) >= policy.triage_notices_per_hour:
        reasons.append(f"triage not told: {policy.triage_notices_per_hour} notices in the last hour "
                       f"already; the request waits in: supportbot tickets list --status {request['status']}")
        notices = ()
    return Decision(NEW_TICKET, reasons=tuple(reasons), language=request["language"],
                    outgoing=reply + notices, status=request["status"],
                    customer_id=request["customer_id"], contract_id=request["contract_id"],
                    flags=tuple(flag.key for flag in request["flags"]), severity=request["severity"],
                    deadline=request["deadline"], **base)


def _request(mail: ParsedMail, view: DecisionView, policy: Policy, received_at: datetime) -> dict:
    """Who wrote and what their contract allows, as the new ticket records it."""
    plain = dict(status="open", reasons=(), language=policy.default_language, customer_id=None,
                 contract_id=None, customer_name=None, notices=(), flags=(), exclusions=(),
                 severity=None, labels=None, deadline=None)
    if policy.rules is None:
        return plain
    if policy.authserv_id:
        trusted, why = verify_sender(mail.from_addr, mail.authentication_results, policy.authserv_id)
        if not trusted:  # no reply: a forged From would make us mail the person it names
            notices = (_notice(mail, policy.triage_address, "unverified"),) if policy.triage_address else ()
            return dict(plain, status="unverified", notices=notices,
                        reasons=(f"unverified sender, held for an agent: {why}",))
    sender, contracts = view.sender_and_contracts(mail.from_addr)
    assessment = assess(sender, contracts, policy.rules, received_at)
    customer = sender.customer
    languages = assessment.policy.languages if assessment.policy else ("en", "fr")
    detected = detect(f"{mail.subject}\n{mail.text}")
    if detected.sure_enough_to_answer() and detected.code in languages:
        language = detected.code
    else:
        language = customer.language if customer and customer.language in languages else policy.default_language
    verdict = assessment.verdict
    if customer and detected.sure_enough_to_refuse() and detected.code not in languages:
        verdict = Verdict(False, verdict.reasons + (Reason.of(
            "language", language=detected.code, served="+".join(languages)),), verdict.period)
        language = BILINGUAL
    request = dict(plain, language=language, reasons=verdict.reasons,
                   customer_id=customer and customer.id, customer_name=customer and customer.name,
                   contract_id=assessment.contract and assessment.contract.id)
    if customer is None:
        notices = (_notice(mail, policy.triage_address, "unknown"),) if policy.triage_address else ()
        return dict(request, status="unidentified", notices=notices)
    where = f"contract {assessment.contract.number}" if assessment.contract else customer.name
    if verdict.entitled:
        flags = flag_exclusions(assessment.policy, f"{mail.subject}\n{mail.text}")
        described = {e.key: e.description for e in assessment.policy.exclusions}
        level, why = _service_level(mail, assessment, policy.rules, received_at)
        return dict(request, **level, flags=flags, exclusions=tuple(described[f.key] for f in flags),
                    reasons=(f"entitled under {where} ({assessment.policy.name})", *why)
                    + tuple(f"may be an excluded matter ({f.key}): {f.evidence}" for f in flags))
    return dict(request, status="refused")


def _service_level(mail: ParsedMail, assessment, rules: Rules, received_at: datetime) -> tuple[dict, tuple]:
    """The severity the request's words point to, and the deadline its contract sets (an
    Order's overrides applied), with the reasons the audit trail keeps."""
    contract_policy, calendar = terms_for(assessment.policy, rules.calendar_for(assessment.policy),
                                          assessment.contract.overrides)
    graded = grade(rules.severity, mail.subject, mail.text, contract_policy.default_severity)
    labels = contract_policy.severity(graded.level).labels
    due = deadline(contract_policy, calendar, graded.level, received_at)
    timing = due.explain() if due else f"best effort: {contract_policy.name} sets no response time"
    return dict(severity=graded, labels=labels, deadline=due), \
        (graded.explain(labels.get("en") or next(iter(labels.values()))), timing)


def _reply(mail: ParsedMail, request: dict, policy: Policy) -> tuple[OutgoingMail, ...]:
    if request["status"] == "unverified":
        return ()
    template = {"open": "ack", "refused": "refusal", "unidentified": "unknown_sender"}[request["status"]]
    references = mail.references + ((mail.message_id,) if mail.message_id else ())
    return (OutgoingMail(template, template, request["language"], mail.from_addr, mail.from_name, mail.subject,
                         mail.message_id, references, tuple(request["reasons"]), request["customer_name"],
                         request["exclusions"], request["labels"], request["deadline"]),)


def _notice(mail: ParsedMail, triage_address: str, why: str) -> OutgoingMail:
    """Tell the people who sort unknown or unverified senders (in English: it is for the staff)."""
    return OutgoingMail("triage", "triage", "en", triage_address, "", mail.subject, None, (), (why,))
