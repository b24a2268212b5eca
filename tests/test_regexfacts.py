"""What every match of a pattern must contain: never wrong (a regex skipped that would
have matched is evidence lost), and telling enough to skip most regexes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.regexfacts import needed
from bot.rules import load_rules

PATTERNS = [
    r"\b(?:sev(?:erity)?|s[ée]v[ée]rit[ée])\s*[:#-]?\s*1\b", r"\b(?:p1|p 1)\b", r"(?<!not )\burgent(?:e|ly)?\b",
    r"\b(?:instance|server|service)\s+(?:is\s+)?(?:down|dead)\b", r"(?m)^\s*(?:how|can\s+(?:we|i))\b[^.!?\n]{0,16}\?",
    r"\btou(?:te)?s\s+(?:les|nos)\s+\w+", r"(ab)+c", r"a|bc", r"x*y", r"[A-Z]+z", r"(?i:Down)\s+up", r"ne\s+(?:répond|va)\s+plus",
]


@pytest.mark.parametrize("pattern, expected", [
    (r"\b(?:p1|p 1)\b", (("p 1", "p1"),)),
    (r"(?<!not )\burgent(?:e|ly)?\b", (("urgent",),)),
    (r"\b(?:instance|server|service)\s+(?:is\s+)?(?:down|dead)\b", (("instance", "server", "service"), ("dead", "down"))),
    (r"\btou(?:te)?s\s+(?:les|nos)", (("tous", "toutes"), ("les", "nos"))),
    (r"Sévérité", (("sévérité",),)),  # case-folded
    (r"x*", ()), (r"[a-z]+", ()), (r"a|.", ()),  # too free to say anything
])
def test_what_a_pattern_needs(pattern, expected):
    assert needed(re.compile(pattern, re.I)) == expected


texts = st.text(alphabet="abcdehilnoprstuvxyzéèDUWPS1 ?:\n-", max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATTERNS), texts, texts)
def test_a_text_that_matches_has_everything_needed(pattern, before, after):
    regex = re.compile(pattern, re.I)
    sample = _example(pattern)
    for text in (before + after, before + sample + after):
        if regex.search(text):
            folded = text.casefold()
            assert all(any(s in folded for s in strings) for strings in needed(regex)), text


def _example(pattern: str) -> str:
    """A string that matches, so that the property is not only tried on misses."""
    return {r"(ab)+c": "ababc", r"a|bc": "bc", r"x*y": "xxy", r"[A-Z]+z": "Dz"}.get(pattern, {
        0: "sev 1", 1: "P1", 2: "Urgently", 3: "Server is DOWN", 4: "how are we?", 5: "toutes les flows",
        10: "down  up", 11: "ne répond plus"}.get(PATTERNS.index(pattern), ""))


def test_every_shipped_severity_pattern_is_read_and_most_are_telling():
    rules = load_rules()
    patterns = [p for e in rules.severity.evidence for ps in e.patterns.values() for p in ps]
    patterns += [p for d in rules.severity.declared for p in d.patterns]
    telling = [p for p in patterns if any(min(map(len, f)) >= 3 for f in needed(p))]
    assert len(telling) >= 0.9 * len(patterns), [p.pattern for p in patterns if p not in telling]
