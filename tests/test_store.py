"""The store applies decisions idempotently, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from bot import decide as d
from bot.clock import VirtualClock
from bot.contracts import import_file
from bot.database import make_engine, upgrade
from bot.mailbox import FetchedMail
from bot.rules import load_rules
from bot.models import Event, MailboxState, Message, OutboxMail, Ticket
from bot.store import Sender, Store
from bot.templating import Templates

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
POLICY = d.Policy(support_address="support@vendor.example", message_id_domain="vendor.example",
                  ack_rate_limit_per_hour=3)


def mail(n: int, sender: str = "alice@acme.example", extra: str = "", subject: str = "Help") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: support@vendor.example\r\nSubject: {subject} {n}\r\n"
            f"Message-ID: <m{n}@acme.example>\r\n{extra}\r\nBody {n}\r\n").encode()


@pytest.fixture
def store(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    yield Store(engine, VirtualClock(T0), Templates(),
                Sender("support@vendor.example", "Vendor Support", "vendor.example"))
    engine.dispose()


def rows(store, model):
    with Session(store.engine) as session:
        return session.exec(select(model)).all()


def test_new_mail_creates_ticket_message_event_and_ack_in_one_go(store):
    outcome = store.record_mail("INBOX", 7, 1, mail(1), T0, POLICY)
    assert (outcome.status, outcome.kind, outcome.ticket_reference, outcome.queued) == \
        ("stored", "new_ticket", "SUP-000001", 1)
    [ticket] = rows(store, Ticket)
    assert (ticket.requester, ticket.subject, ticket.received_at) == ("alice@acme.example", "Help 1", T0)
    [ack] = rows(store, OutboxMail)
    assert ack.status == "pending" and ack.recipient == "alice@acme.example"
    assert b"Subject: [SUP-000001] Help 1" in ack.raw
    assert b"In-Reply-To: <m1@acme.example>" in ack.raw
    assert b"Auto-Submitted: auto-replied" in ack.raw
    kinds = [e.kind for e in rows(store, Event)]
    assert kinds == ["ticket_created", "new_ticket", "mail_queued"]


def test_ticket_references_are_sequential(store):
    refs = [store.record_mail("INBOX", 7, n, mail(n, f"u{n}@acme.example"), T0, POLICY).ticket_reference
            for n in range(1, 4)]
    assert refs == ["SUP-000001", "SUP-000002", "SUP-000003"]


def test_same_message_id_twice_is_one_ticket_and_one_ack(store):
    first = store.record_mail("INBOX", 7, 1, mail(1), T0, POLICY)
    # Re-delivered: another UID, other trace headers, same Message-ID.
    again = store.record_mail("INBOX", 7, 2, b"Received: from relay\r\n" + mail(1), T0, POLICY)
    # UIDVALIDITY changed: the same mail under a new UIDVALIDITY.
    rebuilt = store.record_mail("INBOX", 8, 1, mail(1), T0, POLICY)
    assert first.status == "stored"
    assert again.status == rebuilt.status == "duplicate"
    assert len(rows(store, Ticket)) == 1 and len(rows(store, OutboxMail)) == 1
    assert [e.kind for e in rows(store, Event)].count("duplicate") == 2


def test_mail_without_message_id_is_recognised_by_its_bytes(store):
    raw = b"From: a@acme.example\r\nSubject: no id\r\n\r\nhello\r\n"
    assert store.record_mail("INBOX", 7, 1, raw, T0, POLICY).status == "stored"
    assert store.record_mail("INBOX", 7, 2, raw, T0, POLICY).status == "duplicate"
    assert len(rows(store, Ticket)) == 1


def test_a_mail_read_again_is_known_by_folder_uidvalidity_and_uid(store):
    store.record_mail("INBOX", 7, 5, mail(1), T0, POLICY)
    assert store.record_mail("INBOX", 7, 5, mail(1), T0, POLICY).status == "known"
    # Another UID or UIDVALIDITY is not "known"; the Message-ID still makes it a duplicate.
    assert store.record_mail("INBOX", 8, 5, mail(1), T0, POLICY).status == "duplicate"
    assert store.record_mail("INBOX", 7, 6, mail(1), T0, POLICY).status == "duplicate"


def test_reply_to_our_ack_is_a_followup_without_new_ack(store):
    store.record_mail("INBOX", 7, 1, mail(1), T0, POLICY)
    [ack] = rows(store, OutboxMail)
    reply = mail(2, extra=f"In-Reply-To: {ack.message_id}\r\n")
    outcome = store.record_mail("INBOX", 7, 2, reply, T0, POLICY)
    assert (outcome.kind, outcome.ticket_reference, outcome.queued) == ("followup", "SUP-000001", 0)
    assert len(rows(store, Ticket)) == 1


def test_subject_tag_threads_when_references_are_lost(store):
    store.record_mail("INBOX", 7, 1, mail(1), T0, POLICY)
    outcome = store.record_mail("INBOX", 7, 2, mail(2, subject="Re: [SUP-000001] Help"), T0, POLICY)
    assert (outcome.kind, outcome.ticket_reference) == ("followup", "SUP-000001")
    unknown = store.record_mail("INBOX", 7, 3, mail(3, subject="Re: [SUP-000099] Help"), T0, POLICY)
    assert unknown.kind == "new_ticket"


@pytest.mark.parametrize("headers, reason", [
    ("Auto-Submitted: auto-replied\r\n", "auto-submitted"),
    ("Precedence: bulk\r\n", "precedence"),
    ("Return-Path: <>\r\n", "return-path"),
    ("List-Id: <users.lists.example>\r\n", "list"),
])
def test_automatic_mail_is_recorded_but_never_answered(store, headers, reason):
    outcome = store.record_mail("INBOX", 7, 1, mail(1, extra=headers), T0, POLICY)
    assert outcome.kind == "automatic" and outcome.queued == 0
    assert rows(store, Ticket) == [] and rows(store, OutboxMail) == []
    [message] = rows(store, Message)
    assert reason in message.reason.lower()


def test_dsn_report_is_never_answered(store):
    raw = (b"From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered\r\nMessage-ID: <b1@mx>\r\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=XX\r\n\r\n"
           b"--XX\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--XX--\r\n")
    assert store.record_mail("INBOX", 7, 1, raw, T0, POLICY).kind == "automatic"
    assert rows(store, OutboxMail) == []


def test_our_own_mail_is_never_answered(store):
    store.record_mail("INBOX", 7, 1, mail(1), T0, POLICY)
    [ack] = rows(store, OutboxMail)
    # Our acknowledgement delivered back into the inbox (e.g. the customer's address forwards to us).
    outcome = store.record_mail("INBOX", 7, 2, ack.raw.replace(b"Auto-Submitted: auto-replied\r\n", b""), T0, POLICY)
    assert outcome.kind == "own" and outcome.queued == 0
    from_us = mail(3, sender="support@vendor.example")
    assert store.record_mail("INBOX", 7, 3, from_us, T0, POLICY).kind == "own"
    assert len(rows(store, OutboxMail)) == 1


def test_rate_limit_stops_acks_to_one_sender_but_keeps_tickets(store):
    outcomes = [store.record_mail("INBOX", 7, n, mail(n), T0 + timedelta(minutes=n), POLICY) for n in range(1, 6)]
    assert [o.queued for o in outcomes] == [1, 1, 1, 0, 0]
    assert all(o.kind == "new_ticket" for o in outcomes)
    assert "rate limit" in rows(store, Message)[-1].reason


def test_mail_without_sender_is_quarantined_with_reason(store):
    outcome = store.record_mail("INBOX", 7, 1, b"Subject: hi\r\nMessage-ID: <x@y>\r\n\r\nbody", T0, POLICY)
    assert outcome.kind == "quarantined" and outcome.queued == 0
    [message] = rows(store, Message)
    assert message.reason == "no usable sender address in From"


def test_unparseable_bytes_are_quarantined(store):
    outcome = store.record_mail("INBOX", 7, 1, b"", T0, POLICY)
    assert outcome.kind == "quarantined"
    assert rows(store, Message)[0].reason.startswith("unparseable")


def test_a_failing_mail_is_quarantined_and_the_rest_of_the_batch_commits(store, tmp_path):
    # An operator template that breaks for one requester: its processing fails, the others pass.
    folder = tmp_path / "en" / "ack"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("{% if recipient_name == 'Boom' %}{{ missing }}{% endif %}ok")
    (folder / "body.txt").write_text("body")
    (folder / "body.html").write_text("<p>body</p>")
    store.templates = Templates(tmp_path)
    boom = mail(2).replace(b"From: Alice", b"From: Boom")
    batch = [FetchedMail(1, T0, mail(1)), FetchedMail(2, T0, boom), FetchedMail(3, T0, mail(3, "c@acme.example"))]
    outcomes = store.record_batch("INBOX", 7, batch, POLICY)
    assert [o.kind for o in outcomes] == ["new_ticket", "quarantined", "new_ticket"]
    quarantined = [m for m in rows(store, Message) if m.kind == "quarantined"]
    assert len(quarantined) == 1 and quarantined[0].uid == 2
    assert "UndefinedError" in quarantined[0].reason and "missing" in quarantined[0].reason
    assert len(rows(store, Ticket)) == 2  # the failed mail's half-made ticket was rolled back
    # Read again (a crash before marking): every mail is known, nothing is doubled.
    assert [o.status for o in store.record_batch("INBOX", 7, batch, POLICY)] == ["known"] * 3


def test_uidvalidity_change_is_noted(store):
    assert store.note_uidvalidity("INBOX", 7) is None
    assert store.note_uidvalidity("INBOX", 7) is None
    assert store.note_uidvalidity("INBOX", 9) == 7
    assert "uidvalidity_changed" in [e.kind for e in rows(store, Event)]


def test_subject_header_injection_cannot_reach_the_ack(store):
    raw = (b"From: m@evil.example\r\nSubject: =?utf-8?q?Hi=0D=0ABcc=3A_victim=40x=2Eexample?=\r\n"
           b"Message-ID: <i@evil>\r\n\r\nbody\r\n")
    store.record_mail("INBOX", 7, 1, raw, T0, POLICY)
    [ack] = rows(store, OutboxMail)
    header_block = ack.raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in header_block
    assert [line for line in header_block.split(b"\r\n") if line.startswith(b"Subject:")] == \
        [b"Subject: [SUP-000001] Hi Bcc: victim@x.example"]


def test_a_batch_records_the_folder_progress_in_its_own_transaction(store):
    store.note_uidvalidity("INBOX", 7)
    store.record_batch("INBOX", 7, [FetchedMail(4, T0, mail(1)), FetchedMail(9, T0, mail(2))], POLICY)
    store.record_batch("INBOX", 7, [FetchedMail(3, T0, mail(3))], POLICY)  # never goes backwards
    [state] = rows(store, MailboxState)
    assert (state.uidvalidity, state.last_uid) == (7, 9)


# -- a batch sees its own earlier mails ----------------------------------------------------

def batch_of(*raws: bytes, first_uid: int = 1) -> list[FetchedMail]:
    return [FetchedMail(uid, T0 + timedelta(minutes=uid), raw) for uid, raw in enumerate(raws, first_uid)]


def test_the_same_mail_twice_in_one_batch_is_one_ticket(store):
    outcomes = store.record_batch("INBOX", 7, batch_of(mail(1), b"Received: from relay\r\n" + mail(1)), POLICY)
    assert [(o.status, o.kind) for o in outcomes] == [("stored", "new_ticket"), ("duplicate", "new_ticket")]
    assert len(rows(store, Ticket)) == 1 and len(rows(store, OutboxMail)) == 1
    [first] = rows(store, Message)
    [duplicate] = [e for e in rows(store, Event) if e.kind == "duplicate"]
    assert (duplicate.message_id, duplicate.ticket_id) == (first.id, first.ticket_id)
    assert "INBOX UID 2" in duplicate.detail and "first read as INBOX UID 1" in duplicate.detail


def test_a_reply_to_a_mail_earlier_in_the_batch_joins_its_ticket(store):
    store.record_mail("INBOX", 7, 1, mail(1, sender="old@acme.example"), T0, POLICY)  # SUP-000001
    forgot = mail(3, extra="In-Reply-To: <m2@acme.example>\r\n")  # "forgot the attachment"
    tagged = mail(4, sender="bob@acme.example", subject="Re: [SUP-000002] Help")
    outcomes = store.record_batch("INBOX", 7, batch_of(mail(2), forgot, tagged, first_uid=2), POLICY)
    assert [(o.kind, o.ticket_reference, o.queued) for o in outcomes] == [
        ("new_ticket", "SUP-000002", 1), ("followup", "SUP-000002", 0), ("followup", "SUP-000002", 0)]
    ticket = {t.reference: t.id for t in rows(store, Ticket)}["SUP-000002"]
    assert [m.ticket_id for m in rows(store, Message) if m.uid in (2, 3, 4)] == [ticket] * 3


def test_the_rate_limit_counts_acks_queued_earlier_in_the_batch(store):
    store.record_mail("INBOX", 7, 1, mail(1), T0, POLICY)  # one ack already sent this hour
    outcomes = store.record_batch("INBOX", 7, batch_of(*(mail(n) for n in range(2, 6)), first_uid=2), POLICY)
    assert [o.queued for o in outcomes] == [1, 1, 0, 0]  # limit 3 per hour
    assert [t.reference for t in rows(store, Ticket)] == [f"SUP-{n:06d}" for n in range(1, 6)]


def test_references_beyond_one_query_are_all_looked_up(store):
    store.record_mail("INBOX", 7, 1, mail(1), T0, POLICY)
    [ack] = rows(store, OutboxMail)
    noise = " ".join(f"<n{i}@elsewhere.example>" for i in range(1200))
    reply = mail(2, extra=f"References: {noise} {ack.message_id}\r\n")  # ours comes last
    outcome = store.record_mail("INBOX", 7, 2, reply, T0, POLICY)
    assert (outcome.kind, outcome.ticket_reference) == ("followup", "SUP-000001")


def test_a_mail_that_breaks_the_parser_is_quarantined_and_the_batch_goes_on(store, monkeypatch):
    real_parse = d.parse

    def parser_with_a_bug(raw: bytes):
        if b"BOOM" in raw:
            raise RecursionError("maximum recursion depth exceeded")
        return real_parse(raw)

    monkeypatch.setattr(d, "parse", parser_with_a_bug)
    batch = batch_of(mail(1), mail(2, extra="X-Trigger: BOOM\r\n", sender="b@acme.example"), mail(3, "c@acme.example"))
    outcomes = store.record_batch("INBOX", 7, batch, POLICY)
    assert [o.kind for o in outcomes] == ["new_ticket", "quarantined", "new_ticket"]
    [quarantined] = [m for m in rows(store, Message) if m.kind == "quarantined"]
    assert quarantined.uid == 2 and quarantined.reason.startswith("processing failed: RecursionError")


# -- decided before the write lock, checked under it --------------------------------------

def _with_a_writer_in_between(store, monkeypatch, write) -> None:
    """Have `write` commit between the planning of the next batch and its write."""
    plan_ahead = Store._plan_ahead

    def plan_then_write(self, *args, **kwargs):
        plan = plan_ahead(self, *args, **kwargs)
        monkeypatch.setattr(Store, "_plan_ahead", plan_ahead)
        write()
        return plan

    monkeypatch.setattr(Store, "_plan_ahead", plan_then_write)


def test_a_mail_committed_while_a_batch_was_decided_is_seen_before_it_is_written(store, monkeypatch):
    # The batch holds a reply to m1; m1 is committed (by another instance, or a rescue run)
    # after the batch was planned without it: the batch is decided again and joins m1's ticket.
    _with_a_writer_in_between(store, monkeypatch,
                              lambda: store.record_mail("INBOX", 7, 1, mail(1), T0, POLICY))
    reply = mail(2, sender="bob@acme.example", extra="In-Reply-To: <m1@acme.example>\r\n")
    outcomes = store.record_batch("INBOX", 7, batch_of(reply, mail(1), first_uid=2), POLICY)
    assert [(o.status, o.kind, o.ticket_reference) for o in outcomes] == [
        ("stored", "followup", "SUP-000001"), ("duplicate", "new_ticket", None)]
    assert [t.reference for t in rows(store, Ticket)] == ["SUP-000001"]
    assert len(rows(store, OutboxMail)) == 1


def test_ticket_numbers_taken_while_a_batch_was_decided_are_not_handed_out_twice(store, monkeypatch):
    _with_a_writer_in_between(store, monkeypatch, lambda: store.record_mail(
        "INBOX", 7, 1, mail(1, sender="other@acme.example"), T0, POLICY))
    outcomes = store.record_batch("INBOX", 7, batch_of(mail(2), mail(3, "c@acme.example"), first_uid=2), POLICY)
    assert [o.ticket_reference for o in outcomes] == ["SUP-000002", "SUP-000003"]
    assert sorted(t.reference for t in rows(store, Ticket)) == ["SUP-000001", "SUP-000002", "SUP-000003"]


def test_mail_queued_while_a_batch_was_decided_counts_against_the_rate_limit(store, monkeypatch):
    for n in (1, 2):  # two of the three automatic mails per hour
        store.record_mail("INBOX", 7, n, mail(n), T0, POLICY)

    def another_instance_queues_an_ack() -> None:
        with store.engine.begin() as db:
            db.execute(OutboxMail.__table__.insert().values(
                message_id="<supportbot.other@vendor.example>", purpose="ack", recipient="alice@acme.example",
                raw=b"", created_at=T0, status="pending", attempts=0, next_attempt_at=T0, last_error=""))

    _with_a_writer_in_between(store, monkeypatch, another_instance_queues_an_ack)
    [outcome] = store.record_batch("INBOX", 7, batch_of(mail(3), first_uid=3), POLICY)
    assert (outcome.kind, outcome.queued) == ("new_ticket", 0)
    assert len([m for m in rows(store, OutboxMail) if m.recipient == "alice@acme.example"]) == 3


def test_a_batch_is_decided_without_holding_the_write_lock(store, monkeypatch, db_url):
    """Delivery records each mail it sends: it must not wait while a slice is decided. The
    probe takes what record_batch locks (SQLite's write lock, PostgreSQL's counter row)
    without waiting, so it fails if decide() runs under the lock."""
    decide, took_the_lock = d.decide, []
    probe = sa.create_engine(db_url, **({"connect_args": {"timeout": 0}} if db_url.startswith("sqlite") else {}))

    def decide_while_another_connection_locks(*args, **kwargs):
        if not took_the_lock:
            with probe.connect() as db:
                if probe.dialect.name == "sqlite":
                    db.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    db.exec_driver_sql("BEGIN")
                    db.exec_driver_sql("SELECT value FROM counters WHERE name = 'ticket' FOR UPDATE NOWAIT")
                db.exec_driver_sql("COMMIT")
            took_the_lock.append(True)
        return decide(*args, **kwargs)

    monkeypatch.setattr(d, "decide", decide_while_another_connection_locks)
    try:
        [outcome] = store.record_batch("INBOX", 7, batch_of(mail(1)), POLICY)
    finally:
        probe.dispose()
    assert took_the_lock and (outcome.status, outcome.ticket_reference) == ("stored", "SUP-000001")


# -- contracts: who wrote and what their contract allows -----------------------------------

RULES = load_rules()
WITH_CONTRACTS = d.Policy(support_address="support@vendor.example", message_id_domain="vendor.example",
                          rules=RULES, triage_address="triage@vendor.example")
SAMPLES = Path(__file__).resolve().parents[1] / "samples"
MONDAY = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def contracted(store):
    import_file(store.engine, SAMPLES / "contracts.yaml", RULES)
    return store


def request_from(sender: str, n: int = 1) -> bytes:
    return mail(n, sender=sender, subject="Scheduler down")


def test_an_entitled_contact_gets_the_acknowledgement_and_the_ticket_its_contract(contracted):
    outcome = contracted.record_mail("INBOX", 7, 1, request_from("alice.martin@acme.example"), MONDAY, WITH_CONTRACTS)
    assert (outcome.kind, outcome.queued) == ("new_ticket", 1)
    [ticket] = rows(contracted, Ticket)
    [ack] = rows(contracted, OutboxMail)
    assert (ticket.status, ack.purpose) == ("open", "ack")
    assert ticket.contract_id is not None and ticket.customer_id is not None
    assert "entitled under contract KEA-2025-014 (Kestra Enterprise Support)" in rows(contracted, Message)[0].reason


def test_an_unpaid_invoice_gets_a_refusal_that_names_it(contracted):
    contracted.record_mail("INBOX", 7, 1, request_from("it@vandelay.example"), MONDAY, WITH_CONTRACTS)
    [ticket] = rows(contracted, Ticket)
    [refusal] = rows(contracted, OutboxMail)
    assert (ticket.status, refusal.purpose, refusal.recipient) == ("refused", "refusal", "it@vandelay.example")
    text = " ".join(refusal.raw.decode("utf-8", "replace").split())
    assert "invoice AST-INV-388, due 31 October 2026, is unpaid" in text
    assert any("AST-INV-388" in e.detail for e in rows(contracted, Event) if e.kind == "new_ticket")


def test_an_unknown_sender_is_asked_who_they_are_and_triage_is_told(contracted):
    contracted.record_mail("INBOX", 7, 1, request_from("someone@unknown.example"), MONDAY, WITH_CONTRACTS)
    [ticket] = rows(contracted, Ticket)
    mails = {m.purpose: m for m in rows(contracted, OutboxMail)}
    assert ticket.status == "unidentified" and ticket.customer_id is None
    assert (mails["unknown_sender"].recipient, mails["triage"].recipient) == (
        "someone@unknown.example", "triage@vendor.example")
    assert b"someone@unknown.example" in mails["triage"].raw


def test_a_flood_of_unknown_senders_tells_triage_at_most_the_hourly_limit(contracted):
    policy = replace(WITH_CONTRACTS, triage_notices_per_hour=3)
    for n in range(1, 6):
        contracted.record_mail("INBOX", 7, n, request_from(f"stranger{n}@unknown.example", n),
                               MONDAY + timedelta(minutes=n), policy)
    purposes = [m.purpose for m in rows(contracted, OutboxMail)]
    assert purposes.count("unknown_sender") == 5 and purposes.count("triage") == 3
    assert [t.status for t in rows(contracted, Ticket)] == ["unidentified"] * 5
    quiet = [m.reason for m in rows(contracted, Message) if "triage not told" in m.reason]
    assert len(quiet) == 2 and "supportbot tickets list --status unidentified" in quiet[0]
    contracted.record_mail("INBOX", 7, 6, request_from("stranger6@unknown.example", 6),
                           MONDAY + timedelta(minutes=62), policy)  # an hour after the first notice
    assert [m.purpose for m in rows(contracted, OutboxMail)].count("triage") == 4


def test_a_french_customer_is_answered_in_french(contracted):
    contracted.record_mail("INBOX", 7, 1, request_from("jean.dupont@initech.example"), MONDAY, WITH_CONTRACTS)
    [ack] = rows(contracted, OutboxMail)
    assert rows(contracted, Ticket)[0].language == "fr"
    assert b"Bonjour" in ack.raw


def test_the_rate_limit_also_holds_refusals(contracted):
    outcomes = [contracted.record_mail("INBOX", 7, n, request_from("it@vandelay.example", n),
                                       MONDAY + timedelta(minutes=n), WITH_CONTRACTS) for n in range(1, 8)]
    assert [o.queued for o in outcomes] == [1] * 5 + [0, 0]
    assert {t.status for t in rows(contracted, Ticket)} == {"refused"}


def test_a_french_customer_is_refused_in_french_with_french_dates(contracted):
    contracted.record_mail("INBOX", 7, 1, request_from("sol.roth@soylent.example"), MONDAY, WITH_CONTRACTS)
    [refusal] = rows(contracted, OutboxMail)
    text = " ".join(email.message_from_bytes(refusal.raw, policy=email.policy.default)
                    .get_body(("plain",)).get_content().split())
    assert "la facture INV-2207 (contestée), échue le 31 juillet 2026, n'est pas réglée" in text
    # the audit trail keeps the English words
    assert "invoice INV-2207 (disputed), due 31 July 2026, is unpaid" in rows(contracted, Message)[0].reason


AUTHENTICATED = d.Policy(support_address="support@vendor.example", message_id_domain="vendor.example",
                         rules=RULES, triage_address="triage@vendor.example", authserv_id="mx.vendor.example")


def test_a_forged_from_never_obtains_the_customers_entitlement(contracted):
    forged = ("Authentication-Results: mx.vendor.example; dkim=pass header.d=evil.example; "
              "dmarc=fail header.from=acme.example\r\n")
    contracted.record_mail("INBOX", 7, 1, mail(1, "alice.martin@acme.example", forged), MONDAY, AUTHENTICATED)
    [ticket] = rows(contracted, Ticket)
    assert (ticket.status, ticket.customer_id, ticket.contract_id) == ("unverified", None, None)
    assert [m.purpose for m in rows(contracted, OutboxMail)] == ["triage"]  # no reply to the forged address
    assert "unverified sender, held for an agent" in rows(contracted, Message)[0].reason


def test_an_authenticated_contact_is_served(contracted):
    signed = "Authentication-Results: mx.vendor.example; dmarc=pass header.from=acme.example\r\n"
    contracted.record_mail("INBOX", 7, 1, mail(1, "alice.martin@acme.example", signed), MONDAY, AUTHENTICATED)
    assert rows(contracted, Ticket)[0].status == "open"
    assert [m.purpose for m in rows(contracted, OutboxMail)] == ["ack"]


GERMAN = ("Guten Tag, seit heute Morgen startet unser Scheduler keine Abläufe mehr. Alle Ausführungen "
          "bleiben im Status CREATED, obwohl wir die Worker neu gestartet haben. Können Sie uns helfen?")


def german_request(sender: str, body: str) -> bytes:
    return (f"From: Klaus <{sender}>\r\nTo: support@vendor.example\r\nSubject: Scheduler steht\r\n"
            f"Message-ID: <de-{len(body)}@acme.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{body}\r\n").encode()


def test_a_request_in_a_language_not_served_is_refused_in_english_and_french(contracted):
    contracted.record_mail("INBOX", 7, 1, german_request("alice.martin@acme.example", GERMAN), MONDAY, WITH_CONTRACTS)
    [ticket] = rows(contracted, Ticket)
    [refusal] = rows(contracted, OutboxMail)
    assert (ticket.status, refusal.purpose) == ("refused", "refusal")
    body = email.message_from_bytes(refusal.raw, policy=email.policy.default)
    text = " ".join(body.get_body(("plain",)).get_content().split())
    assert text.index("Hello") < text.index("Bonjour")
    assert "the request is written in German; support is provided in English / French" in text
    assert "la demande est rédigée en allemand ; le support est assuré en anglais / français" in text


def test_a_short_or_unsure_text_is_never_refused_for_its_language(contracted):
    contracted.record_mail("INBOX", 7, 1, german_request("alice.martin@acme.example", "Danke!"), MONDAY, WITH_CONTRACTS)
    assert rows(contracted, Ticket)[0].status == "open"
    assert [m.purpose for m in rows(contracted, OutboxMail)] == ["ack"]


def test_the_answer_follows_the_language_the_customer_wrote_in(contracted):
    french = ("Bonjour, depuis ce matin notre ordonnanceur ne lance plus aucune exécution. "
              "Pouvez-vous nous aider ?")
    contracted.record_mail("INBOX", 7, 1, german_request("alice.martin@acme.example", french), MONDAY, WITH_CONTRACTS)
    [ack] = rows(contracted, OutboxMail)
    assert rows(contracted, Ticket)[0].language == "fr" and b"Bonjour" in ack.raw  # Acme prefers English


def test_a_possibly_excluded_matter_is_flagged_and_mentioned_not_refused(contracted):
    body = "We run Kestra 0.19.4 with a custom plugin and the scheduler is stuck since this morning."
    contracted.record_mail("INBOX", 7, 1, german_request("alice.martin@acme.example", body), MONDAY, WITH_CONTRACTS)
    [ticket] = rows(contracted, Ticket)
    [ack] = rows(contracted, OutboxMail)
    assert (ticket.status, ticket.flags, ack.purpose) == ("open", "superseded_releases,custom_plugins", "ack")
    text = " ".join(email.message_from_bytes(ack.raw, policy=email.policy.default)
                    .get_body(("plain",)).get_content().split())
    assert "may concern a matter that your support agreement does not cover" in text
    assert "custom plugins not officially supported by Kestra" in text
    assert "may be an excluded matter (superseded_releases): version 0.19.4 is older than 1.0" in \
        rows(contracted, Message)[0].reason


# -- severity and deadline ------------------------------------------------------------------

def request(sender: str, subject: str, body: str, n: int = 1) -> bytes:
    return (f"From: Someone <{sender}>\r\nTo: support@vendor.example\r\nSubject: {subject}\r\n"
            f"Message-ID: <sla{n}@client.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{body}\r\n").encode()


def decoded(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return " ".join(message.get_body(("plain",)).get_content().split())


def test_an_entitled_request_gets_a_severity_a_deadline_and_an_ack_that_states_both(contracted):
    monday_10 = datetime.fromisoformat("2026-11-23T10:00:00+01:00")
    contracted.record_mail("INBOX", 7, 1, request(
        "alice.martin@acme.example", "Production down",
        "Our Kestra instance is not responding since 8:00 and there is no workaround."), monday_10, WITH_CONTRACTS)
    [ticket] = rows(contracted, Ticket)
    assert (ticket.severity, ticket.severity_source) == (1, "evidence")
    assert ticket.deadline_at == datetime.fromisoformat("2026-11-24T10:00:00+01:00")  # 1 business day
    assert ticket.warn_at == datetime.fromisoformat("2026-11-23T16:45:00+01:00")  # 6 h 45 of business time
    text = decoded(rows(contracted, OutboxMail)[0].raw)
    assert "the severity Critical" in text
    assert "a first response within 1 business day, by Tuesday 24 November 2026, 10:00 (UTC+1)" in text
    reasons = rows(contracted, Message)[0].reason
    assert "severity 1 (Critical) from 'production down' in the subject" in reasons
    assert "first response within 1 business day: by 2026-11-24T10:00:00+01:00" in reasons


def test_a_french_request_is_answered_with_french_labels_in_paris_time(contracted):
    friday_evening = datetime.fromisoformat("2026-11-27T18:30:00+01:00")
    contracted.record_mail("INBOX", 7, 1, request(
        "jean.dupont@initech.example", "Lenteurs",
        "Bonjour, depuis ce matin la console est très lente pour tous nos utilisateurs, "
        "les dépôts prennent trois fois plus de temps."), friday_evening, WITH_CONTRACTS)
    [ticket] = rows(contracted, Ticket)
    assert ticket.severity == 2 and ticket.language == "fr"
    assert ticket.deadline_at == datetime.fromisoformat("2026-12-01T13:00:00+01:00")  # Mon 8 h + Tue 4 h
    text = decoded(rows(contracted, OutboxMail)[0].raw)
    assert "la sévérité Haute" in text
    assert "sous 12 heures ouvrées, au plus tard le mardi 1 décembre 2026 à 13:00 (UTC+1)" in text


def test_an_orders_specific_support_sets_the_deadline(contracted):
    contracted.record_mail("INBOX", 7, 1, request(
        "ops@tyrell.example", "Service unavailable", "The Astran service is down for all of us, no workaround."),
        datetime.fromisoformat("2026-11-23T17:30:00+01:00"), WITH_CONTRACTS)
    [ticket] = rows(contracted, Ticket)  # Specific Support: 08:00-19:00, Urgent in 4 business hours
    assert (ticket.severity, ticket.deadline_at) == (1, datetime.fromisoformat("2026-11-24T10:30:00+01:00"))


def test_standard_support_is_graded_but_promises_no_time(contracted):
    contracted.record_mail("INBOX", 7, 1, request(
        "hank.scorpio@globex.example", "Question", "How do we configure the log retention?"), MONDAY, WITH_CONTRACTS)
    [ticket] = rows(contracted, Ticket)
    assert (ticket.severity, ticket.deadline_at, ticket.warn_at) == (4, None, None)
    text = decoded(rows(contracted, OutboxMail)[0].raw)
    assert "the severity Low" in text and "sets no response time" in text and "within" not in text
    assert "best effort: Kestra Standard Support sets no response time" in rows(contracted, Message)[0].reason


def test_nothing_in_the_request_means_the_policys_default_severity(contracted):
    contracted.record_mail("INBOX", 7, 1, request("alice.martin@acme.example", "Hello", "Please call me back."),
                           MONDAY, WITH_CONTRACTS)
    [ticket] = rows(contracted, Ticket)
    assert (ticket.severity, ticket.severity_source) == (3, "default")


def test_a_refused_request_has_no_severity_and_no_deadline(contracted):
    contracted.record_mail("INBOX", 7, 1, request("it@vandelay.example", "Down", "Production is down."),
                           MONDAY, WITH_CONTRACTS)
    [ticket] = rows(contracted, Ticket)
    assert (ticket.status, ticket.severity, ticket.deadline_at) == ("refused", None, None)


def test_arrival_times_from_a_broken_server_never_lose_the_mail(contracted):
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)  # INTERNALDATE of a server that lost its clock
    far = datetime(9999, 12, 31, 23, 0, tzinfo=timezone.utc)
    kinds = [contracted.record_mail("INBOX", 7, n, request("alice.martin@acme.example", "Down", "Production is down.", n),
                                    when, WITH_CONTRACTS).kind for n, when in ((1, epoch), (2, far))]
    assert kinds[0] == "new_ticket" and kinds[1] in ("new_ticket", "quarantined")
    [first, *_] = rows(contracted, Ticket)
    assert first.status == "refused"  # judged on the day it says it arrived: before the contract
    assert len(rows(contracted, Message)) == 2
