"""`supportbot check`: every sender case and refusal reason of the sample data, without
writing anything; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from bot import decide as d
from bot.check import check_mail
from bot.contracts import import_file
from bot.database import make_engine, upgrade
from bot.models import Message, Ticket
from bot.rules import load_rules
from helpers import count, write_config
from test_cli import supportbot

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
RULES = load_rules()
POLICY = d.Policy(support_address="support@vendor.example", message_id_domain="vendor.example", rules=RULES)
MONDAY = datetime.fromisoformat("2026-11-23T10:00:00+01:00")


@pytest.fixture
def loaded(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    import_file(engine, SAMPLES / "contracts.yaml", RULES)
    yield engine
    engine.dispose()


def mail(sender: str, extra: str = "", subject: str = "Instance down") -> bytes:
    return (f"From: Someone <{sender}>\r\nTo: support@vendor.example\r\nSubject: {subject}\r\n"
            f"Message-ID: <{sender.replace('@', '.')}@client.example>\r\n{extra}\r\n"
            "Our instance does not respond since this morning.\r\n").encode()


@pytest.mark.parametrize("sender, kind, customer, contract, entitled, reason", [
    ("alice.martin@acme.example", "contact", "acme", "KEA-2025-014", True, None),
    ("bob@eu.acme.example", "customer_domain", "acme", "KEA-2025-014", False,
     "bob@eu.acme.example is not a registered contact of Acme Industries"),
    ("hank.scorpio@globex.example", "contact", "globex", "KEA-2026-002", True, None),
    ("anyone@initech.example", "customer_domain", "initech", "AST-2024-007", True, None),  # Astran: any employee
    ("albert.wesker@umbrella.example", "contact", "umbrella", "KEA-2025-009", False,
     "contract KEA-2025-009 ended on 31 May 2026 and was not renewed"),
    ("it@hooli.example", "customer_domain", "hooli", "AST-2025-012", False,
     "contract AST-2025-012 was terminated on 30 September 2026"),
    ("it@vandelay.example", "customer_domain", "vandelay", "AST-2025-044", False,
     "invoice AST-INV-388, due 31 October 2026, is unpaid"),
    ("sol.roth@soylent.example", "contact", "soylent", "KEA-2024-021", False,
     "invoice INV-2207 (disputed), due 31 July 2026, is unpaid"),
    ("it@cyberdyne.example", "customer_domain", "cyberdyne", "AST-2026-003", True, None),  # disputed: §10
    ("it@aperture.example", "customer_domain", "aperture", "AST-TRIAL-77", False,
     "contract AST-TRIAL-77 is a free use (trial) subscription, which does not include support"),
    ("it@wayne.example", "customer_domain", "wayne", "AST-2027-001", False,
     "contract AST-2027-001 takes effect on 1 January 2027"),
    ("pepper.potts@stark.example", "contact", "stark", None, False,
     "there is no contract on record for Stark Industries"),
    ("someone@unknown.example", "unknown", None, None, False,
     "someone@unknown.example is not the address of a known customer"),
])
def test_every_sender_case_and_reason(loaded, sender, kind, customer, contract, entitled, reason):
    result = check_mail(loaded, RULES, POLICY, mail(sender), MONDAY)
    assert (result["kind"], result["sender_kind"], result["customer"], result["contract"], result["entitled"]) == \
        ("new_ticket", kind, customer, contract, entitled)
    if reason:
        assert any(r.startswith(reason) for r in result["reasons"]), result["reasons"]
    assert count(loaded, Ticket) == 0 and count(loaded, Message) == 0  # nothing written


def test_severity_and_deadline_are_filled_for_an_entitled_request(loaded):
    result = check_mail(loaded, RULES, POLICY, mail("alice.martin@acme.example", subject="Production down"), MONDAY)
    assert result["severity"] == {"level": 1, "label": "Critical"} and result["severity_source"] == "evidence"
    assert result["deadline"] == "2026-11-24T10:00:00+01:00"  # Kestra, 1 business day, fixed UTC+1
    assert "'production down' in the subject" in result["severity_evidence"]
    question = mail("anyone@initech.example", subject="Question about SSO").replace(
        b"Our instance does not respond since this morning.", b"How do we configure SSO with Entra ID?")
    astran = check_mail(loaded, RULES, POLICY, question, datetime.fromisoformat("2026-07-03T16:00:00+02:00"))
    assert astran["severity"]["label"] == "Low" and astran["deadline"] == "2026-07-13T16:00:00+02:00"  # 48 h
    best_effort = check_mail(loaded, RULES, POLICY, mail("hank.scorpio@globex.example"), MONDAY)
    assert best_effort["severity"] is not None and best_effort["deadline"] is None
    refused = check_mail(loaded, RULES, POLICY, mail("it@vandelay.example"), MONDAY)
    assert (refused["severity"], refused["deadline"]) == (None, None)


def test_the_arrival_day_is_the_contracts_own(loaded):
    # 31 Oct 2026 23:30 UTC is already 1 November in Paris: Vandelay's invoice is overdue there.
    late = check_mail(loaded, RULES, POLICY, mail("it@vandelay.example"), datetime.fromisoformat("2026-10-31T23:30:00+00:00"))
    early = check_mail(loaded, RULES, POLICY, mail("it@vandelay.example"), datetime.fromisoformat("2026-10-31T22:30:00+00:00"))
    assert (late["entitled"], early["entitled"]) == (False, True)


def test_automatic_mail_and_language(loaded):
    auto = check_mail(loaded, RULES, POLICY, mail("alice.martin@acme.example", "Auto-Submitted: auto-replied\r\n"), MONDAY)
    assert auto["kind"] == "automatic" and auto["entitled"] is None
    english = check_mail(loaded, RULES, POLICY, mail("jean.dupont@initech.example"), MONDAY)
    assert (english["language"], english["language_source"]) == ("en", "detected")  # they wrote English
    short = mail("jean.dupont@initech.example").replace(b"Our instance does not respond since this morning.", b"Merci")
    short = short.replace(b"Instance down", b"Re")
    assert check_mail(loaded, RULES, POLICY, short, MONDAY)["language_source"] == "customer's preferred language"


def test_the_command_prints_one_json_object(tmp_path, dovecot):
    config = write_config(tmp_path, dovecot, None, f"sqlite:///{tmp_path / 'bot.db'}")
    supportbot("db", "upgrade", "--config", str(config))
    supportbot("contracts", "import", str(SAMPLES / "contracts.yaml"), "--config", str(config))
    eml = tmp_path / "request.eml"
    eml.write_bytes(mail("it@vandelay.example"))
    result = supportbot("check", str(eml), "--at", "2026-11-23T10:00+01:00", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"kind", "customer", "contract", "entitled", "reasons", "language", "severity", "deadline"} <= set(data)
    assert (data["customer"], data["entitled"], data["severity"], data["deadline"]) == ("vandelay", False, None, None)
    readable = supportbot("check", str(eml), "--at", "2026-11-23T10:00+01:00", "--config", str(config))
    assert "entitled      no" in readable.stdout and "AST-INV-388" in readable.stdout
    bad = supportbot("check", str(eml), "--at", "yesterday", "--config", str(config))
    assert bad.returncode == 2 and "not an ISO 8601 time" in bad.stderr and "Traceback" not in bad.stderr
