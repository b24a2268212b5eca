"""bot.feedparse: the boundary matcher must answer exactly as the regex it replaces."""

import re

from hypothesis import given, strategies as st

from bot import feedparse
from bot.feedparse import _BoundaryMatcher, _BoundaryRe


# As email/feedparser.py builds it.
def stdlib_pattern(separator: str) -> str:
    return "(?P<sep>" + re.escape(separator) + r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"


def groups(match):
    return match and (match.group("end"), match.group("ws"), match.group("linesep"))


BOUNDARY_CHARS = st.sampled_from(list("ab=_-.()+?*[]\\^$| \t:/'") + ["\r", "\n", "é"])
separators = st.text(BOUNDARY_CHARS, min_size=1, max_size=12).map(lambda b: "--" + b)
tails = st.lists(st.sampled_from(["", "--", " ", "\t", "\r\n", "\r", "\n", "x", "-"]), max_size=5).map("".join)


@given(separators, tails, st.text(BOUNDARY_CHARS, max_size=3))
def test_same_answers_as_the_stdlib_regex(separator, tail, prefix):
    matcher = _BoundaryRe.compile(stdlib_pattern(separator))
    assert isinstance(matcher, _BoundaryMatcher)
    expected = re.compile(stdlib_pattern(separator))
    for line in (separator + tail, prefix + separator + tail, separator[:-1] + tail):
        assert groups(matcher.match(line)) == groups(expected.match(line))


def test_other_patterns_are_compiled_by_re():
    for pattern in (r"(\r\n|\r|\n)\Z", "(?P<sep>a|b" + r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"):
        assert isinstance(_BoundaryRe.compile(pattern), re.Pattern)


def test_the_stdlib_module_is_untouched():
    import email.feedparser

    assert email.feedparser.re is re
    assert feedparse.BytesFeedParser is not email.feedparser.BytesFeedParser


def test_parses_a_multipart_mail():
    parser = feedparse.BytesFeedParser()
    parser.feed(b'Content-Type: multipart/mixed; boundary="(a+b)"\r\n\r\n--(a+b)\r\n'
                b"Content-Type: text/plain\r\n\r\none\r\n--(a+b) \r\n\r\ntwo\r\n--(a+b)--\r\n")
    msg = parser.close()
    assert [part.get_payload() for part in msg.get_payload()] == ["one", "two"]
