"""bot.mailparse: real messages parse to the right values, hostile ones never crash.

Data:
- tests/data/cpython/  CPython's own email test corpus (PSF licence, see its README);
- tests/data/nasty/    hostile messages, one robustness case each;
- tests/data/clients/  messages shaped like Outlook, Thunderbird, Gmail, iPhone Mail and
                       mutt output (CRLF, as IMAP serves them), plus automatic mail.
"""

from __future__ import annotations

import base64
import email
import os
import re
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.mailparse import (
    MAX_BODY_CHARS,
    MAX_DEPTH,
    Attachment,
    ParsedMail,
    UnparseableMail,
    message_ids,
    parse,
)

DATA = Path(__file__).parent / "data"
CPYTHON = sorted((DATA / "cpython").glob("msg_*.txt"))
NASTY = sorted((DATA / "nasty").glob("*.eml"))
CLIENTS = sorted((DATA / "clients").glob("*.eml"))
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def load(kind: str, name: str) -> ParsedMail:
    return parse((DATA / kind / name).read_bytes())


def plain(body: str, *headers: str) -> ParsedMail:
    """A minimal text/plain mail around `body`, for the quote and signature rules."""
    head = "\r\n".join(("From: a@b.example", "Subject: t", *headers))
    return parse(f"{head}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}".encode())


def assert_invariants(mail: ParsedMail) -> None:
    """What every consumer may rely on, whatever the input."""
    assert isinstance(mail, ParsedMail)
    for line in (mail.subject, mail.from_name):
        assert isinstance(line, str) and not CONTROL.search(line) and len(line) <= 998
        assert line == line.strip()
    for mid in (mail.message_id, mail.in_reply_to, *mail.references):
        assert mid is None or (mid.startswith("<") and mid.endswith(">") and "@" in mid and " " not in mid)
    for addr in (mail.from_addr, mail.reply_to, *mail.to, *mail.cc):
        assert addr is None or (addr == addr.lower() and "@" in addr and not re.search(r"\s", addr))
    assert mail.date is None or mail.date.utcoffset().total_seconds() == 0
    assert "\r" not in mail.full_text and "\x00" not in mail.full_text
    assert isinstance(mail.text, str) and len(mail.text) <= len(mail.full_text)
    assert all(isinstance(a, Attachment) and a.size >= 0 for a in mail.attachments)
    assert mail.auto is None or isinstance(mail.auto, str)
    assert all(isinstance(d, str) for d in mail.defects)
    strings = [mail.subject, mail.from_name, mail.text, mail.full_text, mail.auto or "", *mail.defects]
    strings += [a.filename or "" for a in mail.attachments] + [a.content_type for a in mail.attachments]
    for value in strings:
        value.encode("utf-8")  # no lone surrogates: everything downstream must be able to store it


# --- the CPython corpus ---------------------------------------------------------------


@pytest.mark.parametrize("path", CPYTHON, ids=lambda p: p.name)
def test_cpython_corpus_parses(path):
    if path.name == "msg_19.txt":  # a bare digest body that CPython uses as a payload
        with pytest.raises(UnparseableMail, match="no header"):
            parse(path.read_bytes())
        return
    assert_invariants(parse(path.read_bytes()))


def test_cpython_corpus_is_all_there():
    assert len(CPYTHON) == 48


def test_cpython_values():
    first = load("cpython", "msg_01.txt")
    assert first.subject == "This is a test message"
    assert first.from_addr == "bbb@ddd.com"
    assert first.message_id == "<15090.61304.110929.45684@aaa.zzz.org>"
    assert load("cpython", "msg_16.txt").auto == "bounce: multipart/report"
    assert load("cpython", "msg_32.txt").auto == "precedence: bulk"
    signed = load("cpython", "msg_45.txt")
    assert signed.text == "This is the signed contents."
    assert [a.content_type for a in signed.attachments] == ["application/pgp-signature"]


# --- not a mail ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "empty"),
        (b" \r\n\t\r\n", "empty"),
        (b"\r\n\r\nonly a body", "no header"),
        (b"hello, this is not a mail\n", "no header"),
        (b"\x00\x01\x02\xff\xfe", "no header"),
    ],
)
def test_not_a_mail(raw, reason):
    with pytest.raises(UnparseableMail) as caught:
        parse(raw)
    assert reason in caught.value.reason


# --- hostile input ---------------------------------------------------------------------


@pytest.mark.parametrize("path", NASTY, ids=lambda p: p.name)
def test_nasty_invariants(path):
    assert_invariants(parse(path.read_bytes()))


def test_nasty_corpus_size():
    assert len(NASTY) >= 15


def test_unknown_charset_still_decoded():
    mail = load("nasty", "unknown_charset.eml")
    assert mail.text == "Le café est prêt à 10 h."
    assert "unknown charset 'x-unknown' in text/plain part" in mail.defects


def test_lying_charset_falls_back():
    mail = load("nasty", "lying_charset.eml")
    assert mail.text == "Problème réseau, merci de répondre."
    assert any("declared charset 'utf-8'" in d for d in mail.defects)


def test_codec_that_is_not_a_charset():
    mail = load("nasty", "codec_not_charset.eml")
    assert mail.subject == "hello"
    assert mail.text == "first part\nsecond part"
    assert "unknown charset 'zlib' in text/plain part" in mail.defects


def test_missing_boundary_keeps_text():
    mail = load("nasty", "missing_boundary.eml")
    assert "The server is down." in mail.text
    assert any("no boundary parameter" in d for d in mail.defects)


def test_wrong_boundary_keeps_text():
    mail = load("nasty", "wrong_boundary.eml")
    assert "Hello, the export fails." in mail.text
    assert any("start boundary was never found" in d for d in mail.defects)


def test_nested_garbage():
    mail = load("nasty", "nested_garbage.eml")
    assert mail.text.startswith("Real words here.")
    assert Attachment("cut.pdf", "application/pdf", 27) in mail.attachments
    assert any("close boundary" in d for d in mail.defects)


def test_deep_nesting_is_capped():
    mail = load("nasty", "deep_nesting.eml")
    assert mail.subject == "deep" and mail.text == ""
    assert f"MIME nesting deeper than {MAX_DEPTH} levels; inner parts ignored" in mail.defects


def test_nesting_beyond_the_stdlib_parser():
    """CPython's parser recurses per level and dies near 1000; we fall back to headers."""
    depth = 1500
    opening = "".join(f'--b{i}\nContent-Type: multipart/mixed; boundary="b{i + 1}"\n\n' for i in range(depth))
    raw = f'From: a@b.example\nSubject: abyss\nContent-Type: multipart/mixed; boundary="b0"\n\n{opening}'
    mail = parse(raw.encode())
    assert mail.subject == "abyss" and mail.from_addr == "a@b.example"
    assert "MIME structure nested too deeply to parse; body kept as raw text" in mail.defects


def test_raw_8bit_and_nul_in_headers():
    mail = load("nasty", "raw_8bit_headers.eml")
    assert mail.subject == "Problème d'accès urgent"
    assert mail.from_name == "Hélène Dubois"
    assert mail.from_addr == "helene.dubois@exemple-sa.example"
    assert "raw 8-bit bytes in Subject header" in mail.defects


def test_broken_encoded_words():
    mail = load("nasty", "broken_encoded_words.eml")
    # the split "è" is rejoined; the bad base64 word and the unterminated one stay literal
    assert mail.subject == "Problème d’accès =?utf-8?b?QUJDR?= =?utf-8?q?unterminated"
    assert mail.from_name == "René Martin"
    assert "unknown charset 'x-unknown' in From header" in mail.defects
    assert "broken encoded word in Subject header" in mail.defects


def test_missing_headers():
    mail = load("nasty", "missing_headers.eml")
    assert (mail.subject, mail.from_addr, mail.from_name, mail.date, mail.message_id) == ("", None, "", None, None)
    assert (mail.to, mail.references, mail.in_reply_to, mail.auto) == ((), (), None, None)
    assert mail.text == "Just a body."


def test_duplicated_headers_first_wins():
    mail = load("nasty", "duplicated_headers.eml")
    assert mail.subject == "first subject"
    assert mail.from_addr == "first@acme-corp.example"
    assert mail.message_id == "<one@acme-corp.example>"
    assert mail.to == ("support@vendor.example", "other@vendor.example")
    assert "duplicate From header; the first one is used" in mail.defects


def test_empty_body():
    mail = load("nasty", "empty_body.eml")
    assert mail.subject == "empty" and mail.message_id == "<empty@acme-corp.example>"
    assert (mail.text, mail.full_text, mail.attachments) == ("", "", ())


def test_html_only():
    mail = load("nasty", "html_only.eml")
    words = 'Hello team,\nThe café app says "error & warning"\nsince Monday’s update.\nstep one\nstep two\nThanks,\nJane'
    assert mail.full_text == words + "\n> Earlier message from support"
    assert mail.text == words
    assert "ignored title" not in mail.full_text and "alert" not in mail.full_text


def test_html_parser_trap():
    mail = load("nasty", "html_parser_trap.eml")
    assert mail.text.startswith("Visible words")
    assert "HTML body could not be parsed; tags stripped" in mail.defects


HOSTILE_SIZES = {
    # CPython 3.11's html.parser is quadratic on unclosed comments and unclosed tags
    "html soup": (b"text/html", b"<p>Visible</p>" + b"<!--x>" * 100_000 + b"<a" * 100_000 + b"</" * 100_000),
    # naive rendering would write "> " once per enclosing blockquote on every line
    "deep blockquotes": (b"text/html", b"<p>Visible</p>" + b"<blockquote>x" * 150_000),
    # naive flowed joining re-copies the growing paragraph for every soft break
    "one flowed paragraph": (b"text/plain; format=flowed", b"Visible word word word word \r\n" * 60_000),
    "many attributions": (b"text/plain", b"Visible\r\n" + b"On 1 Jan 2026 X wrote:\r\n> q\r\n" * 60_000),
}


@pytest.mark.timeout(120)  # a hang guard, not a speed target: the naive versions take minutes
@pytest.mark.parametrize("name", sorted(HOSTILE_SIZES))
def test_hostile_sizes_stay_linear(name):
    ctype, body = HOSTILE_SIZES[name]
    mail = parse(b"From: a@b.example\r\nContent-Type: " + ctype + b"\r\n\r\n" + body)
    assert mail.text.startswith("Visible")
    assert len(mail.full_text) <= MAX_BODY_CHARS + MAX_DEPTH * 2 * mail.full_text.count("\n")


def test_malformed_addresses():
    mail = load("nasty", "malformed_addresses.eml")
    assert mail.from_addr is None and mail.reply_to is None
    assert mail.to == ("a@b.example", "upper@example.com")
    assert mail.cc == ()


def test_header_injection():
    mail = load("nasty", "header_injection.eml")
    assert mail.subject == "Hello Bcc: victim@example.comand more"
    assert mail.from_name == "Eve Bcc: victim@example.com"
    assert mail.from_addr == "eve@evil.example"  # the encoded "@" did not move the address


def test_injection_in_plain_subject_header():
    mail = parse(b"From: a@b.example\r\nSubject: Hello\r\n \r\nBcc: victim@x.example\r\n\r\nbody")
    assert mail.subject == "Hello"


def test_ids_and_dates():
    mail = load("nasty", "ids_and_dates.eml")
    assert mail.message_id is None and mail.date is None
    assert "unparseable Date header" in mail.defects
    assert mail.in_reply_to == "<abc@example.com>"
    assert mail.references == ("<a@x.example>", "<b@y.example>", "<c@z.example>")


def test_bare_message_id_and_zoneless_date():
    mail = load("nasty", "bare_message_id.eml")
    assert mail.message_id == "<1234.5678@acme-corp.example>"
    assert mail.date == datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


def test_bad_base64_body():
    mail = load("nasty", "bad_base64_body.eml")
    assert mail.text == "Hello world"
    assert any("base64" in d for d in mail.defects)


def test_controls_in_body():
    mail = load("nasty", "controls_in_body.eml")
    assert mail.full_text == "Hello[31m red[0m\nsecond\tline"


def test_rfc2231_garbage_parameters():
    mail = load("nasty", "rfc2231_garbage.eml")
    assert mail.text == "See attachments."
    assert mail.attachments == (Attachment(None, "application/octet-stream", 3),)
    assert "undecodable file name in application/octet-stream part" in mail.defects


def test_rfc2231_garbage_boundary():
    mail = load("nasty", "rfc2231_boundary.eml")
    assert mail.subject == "bad boundary"
    assert "Still readable." in mail.text
    assert "MIME structure unparseable (UnicodeEncodeError); body kept as raw text" in mail.defects


def test_huge_attachment_recorded_not_kept():
    payload = os.urandom(25 * 1024 * 1024)
    raw = (
        b"From: a@b.example\r\nSubject: big\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=dump.bin\r\n\r\n"
        + base64.encodebytes(payload).replace(b"\n", b"\r\n")
        + b"--XX--\r\n"
    )
    del payload
    tracemalloc.start()
    try:
        mail = parse(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert mail.text == "see attached"
    assert mail.attachments == (Attachment("dump.bin", "application/octet-stream", 25 * 1024 * 1024),)
    assert peak < 4 * len(raw)  # a few copies, not the dozen the naive stdlib path makes


def test_absurd_text_body_is_truncated():
    mail = plain("x" * (MAX_BODY_CHARS + 10))
    assert len(mail.full_text) == MAX_BODY_CHARS
    assert any("truncated" in d for d in mail.defects)


def test_long_subject_is_capped():
    assert len(plain("b", "X: y").subject) == 1
    assert len(parse(b"Subject: " + b"a " * 2000 + b"\n\nbody").subject) == 998


# --- real clients ----------------------------------------------------------------------

CLIENT_EXPECTATIONS = {
    "outlook_en.eml": dict(
        subject="RE: [SUP-000042] Export job fails with timeout",
        from_addr="jane.miller@acme-corp.example",
        from_name="Jane Miller",
        message_id="<AM0PR07MB41318C2F1D6B0E4A8F3E2D1CB4A90@AM0PR07MB4131.eurprd07.prod.outlook.com>",
        in_reply_to="<ack.SUP-000042.1@vendor.example>",
        references=("<CAJ8x1f0r1g1nal.2026@acme-corp.example>", "<ack.SUP-000042.1@vendor.example>"),
        cc=("ops@acme-corp.example",),
        text=(
            "Hi,\n\nThe export job still fails after applying patch 2.4.2. The log now says "
            '"Timeout while writing batch 42", and the job stops after about ten minutes.\n\n'
            "Can you look at it today? Our month-end close depends on it.\n\n"
            "Best regards,\nJane Miller\nIT Operations - Acme Corp"
        ),
    ),
    "outlook_fr.eml": dict(
        subject="RE: [SUP-000043] Problème de connexion à l'extranet",
        from_addr="helene.dubois@exemple-sa.example",
        from_name="Hélène Dubois",
        message_id="<PR1P264MB23456E1F2A3B4C5D6E7F8091A2B3C4D5E6F70@PR1P264MB2345.FRAP264.PROD.OUTLOOK.COM>",
        in_reply_to="<ack.SUP-000043.1@vendor.example>",
        references=("<ack.SUP-000043.1@vendor.example>",),
        attachments=(Attachment("capture écran.png", "image/png", 70),),
        text=(
            "Bonjour,\n\nDepuis ce matin, aucun utilisateur ne peut se connecter à l'extranet : "
            "la page affiche « Erreur 502 ». C'est bloquant pour toute l'équipe.\n\n"
            "Pouvez-vous traiter ce ticket en priorité ? Une capture d'écran est jointe.\n\n"
            "Cordialement,\nHélène Dubois\nResponsable informatique"
        ),
    ),
    "thunderbird_en.eml": dict(
        subject="Re: [SUP-000044] Cluster node keeps restarting",
        from_addr="john.smith@globex.example",
        from_name="John Smith",
        message_id="<8f3c2a1e-5b7d-4c9a-a1b2-3c4d5e6f7a8b@globex.example>",
        in_reply_to="<ack.SUP-000044.1@vendor.example>",
        references=("<ack.SUP-000044.1@vendor.example>",),
        text=(
            "Hi,\n\nWe are running version 2.4.1 on three nodes. The problem appears only on the "
            "node that was upgraded last week; the other two are fine.\n\n"
            "I can send the logs if you need them."
        ),
    ),
    "thunderbird_fr.eml": dict(
        subject="Re: [SUP-000045] Licence expirée",
        from_addr="luc.martin@initech.example",
        from_name="Luc Martin",
        message_id="<3b9e7c55-0d2f-4e8a-9c61-7f5a2e4d8b10@initech.example>",
        in_reply_to="<ack.SUP-000045.1@vendor.example>",
        references=("<ack.SUP-000045.1@vendor.example>",),
        text=(
            "Bonjour,\n\nMerci pour votre retour. Nous avons renouvelé la licence hier, mais le "
            "message « licence expirée » s'affiche toujours au démarrage.\n\n"
            "Faut-il redémarrer le service ?\n\nLuc"
        ),
    ),
    "gmail_en.eml": dict(
        subject="Re: [SUP-000046] Sync stops after a few records",
        from_addr="priya.patel@umbrella.example",
        from_name="Priya Patel",
        message_id="<CAH7kQ9wZ2y3=Xq8_r5T+gV0fLmN1pB4cD6eF7hJ8kL9mN0pQ@mail.gmail.com>",
        in_reply_to="<CAB1agentMarc@vendor.example>",
        references=(
            "<CAH7kQ9x0rig1nalPriya@mail.gmail.com>",
            "<ack.SUP-000046.1@vendor.example>",
            "<CAB1agentMarc@vendor.example>",
        ),
        to=("marc.durand@vendor.example",),
        cc=("support@vendor.example",),
        text=(
            "Hello Marc,\n\nThanks for the quick answer. I tried the workaround but the sync still\n"
            "stops after about 200 records. Our settings are: batch size 500, retries 3.\n\nPriya"
        ),
    ),
    "gmail_fr.eml": dict(
        subject="Re: [SUP-000047] Données manquantes dans le rapport mensuel",
        from_addr="camille.roux@exemple-sa.example",
        from_name="Camille Roux",
        message_id="<CAFm1x7Yp0q3rS5tU7vW9xY1zA3bC5dE7fG9hI1jK3lM5nO7p@mail.gmail.com>",
        in_reply_to="<ack.SUP-000047.1@vendor.example>",
        references=("<ack.SUP-000047.1@vendor.example>",),
        attachments=(Attachment("relevé incident.pdf", "application/pdf", 77),),
        text=(
            "Bonjour,\n\nVoici le relevé demandé en pièce jointe. Les données du 18 novembre\n"
            "manquent toujours dans le rapport mensuel.\n\nBien à vous,\nCamille"
        ),
    ),
    "iphone_en.eml": dict(
        subject="Re: [SUP-000048] Cannot log in to the portal",
        from_addr="tom.baker@acme-corp.example",
        from_name="Tom Baker",
        message_id="<9D2E8F61-3A4B-4C5D-8E9F-0A1B2C3D4E5F@acme-corp.example>",
        in_reply_to="<ack.SUP-000048.1@vendor.example>",
        references=("<ack.SUP-000048.1@vendor.example>",),
        date=datetime(2026, 11, 23, 12, 48, 12, tzinfo=timezone.utc),
        text="Still locked out this morning, same error. Can someone call me? +1 555 0142",
    ),
    "iphone_fr.eml": dict(
        subject="Re: [SUP-000049] Serveur bloqué",
        from_addr="sophie.leroy@exemple-sa.example",
        from_name="Sophie Leroy",
        message_id="<4C7B9A20-1D3E-4F5A-8B6C-7D8E9F0A1B2C@exemple-sa.example>",
        in_reply_to="<ack.SUP-000049.1@vendor.example>",
        references=("<ack.SUP-000049.1@vendor.example>",),
        text=(
            "Bonjour,\n\nLe serveur redémarre en boucle depuis la mise à jour de vendredi. "
            "Merci de me rappeler rapidement.\n\nSophie"
        ),
    ),
    "mutt_en.eml": dict(
        subject="Re: [SUP-000050] Crash on startup",
        from_addr="paul@weber.example",
        from_name="Paul Weber",
        message_id="<20261123100244.GA12345@weber.example>",
        in_reply_to="<ack.SUP-000050.1@vendor.example>",
        references=("<ack.SUP-000050.1@vendor.example>",),
        attachments=(
            Attachment("app.log", "text/plain", 84),
            Attachment("signature.asc", "application/pgp-signature", 235),
        ),
        text="Attached (app.log, last lines only).\n\n2.4.1, installed from your Debian repository on bookworm.",
    ),
}


@pytest.mark.parametrize("name", sorted(CLIENT_EXPECTATIONS))
def test_client_message(name):
    mail = load("clients", name)
    assert_invariants(mail)
    expected = {"to": ("support@vendor.example",), "cc": (), "attachments": (), "auto": None, "defects": ()}
    expected.update(CLIENT_EXPECTATIONS[name])
    assert {key: getattr(mail, key) for key in expected} == expected


def test_client_dates_are_utc():
    assert load("clients", "outlook_fr.eml").date == datetime(2026, 11, 23, 8, 41, 6, tzinfo=timezone.utc)
    assert load("clients", "thunderbird_fr.eml").date == datetime(2026, 11, 23, 10, 3, 12, tzinfo=timezone.utc)


def test_full_text_keeps_the_quote():
    mail = load("clients", "gmail_en.eml")
    assert mail.full_text.startswith(mail.text)
    assert "> Please try setting the batch size to 100 and tell us if it helps." in mail.full_text


def test_flowed_quote_is_rejoined():
    mail = load("clients", "thunderbird_en.eml")
    assert "> We have received your request and opened ticket SUP-000044. Could you tell us" in mail.full_text


def html_only(name: str) -> bytes:
    """The client's message reduced to its HTML alternative, as HTML-only senders send it."""
    msg = email.message_from_bytes((DATA / "clients" / name).read_bytes())
    html = next(p for p in msg.walk() if p.get_content_type() == "text/html")
    head = f"From: x@y.example\r\nContent-Type: text/html; charset={html.get_content_charset()}\r\n\r\n"
    return head.encode() + html.get_payload(decode=True)


@pytest.mark.parametrize(
    "name, first_paragraph",
    [
        ("outlook_en.eml", "The export job still fails after applying patch 2.4.2."),
        ("outlook_fr.eml", "Depuis ce matin, aucun utilisateur ne peut se connecter"),
        ("gmail_en.eml", "Thanks for the quick answer. I tried the workaround but the sync still stops"),
        ("gmail_fr.eml", "Voici le relevé demandé en pièce jointe. Les données du 18 novembre manquent"),
        ("iphone_fr.eml", "Le serveur redémarre en boucle depuis la mise à jour de vendredi."),
    ],
)
def test_html_alternative_gives_the_same_words(name, first_paragraph):
    """HTML-only mail: the quote (blockquote, gmail_quote, Outlook header block) goes too."""
    from_html = parse(html_only(name))
    from_plain = load("clients", name)
    assert first_paragraph in from_html.text.split("\n\n")[1]
    # same words, only the paragraph wrapping may differ
    assert from_html.text.split() == from_plain.text.split()
    assert len(from_html.full_text) > len(from_html.text)


# --- automatic mail ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, reason",
    [
        ("exchange_oof.eml", "auto-submitted: auto-generated"),
        ("postfix_dsn.eml", "bounce: multipart/report"),
        ("gmail_vacation.eml", "auto-submitted: auto-replied"),
        ("mailing_list.eml", "list: List-Id"),
        ("outlook_en.eml", None),
        ("gmail_fr.eml", None),
    ],
)
def test_auto_samples(name, reason):
    assert load("clients", name).auto == reason


def test_dsn_details():
    mail = load("clients", "postfix_dsn.eml")
    assert mail.from_addr == "mailer-daemon@mx.vendor.example"
    assert [a.content_type for a in mail.attachments] == ["message/delivery-status", "message/rfc822"]
    assert "Recipient address rejected: User unknown" in mail.text


@pytest.mark.parametrize(
    "headers, reason",
    [
        (["Auto-Submitted: no"], None),
        (["Auto-Submitted: auto-replied (vacation)"], "auto-submitted: auto-replied"),
        (["Auto-Submitted:"], "auto-submitted: unknown"),
        (["Precedence: junk"], "precedence: junk"),
        (["Precedence: list"], "precedence: list"),
        (["Precedence: first-class"], None),
        (["List-Unsubscribe: <mailto:leave@lists.example>"], "list: List-Unsubscribe"),
        (["Return-Path: < >"], "bounce: empty return-path"),
        (["Return-Path: <a@b.example>"], None),
        (["X-Autoreply: yes"], "x-autoreply"),
        (["X-Autorespond: yes"], "x-autorespond"),
        (["X-Auto-Response-Suppress: DR, OOF, AutoReply"], "auto-response-suppress: autoreply,oof"),
        (["X-Auto-Response-Suppress: DR, NDR"], None),
        (["Content-Type: multipart/report; report-type=disposition-notification"], "bounce: multipart/report"),
        (["Precedence: bulk", "Auto-Submitted: auto-generated"], "auto-submitted: auto-generated"),
    ],
)
def test_auto_rules(headers, reason):
    assert plain("hi", *headers).auto == reason


@pytest.mark.parametrize("sender", ["MAILER-DAEMON", "Postmaster@mx.example", "Mail System <mailer-daemon@mx.example>"])
def test_auto_mailer_daemon(sender):
    raw = f"From: {sender}\r\nSubject: failure\r\n\r\nundeliverable".encode()
    assert parse(raw).auto == "bounce: mailer-daemon"


# --- quote and signature rules ----------------------------------------------------------


@pytest.mark.parametrize(
    "body, words",
    [
        ("Thanks!\n--\nJane\nAcme", "Thanks!"),
        ("Thanks!\n-- \nJane", "Thanks!"),
        ("Thanks!\n\nSent from my iPad", "Thanks!"),
        ("Merci\n\nEnvoyé de mon iPhone\n\n> Le 20 nov. 2026", "Merci"),
        ("Thanks\n\nGet Outlook for iOS\n________________________________\nFrom: S", "Thanks"),
        ("Merci\n\nObtenir Outlook pour Android<https://aka.ms/AAb9ysg>\n____\nDe : S", "Merci"),
        ("Merci\n\nEnvoyé à partir de Courrier pour Windows\n\nDe : S", "Merci"),
        ("New words\n\n-------- Original Message --------\nSubject: x\n\nold", "New words"),
        ("Nouveau\n\n-----Message d'origine-----\nDe : S\n\nancien", "Nouveau"),
        ("Mine\n\n*From:* Support <s@v.example>\n*Sent:* Friday\n*To:* Me\n*Subject:* x\n\nold", "Mine"),
        ("Mine\n\nOn Fri, 20 Nov 2026 at 16:05, Support wrote:\nold unquoted text", "Mine"),
        ("Mine\n\nLe 20/11/2026 à 16:05, Support a\nécrit :\n> old", "Mine"),
        ("On Monday we upgraded to 2.4 and it broke.\nPlease help.", "On Monday we upgraded to 2.4 and it broke.\nPlease help."),
        ("From: our point of view, this is urgent.\nThanks", "From: our point of view, this is urgent.\nThanks"),
        ("> quoted\nanswer 1\n\n\n\n> quoted 2\nanswer 2\n", "answer 1\n\nanswer 2"),
    ],
)
def test_own_words(body, words):
    assert plain(body).text == words


def test_format_flowed_delsp():
    raw = (
        b"From: a@b.example\r\nContent-Type: text/plain; charset=utf-8; format=flowed; delsp=yes\r\n\r\n"
        b"Hyphen-\r\nated and spl \r\nit.\r\n"
    )
    assert parse(raw).text == "Hyphen-\nated and split."


# --- message ids --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, ids",
    [
        (None, ()),
        ("", ()),
        ("<a@b>", ("<a@b>",)),
        ("<a@b> <c@d>\r\n\t<e@f>", ("<a@b>", "<c@d>", "<e@f>")),
        ("<a@\r\n b>", ("<a@b>",)),
        ("<a@b> <a@b>", ("<a@b>",)),
        ("<no-at-sign> <ok@x> <> <caf\u00e9@x> <a b>", ("<ok@x>",)),
        ("<a\x00b@x>", ("<ab@x>",)),  # controls go, like folding whitespace
        ('Your message of "Mon" <q@r>', ("<q@r>",)),
    ],
)
def test_message_ids(value, ids):
    assert message_ids(value) == ids


# --- fuzzing ------------------------------------------------------------------------------

FRAGMENTS = [
    b"From: a@b.example\r\n", b"Subject: =?utf-8?b?w6k=?= =?x?q?=FF?=\r\n", b"To: <<@>>, x@y,\r\n",
    b"Content-Type: multipart/mixed; boundary=B\r\n", b"Content-Type: multipart/alternative; boundary=C\r\n",
    b"Content-Type: text/html; charset=x-unknown\r\n", b"Content-Type: message/rfc822\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''%FF%FE\r\n", b"\r\n", b"--B\r\n", b"--B--\r\n",
    b"--C\r\n", b"\xff\xfe\x00", b"<![x[<!--<a<blockquote>&#x110000;", b"> quoted\r\n", b"-- \r\n",
    b"On Mon, 1 Jan 2026, X wrote:\r\n", b"SGVsbG8===\r\n", b"=E9=\r\n", b"Date: Mon, 99 Xyz 99999\r\n",
    b"Message-ID: <x@y\r\n", b" folded\r\n", b"\tZ: \x80\r\n", b"Subject: =?\xff?q?\xfe?= \xe9\r\n",
    b"Content-Type: text/plain; charset=unicode_escape\r\n", b"\\ud800 \\U0010ffff", b"Content-Type: te\xffxt/pl\x00ain\r\n",
    b"Content-Type: text/plain; format=flowed; delsp=yes\r\n", b"Le 1 janv. 2026, X a\r\n\xc3\xa9crit :\r\n",
]


def parse_or_reject(raw: bytes) -> None:
    try:
        mail = parse(raw)
    except UnparseableMail as refused:
        assert refused.reason
        return
    assert_invariants(mail)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_fuzz_random_bytes(raw):
    parse_or_reject(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join))
def test_fuzz_mime_fragments(raw):
    parse_or_reject(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CLIENTS + NASTY), st.data())
def test_fuzz_mutated_real_mail(path, data):
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 20))):
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at + data.draw(st.integers(0, 8))] = data.draw(st.binary(max_size=8))
    parse_or_reject(bytes(raw))
