"""Read-only views of the store for the command line: ticket lists and audit trails."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bot.models import Contract, Event, Message, OutboxMail, Ticket
from bot.rules import Policy, Rules
from bot.wording import long_moment


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _severity(ticket: Ticket, policy: Policy | None) -> str:
    if not ticket.severity:
        return "-"
    known = policy and ticket.severity in policy.levels
    return f"{ticket.severity}" + (f" {policy.severity(ticket.severity).label('en')}" if known else "") \
        + f" ({ticket.severity_source})"


def _deadline(ticket: Ticket) -> str:
    """When the first response is due: a time, best effort (graded, no target) or -."""
    return _when(ticket.deadline_at) if ticket.deadline_at or not ticket.severity else "best effort"


def ticket_lines(engine: Engine, status: str | None = None) -> list[str]:
    with Session(engine) as session:
        query = select(Ticket).order_by(Ticket.id)
        if status:
            query = query.where(Ticket.status == status)
        tickets = session.exec(query).all()
    header = f"{'ticket':<11} {'status':<12} {'sev':<3} {'received':<23} {'deadline':<23} requester / subject"
    return [header] + [
        f"{t.reference:<11} {t.status:<12} {t.severity or '-':<3} {_when(t.received_at):<23} "
        f"{_deadline(t):<23} "
        f"{t.requester} / {t.subject}" for t in tickets]


def ticket_report(engine: Engine, reference: str, rules: Rules | None = None) -> list[str] | None:
    """Everything that happened to a ticket, in order, from the audit trail; with the rules,
    the severity's label and the deadline in the contract's own time zone too."""
    with Session(engine) as session:
        ticket = session.exec(select(Ticket).where(Ticket.reference == reference.upper())).first()
        if ticket is None:
            return None
        contract = session.get(Contract, ticket.contract_id) if ticket.contract_id else None
        messages = session.exec(select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id)).all()
        mails = session.exec(select(OutboxMail).where(OutboxMail.ticket_id == ticket.id).order_by(OutboxMail.id)).all()
        events = session.exec(select(Event).where(Event.ticket_id == ticket.id).order_by(Event.id)).all()
    policy = rules.policies.get(contract.policy) if rules and contract else None
    zone = rules.calendar_for(policy).tz if policy and policy.calendar in rules.calendars else None
    lines = [f"{ticket.reference}  {ticket.subject}",
             f"  requester     {ticket.requester_name} <{ticket.requester}>".replace(" <", " <", 1),
             f"  status        {ticket.status}" + (f"  (may be excluded: {ticket.flags})" if ticket.flags else ""),
             f"  language      {ticket.language}",
             f"  severity      {_severity(ticket, policy)}",
             f"  received      {_when(ticket.received_at)}",
             f"  deadline      {_deadline(ticket)}" + (f"  ({long_moment(ticket.deadline_at.astimezone(zone))} "
                                                      f"for the customer)" if zone and ticket.deadline_at else "")
             + (f"  (managers warned from {_when(ticket.warn_at)})" if ticket.warn_at else ""),
             f"  acknowledged  {_when(ticket.acknowledged_at)}",
             "", "messages:"]
    lines += [f"  {_when(m.received_at)}  {m.kind:<11} {m.folder} UID {m.uid}  {m.message_id or m.message_key}"
              for m in messages]
    lines += ["", "outgoing mail:"]
    lines += [f"  {m.purpose:<6} {m.status:<9} attempts={m.attempts} sent={_when(m.sent_at)}  {m.message_id}"
              + (f"  last error: {m.last_error}" if m.last_error else "") for m in mails]
    lines += ["", "audit trail:"]
    lines += [f"  {_when(e.at)}  {e.kind:<16} {_describe(e.detail)}" for e in events]
    return lines


def _describe(detail: str) -> str:
    try:
        data = json.loads(detail)
    except ValueError:
        return detail
    if isinstance(data, dict) and "reasons" in data:
        return "; ".join(data["reasons"]) + f"  ({data.get('folder')} UID {data.get('uid')})"
    return detail


def outbox_lines(engine: Engine) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(select(OutboxMail).order_by(OutboxMail.id)).all()
    header = f"{'id':>5} {'status':<10} {'purpose':<8} {'attempts':>8}  {'next attempt':<23} recipient"
    return [header] + [
        f"{r.id:>5} {r.status:<10} {r.purpose:<8} {r.attempts:>8}  {_when(r.next_attempt_at):<23} {r.recipient}"
        + (f"  ({r.last_error})" if r.last_error else "") for r in rows]
