"""What every match of a regular expression must contain, read from the pattern itself.

`needed(pattern)` gives tuples of strings (case-folded): a text can only match if, for
each tuple, it contains one of its strings. Testing a few substrings is much cheaper than
a case-insensitive regex scan, so the severity evidence (hundreds of phrases and
patterns) only runs the regexes that can match. The answer is conservative: when the
pattern is too free to say anything, nothing is needed and the regex always runs.

It reads the standard library's own parse of the pattern (`re._parser`), so it agrees
with `re` on what the pattern means.
"""

from __future__ import annotations

import re

MAX_STRINGS = 64  # alternatives kept for one run before it is cut

try:  # the parser's internals: if a Python version changes them, nothing is needed
    import re._constants as _c
    import re._parser as _parser
    _ZERO_WIDTH = {_c.AT, _c.ASSERT, _c.ASSERT_NOT}
    _REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT}
except (ImportError, AttributeError):  # pragma: no cover
    _parser = None


def needed(pattern: re.Pattern[str]) -> tuple[tuple[str, ...], ...]:
    """Each tuple: strings one of which every match contains (case-folded)."""
    if _parser is None:
        return ()
    try:
        factors = _factors(_parser.parse(pattern.pattern, pattern.flags))
    except Exception:  # noqa: BLE001 - a construct this reader does not know: assume nothing
        return ()
    folded = ({s.casefold() for s in f} for f in factors if f and all(f))
    return tuple(dict.fromkeys(tuple(sorted(_shortest(f))) for f in folded))


def _shortest(strings: set[str]) -> set[str]:
    """Without the strings that contain another: "urgent" stands for "urgently" too."""
    return {s for s in strings if not any(other != s and other in s for other in strings)}


def most_selective(factors: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    """The factor least likely to be found by chance: its shortest string the longest."""
    return max(factors, key=lambda f: (min(map(len, f)), -len(f))) if factors else ()


def _factors(sequence) -> list[set[str]]:
    """Required contiguous strings of a sequence: runs of literal elements, joined across
    zero-width assertions, with the leading run of a group or repeat that follows."""
    factors: list[set[str]] = []
    run: set[str] | None = None  # the strings of the literal run being read
    for op, value in sequence:
        if op in _ZERO_WIDTH:
            continue  # \b, ^, look-arounds take no characters: the run goes on
        strings = _finite(op, value)
        if strings is not None:
            joined = strings if run is None else _joined(run, strings)
            if joined is None:  # too many combinations: keep what was read, start again
                factors.append(run)
                joined = strings
            run = joined
            continue
        inner = _inner(op, value)
        if inner is not None:  # a group, an alternation or a repeat that matches once
            lead = set().union(*(_lead(branch) for branch in inner))
            ahead = lead if run is None else (_joined(run, lead) or run)
            if all(ahead):
                factors.append(ahead)
            branch_factors = [_best(_factors(branch)) for branch in inner]
            if all(branch_factors):
                factors.append(set().union(*branch_factors))
        elif run:
            factors.append(run)
        run = None
    if run:
        factors.append(run)
    return factors


def _finite(op, value) -> set[str] | None:
    """Every string the element can match, when there are few and all are literal."""
    if op is _c.LITERAL:
        return {chr(value)}
    if op is _c.IN:
        if all(kind is _c.LITERAL for kind, _ in value) and len(value) <= 8:
            return {chr(code) for _, code in value}
        return None
    if op in _REPEATS and value[0] == 0 and value[1] == 1:  # optional: (?:e|ly)?
        whole = _whole(value[2])
        return whole | {""} if whole is not None and len(whole) < MAX_STRINGS else None
    if op in (_c.SUBPATTERN, _c.BRANCH):
        strings: set[str] = set()
        for branch in _inner(op, value):
            whole = _whole(branch)
            if whole is None:
                return None
            strings |= whole
        return strings if len(strings) <= MAX_STRINGS else None
    return None


def _whole(sequence) -> set[str] | None:
    """Every string the sequence can match, when all its elements are literal."""
    strings, complete = _leading(sequence)
    return strings if complete else None


def _lead(sequence) -> set[str]:
    """The strings every match of the sequence starts with ({""} when none is known)."""
    return _leading(sequence)[0]


def _leading(sequence) -> tuple[set[str], bool]:
    """The strings of the literal elements the sequence starts with, and whether that is
    all of it."""
    strings = {""}
    for op, value in sequence:
        if op in _ZERO_WIDTH:
            continue
        part = _finite(op, value)
        joined = _joined(strings, part) if part is not None else None
        if joined is None:
            return strings, False
        strings = joined
    return strings, True


def _inner(op, value) -> list | None:
    """The alternatives of a group, an alternation or a repeat that matches at least once."""
    if op is _c.SUBPATTERN:
        return [value[-1]]
    if op is _c.BRANCH:
        return list(value[1])
    if op in _REPEATS and value[0] >= 1:
        return [value[2]]
    return None


def _joined(left: set[str] | None, right: set[str]) -> set[str] | None:
    if left is None:
        return None
    if len(left) * len(right) > MAX_STRINGS:
        return None
    return {a + b for a in left for b in right}


def _best(factors: list[set[str]]) -> set[str]:
    usable = [f for f in factors if f and all(f)]
    return max(usable, key=lambda f: (min(map(len, f)), -len(f))) if usable else set()
