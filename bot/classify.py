"""The severity of a request, from the customer's own words, with the evidence that decided it.

rules/severity.yaml lists, per level, what requests of that level say in the contracts'
own terms (phrases and patterns, English and French) and how customers declare a
priority themselves. Both are evidence: the vendor assigns the severity ("Severity Levels
are determined by Kestra based on information reported by the Client"), so a declared
"URGENT" above a question about configuration does not make it critical.

Each phrase or pattern that matches counts once, in the subject or the body, unless a
negation stands just before it ("no workaround is available" is not "a workaround is
available"); the level with the most evidence wins, the more severe one on a tie (a
deadline too early is a smaller fault than one too late); with no evidence at all, the
policy's default level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import TYPE_CHECKING

from bot.given import Given
from bot.memo import ByIdentity
from bot.regexfacts import most_selective, needed

if TYPE_CHECKING:  # bot.rules (pydantic, YAML) stays out of bot/textworker.py's process
    from bot.rules import SeverityEvidence

TEXT_LIMIT = 1500  # characters of the body read: the description comes first, pasted logs after
WINDOW = 300  # a pattern is run this far around the words it needs (its evidence is shorter)
DECLARED_WEIGHT = 0.5  # a stated priority weighs half a described symptom: the vendor grades
# "no workaround is available", "no data is corrupted", "pas de perte", "aucune donnée n'est
# corrompue": a negation just before, or before one word and its verb.
_NEGATION = re.compile(r"\b(?:no|not|non|never|without|pas|aucune?|sans|jamais|ni)\s+(?:de\s+|d['’])?"
                       r"(?:\w+\s+(?:is|are|was|were|has\s+been|have\s+been|n['’](?:est|a\s+été|ont\s+été))\s+)?$",
                       re.IGNORECASE)
NEGATION_WINDOW = 40  # characters before a match where a negation is looked for
_PUNCTUATION = ".,;:!?()[]{}<>'\"«»…/*"


def _words(folded: str) -> set[str]:
    """The words of a case-folded text, stripped of the punctuation around them."""
    return {word.strip(_PUNCTUATION) for word in folded.split()}


@dataclass(frozen=True)
class Evidence:
    level: int
    found: str  # the words as the customer wrote them
    where: str  # "subject" or "body"
    declared: bool = False  # the customer's own statement of a priority

    def __str__(self) -> str:
        what = "declared priority " if self.declared else ""
        return f"{what}'{self.found}' in the {self.where}"


@dataclass(frozen=True)
class Graded:
    """A severity level and why: `source` is `evidence` (the description), `declared` (only
    the customer's stated priority), `default` (nothing found) or `agent` (set by hand)."""

    level: int
    source: str
    evidence: tuple[Evidence, ...] = ()  # every hit, the winning level's first

    def explain(self, label: str) -> str:
        head = f"severity {self.level} ({label})"
        if self.source == "default":
            return f"{head}: the policy's default, nothing in the request points to a level"
        winning = [str(e) for e in self.evidence if e.level == self.level]
        others = sorted({e.level for e in self.evidence} - {self.level})
        also = f" (also evidence of level {', '.join(map(str, others))})" if others else ""
        return f"{head} from {', '.join(winning)}{also}"

    def portable(self) -> tuple:
        """Plain values (marshal), for bot/textworker.py's answers."""
        return self.level, self.source, tuple((e.level, e.found, e.where, e.declared) for e in self.evidence)

    @classmethod
    def from_portable(cls, value: tuple) -> "Graded":
        level, source, evidence = value
        return cls(level, source, tuple(Evidence(*e) for e in evidence))


@dataclass(frozen=True)
class _Item:
    """A phrase or a pattern, with what it cannot match without, so that it is only looked
    for in texts that have it: looking up words is far cheaper than a regex scan."""

    level: int
    declared: bool = False
    phrase: str = ""  # case-folded, words one space apart
    regex: re.Pattern[str] | None = None
    words: frozenset[str] = frozenset()  # a phrase: every word of it
    literals: tuple[tuple[str, ...], ...] = ()  # a pattern: one string of each tuple
    anchors: tuple[str, ...] = ()  # a pattern: strings one of which each match contains

    def possible(self, text: _Text) -> bool:
        if self.words:
            return self.words <= text.words
        return all(not text.strings.isdisjoint(strings) or any(s in text.folded for s in strings)
                   for strings in self.literals)

    def first(self, text: _Text) -> str | None:
        """The words of the first match that no negation precedes."""
        if self.regex is None:
            return _find_phrase(self.phrase, text.flat)
        whole = text.text
        for start, end in text.windows(self.anchors):
            for match in self.regex.finditer(whole, start, end):
                if match.end() == end < len(whole):  # the window's end may have made this match
                    match = self.regex.match(whole, match.start())
                if match and not _NEGATION.search(whole, max(0, match.start() - NEGATION_WINDOW), match.start()):
                    return " ".join(match[0].split())
        return None


class _Text:
    """A subject or a body, read once: case-folded, flattened to single spaces, its words
    and the index strings it contains."""

    def __init__(self, where: str, text: str, index_strings: tuple[str, ...]) -> None:
        self.where, self.text = where, text
        self.folded = text.casefold().replace("\u2019", "'")  # the typographic apostrophe too
        self.flat = " ".join(self.folded.split())
        self.words = _words(self.folded)
        self.strings = {string for string in index_strings if string in self.folded}
        self._lowered: str | None = None

    def windows(self, anchors: tuple[str, ...]) -> list[tuple[int, int]]:
        """Where to run a pattern: around each place one of its anchors stands, or the whole
        text when it is short, when there are no anchors or when none is found as written."""
        if not anchors or len(self.text) <= 4 * WINDOW:
            return [(0, len(self.text))]
        if self._lowered is None:
            self._lowered = self.text.lower()
        spans = []
        for anchor in anchors:
            at = self._lowered.find(anchor)
            while at >= 0:
                spans.append((max(0, at - WINDOW), min(len(self.text), at + len(anchor) + WINDOW)))
                at = self._lowered.find(anchor, at + 1)
        if not spans:
            return [(0, len(self.text))]
        spans.sort()
        merged = [spans[0]]
        for start, end in spans[1:]:
            if start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged


def _find_phrase(phrase: str, flat: str) -> str | None:
    start = flat.find(phrase)
    while start >= 0:
        end = start + len(phrase)
        whole = (start == 0 or not _is_word(flat[start - 1])) and (end == len(flat) or not _is_word(flat[end]))
        if whole and not _NEGATION.search(flat, max(0, start - NEGATION_WINDOW), start):
            return phrase
        start = flat.find(phrase, start + 1)
    return None


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


class Classifier:
    """The evidence of rules/severity.yaml, compiled once, and indexed by the words and
    strings each piece needs."""

    def __init__(self, evidence: SeverityEvidence) -> None:
        items = []
        for level in evidence.evidence:
            for phrase in sorted({" ".join(p.casefold().split()) for ps in level.phrases.values() for p in ps}):
                items.append(_Item(level.level, phrase=phrase, words=frozenset(_words(phrase))))
            items += [_Item(level.level, regex=p, literals=needed(p)) for ps in level.patterns.values() for p in ps]
        items += [_Item(d.level, True, regex=p, literals=needed(p)) for d in evidence.declared for p in d.patterns]
        self._by_word: dict[str, list[int]] = {}
        self._by_string: dict[str, list[int]] = {}
        self._always: list[int] = []
        for i, item in enumerate(items):
            if item.words:
                self._by_word.setdefault(max(sorted(item.words), key=len), []).append(i)
            elif item.literals:
                index = _index_strings(item.literals)
                for string in index:
                    self._by_string.setdefault(string, []).append(i)
                # Found in the text as written (lower-cased), an index string marks where to look.
                if all(s == s.lower() and not any(c.isspace() for c in s) for s in index):
                    items[i] = replace(item, anchors=index)
            else:
                self._always.append(i)
        self._items = tuple(items)
        self._strings = tuple(self._by_string)

    def grade(self, subject: str, body: str, default_level: int) -> Graded:
        found: dict[int, Evidence] = {}  # item -> its evidence: each item counts once
        for where, text in (("subject", subject), ("body", body[:TEXT_LIMIT])):
            text = _Text(where, text, self._strings)
            for i in self._candidates(text):
                item = self._items[i]
                words = i not in found and item.first(text)
                if words and not any(e.level == item.level and _same_words(e.found, words) for e in found.values()):
                    found[i] = Evidence(item.level, words, where, item.declared)
        if not found:
            return Graded(default_level, "default")
        counts: dict[int, float] = {}
        for evidence in found.values():
            counts[evidence.level] = counts.get(evidence.level, 0) + (DECLARED_WEIGHT if evidence.declared else 1)
        level = min(counts, key=lambda lv: (-counts[lv], lv))
        ordered = sorted(found.values(), key=lambda e: e.level != level)
        described = any(not e.declared for e in ordered if e.level == level)
        return Graded(level, "evidence" if described else "declared", tuple(ordered))

    def _candidates(self, text: _Text) -> list[int]:
        """The items that can match `text`, in their order in the rules."""
        candidates = set(self._always)
        for key in text.words.intersection(self._by_word):
            candidates.update(self._by_word[key])
        for key in text.strings:
            candidates.update(self._by_string[key])
        return sorted(i for i in candidates if self._items[i].possible(text))


def _index_strings(factors: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    """The strings to index a pattern by: the fewest that are long enough to be telling."""
    telling = [f for f in factors if min(map(len, f)) >= 3]
    return min(telling, key=len) if telling else most_selective(factors)


def _same_words(a: str, b: str) -> bool:
    """One piece of evidence found twice ("very slow" as a phrase and in a pattern)."""
    a, b = a.casefold(), b.casefold()
    return a in b or b in a


_classifier = ByIdentity(Classifier, limit=8)

# What grade() gave elsewhere (bot/textworker.py), by graded_key(): graded with NO_DEFAULT,
# since the default level is the contract's, known only to decide().
graded_elsewhere = Given("graded")
NO_DEFAULT = 0


def graded_key(evidence: SeverityEvidence, subject: str, body: str) -> tuple:
    """The evidence by identity (it is alive while its answers are given), and what grade()
    reads of the texts."""
    return id(evidence), subject, body[:TEXT_LIMIT]


def grade(evidence: SeverityEvidence, subject: str, body: str, default_level: int) -> Graded:
    """The severity of a request (the customer's own words: quotes and signature removed)."""
    graded = graded_elsewhere.get(graded_key(evidence, subject, body))
    if graded is None:
        return _classifier(evidence).grade(subject, body, default_level)
    return Graded(default_level, "default") if graded.source == "default" else graded


def portable_evidence(evidence: SeverityEvidence) -> tuple:
    """The evidence as plain values (marshal), for a process that does not load the rules."""
    return (tuple((level.level, dict(level.phrases), {lang: tuple(p.pattern for p in ps)
                                                      for lang, ps in level.patterns.items()})
                  for level in evidence.evidence),
            tuple((d.level, tuple(p.pattern for p in d.patterns)) for d in evidence.declared))


def evidence_from_portable(value: tuple) -> SimpleNamespace:
    """What portable_evidence() gave, back in the shape Classifier reads (patterns compiled
    as bot.rules compiles them: case-insensitive)."""
    levels, declared = value
    compiled = lambda patterns: tuple(re.compile(p, re.IGNORECASE) for p in patterns)  # noqa: E731
    return SimpleNamespace(
        evidence=tuple(SimpleNamespace(level=level, phrases=phrases,
                                       patterns={lang: compiled(ps) for lang, ps in patterns.items()})
                       for level, phrases, patterns in levels),
        declared=tuple(SimpleNamespace(level=level, patterns=compiled(ps)) for level, ps in declared))
