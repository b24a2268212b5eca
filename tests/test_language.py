"""Language of the customer's own words, on mails as real clients write them (quotes,
signatures and HTML included), and on requests in languages we do not serve."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from bot.language import _letters, detect
from bot.mailparse import parse

DATA = Path(__file__).resolve().parent / "data"


@pytest.mark.parametrize("path", sorted((DATA / "clients").glob("*_en.eml")) + sorted((DATA / "clients").glob("*_fr.eml")),
                         ids=lambda p: p.name)
def test_real_client_mail_is_answered_in_its_language(path):
    mail = parse(path.read_bytes())
    found = detect(f"{mail.subject}\n{mail.text}")
    expected = path.stem.rsplit("_", 1)[1]
    assert found.code == expected, found
    assert not (found.sure_enough_to_refuse() and found.code not in ("en", "fr"))


OTHERS = [line.split("\t", 1) for line in (DATA / "languages" / "other.txt").read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("code, text", OTHERS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(OTHERS)])
def test_other_languages_are_recognised(code, text):
    found = detect(text)
    assert found.code == code, found


def test_short_text_is_never_sure_enough_to_refuse():
    for text in ("Danke!", "Gracias", "ok", "Merci beaucoup", ""):
        assert not detect(text).sure_enough_to_refuse()


@given(st.text(max_size=300) | st.text(st.characters(max_codepoint=127), max_size=300))
def test_letters_are_counted_as_str_isalpha_counts_them(text):
    assert _letters(text) == sum(c.isalpha() for c in text)
