"""Every shipped mail template renders, in every language, with a one-line subject."""

from __future__ import annotations

from datetime import datetime, timezone
from email import message_from_bytes
from email.policy import default

import pytest

from bot.compose import compose, one_line, stable_message_id
from bot.resources import shipped_dir
from bot.templating import TemplateError, Templates

LANGUAGES = ("en", "fr")
CONTEXT = {"ticket": {"reference": "SUP-000042"}, "original_subject": "Scheduler <b>down</b>",
           "recipient_name": "Zoë O'Brien", "from_name": "Vendor Support",
           "requester": "zoe@acme.example", "customer_name": "Acme <Industries>",
           "reasons": ["invoice INV-1001, due 31 March 2026, is unpaid"], "exclusions": [],
           "severity": None, "deadline": None, "response_time": None}


def template_names() -> list[str]:
    return sorted({p.parent.name for p in shipped_dir("templates").glob("*/*/subject.txt")})


def test_every_language_has_the_same_templates():
    root = shipped_dir("templates")
    sets = {lang: sorted(str(p.relative_to(root / lang)) for p in (root / lang).rglob("*.*")) for lang in LANGUAGES}
    assert sets["en"] == sets["fr"] and sets["en"]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", template_names())
def test_template_renders(name, language):
    rendered = Templates().render(name, language, CONTEXT)
    assert "\n" not in rendered.subject and rendered.subject.strip()
    assert "SUP-000042" in rendered.subject and "SUP-000042" in rendered.text
    assert "&lt;b&gt;down&lt;/b&gt;" in rendered.html or "down" not in rendered.html  # HTML is escaped
    assert f'lang="{language}"' in rendered.html


def test_a_refusal_states_every_reason_and_promises_no_deadline():
    for language in LANGUAGES:
        rendered = Templates().render("refusal", language, CONTEXT)
        assert "invoice INV-1001, due 31 March 2026, is unpaid" in rendered.text
        assert "<li>invoice INV-1001, due 31 March 2026, is unpaid</li>" in rendered.html
        assert "Acme &lt;Industries&gt;" in rendered.html  # customer data is escaped in HTML
    assert "No response time applies" in " ".join(Templates().render("refusal", "en", CONTEXT).text.split())
    assert "Aucun délai de réponse" in " ".join(Templates().render("refusal", "fr", CONTEXT).text.split())


def test_french_ack_is_french_and_english_is_english():
    assert "Bonjour" in Templates().render("ack", "fr", CONTEXT).text
    assert "Hello" in Templates().render("ack", "en", CONTEXT).text


def test_the_acknowledgement_states_the_severity_and_the_deadline_as_the_contract_words_it():
    graded = dict(CONTEXT, severity="Critical", response_time="1 business day",
                  deadline="Tuesday 24 November 2026, 10:00 (UTC+1)")
    text = " ".join(Templates().render("ack", "en", graded).text.split())
    assert "the severity Critical" in text
    assert "a first response within 1 business day, by Tuesday 24 November 2026, 10:00 (UTC+1)" in text
    french = dict(graded, severity="Critique", response_time="1 jour ouvré",
                  deadline="mardi 24 novembre 2026 à 10:00 (UTC+1)")
    text = " ".join(Templates().render("ack", "fr", french).text.split())
    assert "la sévérité Critique" in text
    assert "une première réponse sous 1 jour ouvré, au plus tard le mardi 24 novembre 2026 à 10:00 (UTC+1)" in text
    html = Templates().render("ack", "en", graded).html
    assert "<strong>Tuesday 24 November 2026, 10:00 (UTC+1)</strong>" in html


def test_best_effort_promises_no_time_and_no_severity_means_no_promise_at_all():
    best_effort = " ".join(Templates().render("ack", "en", dict(CONTEXT, severity="High")).text.split())
    assert "sets no response time" in best_effort and "within" not in best_effort
    plain = " ".join(Templates().render("ack", "en", CONTEXT).text.split())
    assert "severity" not in plain and "within" not in plain


def test_unknown_language_falls_back_to_english():
    assert Templates().render("ack", "de", CONTEXT).text == Templates().render("ack", "en", CONTEXT).text


def test_operator_templates_override_shipped_ones(tmp_path):
    folder = tmp_path / "en" / "ack"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Custom {{ ticket.reference }}")
    (folder / "body.txt").write_text("custom body")
    (folder / "body.html").write_text("<p>custom</p>")
    rendered = Templates(tmp_path).render("ack", "en", CONTEXT)
    assert (rendered.subject, rendered.text) == ("Custom SUP-000042", "custom body\n")
    assert "Bonjour" in Templates(tmp_path).render("ack", "fr", CONTEXT).text


def test_composed_mail_is_multipart_alternative_with_loop_guards():
    rendered = Templates().render("ack", "fr", CONTEXT)
    when = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
    mid = stable_message_id("ack", "SUP-000042", "<m@x>", "vendor.example")
    raw = compose(rendered, sender="support@vendor.example", sender_name="Vendor Support",
                  recipient="zoe@acme.example", recipient_name="Zoë O'Brien", message_id=mid,
                  date=when, in_reply_to="<m@x>", references=("<a@x>", "<m@x>"),
                  ticket_reference="SUP-000042")
    msg = message_from_bytes(raw, policy=default)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Auto-Submitted"] == "auto-replied" and msg["X-Auto-Response-Suppress"] == "All"
    assert msg["Message-ID"] == mid and msg["In-Reply-To"] == "<m@x>"
    assert msg["References"] == "<a@x> <m@x>"
    assert msg["Subject"] == "[SUP-000042] Scheduler <b>down</b>"
    assert "Zoë" in str(msg["To"])
    assert "reçu" in msg.get_body(("plain",)).get_content()


def test_message_ids_are_stable_and_distinct():
    a = stable_message_id("ack", "SUP-000001", "<m@x>", "vendor.example")
    assert a == stable_message_id("ack", "SUP-000001", "<m@x>", "vendor.example")
    assert a != stable_message_id("ack", "SUP-000002", "<m@x>", "vendor.example")
    assert a.startswith("<supportbot.ack.sup-000001.") and a.endswith("@vendor.example>")


@pytest.mark.parametrize("value", ["a\r\nBcc: x@y", "a\nb", "a\x00b\tc", "a\u2028b"])
def test_one_line_removes_line_breaks_and_controls(value):
    cleaned = one_line(value)
    assert cleaned.isprintable() and "\n" not in cleaned and "\r" not in cleaned


def test_shipped_templates_pass_the_start_up_check():
    Templates().check()
    assert Templates().mail_names() == template_names()


@pytest.mark.parametrize("body, line, words", [
    ("Hello {{ ticket.reference }\n", 1, "unexpected"),
    ("line one\n{% if %}\n", 2, "Expected an expression"),
    ("Hi {{ customer.name }}\n", None, "customer"),
])
def test_broken_operator_template_is_reported_with_file_and_line(tmp_path, body, line, words):
    folder = tmp_path / "fr" / "ack"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("[{{ ticket.reference }}]")
    (folder / "body.txt").write_text(body)
    (folder / "body.html").write_text("<p>ok</p>")
    with pytest.raises(TemplateError) as caught:
        Templates(tmp_path).check()
    assert caught.value.file.endswith("fr/ack/body.txt") and caught.value.line == line
    assert words in str(caught.value)
