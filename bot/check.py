"""`supportbot check MAIL.eml`: what the bot would decide about one mail, and why.

Read-only: the mail is read and decided against the database exactly as ingest does (the
same SliceView, the same decide()), then the sender is identified and the contract
assessed; nothing is written and nothing is sent.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from bot import decide as d
from bot.contracts import sender_and_contracts
from bot.entitlement import assess
from bot.language import detect
from bot.rules import Rules
from bot.store import SliceView


def check_mail(engine: Engine, rules: Rules, policy: d.Policy, raw: bytes, at: datetime) -> dict:
    """The decision as one JSON-ready object (keys documented in the README)."""
    reading = d.read(raw)
    with engine.connect() as db:
        view = SliceView.load(db, [reading], at - d.RATE_WINDOW, policy)
        decision = d.decide(reading, at, view, policy)
        sender, contracts = sender_and_contracts(db, reading.mail.from_addr) \
            if reading.mail and reading.mail.from_addr else (None, [])
    result = {"kind": decision.kind, "at": at.isoformat(), "sender": sender and sender.address,
              "sender_kind": sender and sender.kind, "customer": None, "contract": None,
              "policy": None, "entitled": None, "reasons": list(decision.reasons),
              "ticket": decision.ticket_reference, "language": decision.language,
              "language_source": "default", "severity": None, "deadline": None}
    if sender is None or decision.kind != d.NEW_TICKET:
        return result
    assessment = assess(sender, contracts, rules, at)  # the same as decide()'s, for the names
    customer = sender.customer
    detected = detect(f"{reading.mail.subject}\n{reading.mail.text}")
    result.update(detected_language=detected.code, confidence=detected.confidence)
    if decision.language == "en+fr":
        result.update(language_source=f"{detected.code} detected, not served: both languages")
    elif detected.sure_enough_to_answer() and decision.language == detected.code:
        result.update(language_source="detected")
    elif customer and decision.language == customer.language:
        result.update(language_source="customer's preferred language")
    result.update(customer=customer and customer.key,
                  contract=assessment.contract and assessment.contract.number,
                  policy=assessment.contract and assessment.contract.policy,
                  entitled=decision.status == "open", status=decision.status,
                  flags=list(decision.flags))
    if decision.severity:
        label = assessment.policy.severity(decision.severity.level).label("en")
        result.update(severity={"level": decision.severity.level, "label": label},
                      severity_source=decision.severity.source,
                      severity_evidence=[str(e) + ("" if e.level == decision.severity.level else f" (level {e.level})")
                                         for e in decision.severity.evidence])
    if decision.deadline:
        result.update(deadline=decision.deadline.local_due.isoformat(),
                      clock_starts=decision.deadline.starts_at.astimezone(decision.deadline.zone).isoformat(),
                      warn_at=decision.deadline.warn_at.astimezone(decision.deadline.zone).isoformat())
    return result


def describe(result: dict) -> list[str]:
    """The same, for a person."""
    lines = [f"kind          {result['kind']}", f"received      {result['at']}"]
    if result["sender"]:
        lines.append(f"sender        {result['sender']} ({result['sender_kind']})")
    if result["customer"]:
        lines.append(f"customer      {result['customer']}")
    if result["contract"]:
        lines.append(f"contract      {result['contract']} ({result['policy']})")
    if result["entitled"] is not None:
        lines.append(f"entitled      {'yes' if result['entitled'] else 'no'}")
    if result["ticket"]:
        lines.append(f"ticket        {result['ticket']}")
    confidence = f", detected {result['detected_language']} at {result['confidence']}" \
        if result.get("detected_language") else ""
    lines.append(f"language      {result['language']} ({result['language_source']}{confidence})")
    if result["severity"]:
        severity = result["severity"]
        lines.append(f"severity      {severity['level']} {severity['label']} ({result['severity_source']})")
        lines += [f"  - {evidence}" for evidence in result["severity_evidence"]]
    if result["entitled"]:
        lines.append(f"deadline      {result['deadline'] or 'none (best effort)'}")
    lines += ["reasons:"] + [f"  - {reason}" for reason in result["reasons"]]
    return lines
