"""The standard library's email feed parser, less its costliest step.

For every multipart it parses, the stdlib's feed parser compiles a regular expression
that matches that part's boundary line (about 0.2 ms, a tenth of the time a typical mail
takes to read). Real boundaries are unique per mail, so the `re` cache never helps.

This module runs the stdlib's own feedparser.py as a private copy whose `re` is
`_BoundaryRe`: it answers that one pattern with an equivalent matcher (the boundary
literal by `str.startswith`, then one shared compiled pattern for what may follow it)
and hands every other call to `re`. The stdlib module itself is left untouched. Should a
future Python build that pattern differently, it is compiled by `re` as before.
"""

from __future__ import annotations

import email.feedparser as _stdlib
import importlib.util
import re

_HEAD = "(?P<sep>"
_TAIL = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_AFTER_BOUNDARY = re.compile(_TAIL[1:])
_ESCAPED = re.compile(r"\\(.)", re.S)


class _BoundaryMatcher:
    """re.compile(_HEAD + re.escape(separator) + _TAIL), for the feed parser's use of it:
    .match(line) gives None or a match whose groups "end", "ws" and "linesep" are the same
    (the "sep" group, which the parser never reads, is empty)."""

    __slots__ = ("match",)

    def __init__(self, separator: str) -> None:
        after, start = _AFTER_BOUNDARY.match, len(separator)

        def match(line: str):
            return after(line, start) if line.startswith(separator) else None

        self.match = match


class _BoundaryRe:
    """The `re` module as the private feed parser sees it."""

    def __getattr__(self, name: str):
        return getattr(re, name)

    @staticmethod
    def compile(pattern, flags=0):
        if not flags and isinstance(pattern, str) and pattern.startswith(_HEAD) and pattern.endswith(_TAIL):
            escaped = pattern[len(_HEAD):-len(_TAIL)]
            separator = _ESCAPED.sub(r"\1", escaped)
            if re.escape(separator) == escaped:  # a literal, exactly as the parser escaped it
                return _BoundaryMatcher(separator)
        return re.compile(pattern, flags)


def _private_copy():
    source = getattr(_stdlib, "__file__", None)
    spec = source and importlib.util.spec_from_file_location(f"{__name__}._stdlib", source)
    if spec is None or spec.loader is None:  # no source file (a frozen build): as it is
        return _stdlib
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.re = _BoundaryRe()
    return module


BytesFeedParser = _private_copy().BytesFeedParser
