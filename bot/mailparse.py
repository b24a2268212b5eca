"""Raw mail bytes -> ParsedMail: the pure parsing stage.

Everything downstream (threading, identification, entitlement, the no-loop rule) trusts
this module, and the mailbox will feed it whatever the Internet sends.  So it never raises
on a mail, however broken; it records what it had to repair in ``ParsedMail.defects``.
Only bytes that are not a mail at all (empty, no header block) raise ``UnparseableMail``.

Headers are read raw (8-bit bytes kept as surrogates) and decoded here with one rule:
declared charset, then UTF-8, then Windows-1252, then Latin-1, because mail lies about its
charset far more often than it is truly undecodable.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from collections.abc import Callable
from datetime import datetime, timezone
from email.message import Message
from email.parser import BytesParser
from email.policy import Compat32
from email.utils import collapse_rfc2231_value, getaddresses, parsedate_to_datetime
from html import unescape
from html.parser import HTMLParser

from bot.feedparse import BytesFeedParser

MAX_DEPTH = 20  # real clients nest 4-5 levels; more is hostile
MAX_LINE = 998  # RFC 5322 line limit, also our cap for one-line fields
MAX_BODY_CHARS = 2_000_000  # bounds the text and HTML work on absurd bodies
_FEED_CHUNK = 1 << 16
# What the stdlib email package raises from deep inside on garbage parameters and charsets
# (UnicodeError and binascii.Error are ValueErrors).
_STDLIB_ERRORS = (LookupError, ValueError, TypeError, IndexError)
_ALIASES = {"iso-8859-8-i": "iso-8859-8", "gb2312": "gb18030", "x-mac-roman": "mac-roman"}
_AUTO_PRECEDENCE = {"bulk", "junk", "list", "auto_reply"}
_SUPPRESS = {"all", "autoreply", "oof"}


class UnparseableMail(Exception):
    """Raised only when the bytes are not a mail at all (empty, no header block)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int  # decoded bytes


@dataclass(frozen=True)
class ParsedMail:
    message_id: str | None
    subject: str
    from_addr: str | None
    from_name: str
    reply_to: str | None
    to: tuple[str, ...]
    cc: tuple[str, ...]
    date: datetime | None
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str
    full_text: str
    attachments: tuple[Attachment, ...]
    auto: str | None
    defects: tuple[str, ...]
    authentication_results: tuple[str, ...] = ()  # raw values, topmost first (RFC 8601)


class _RawHeaders(Compat32):
    """compat32 parsing (never raises on access), but header values come back exactly
    as received so that all decoding happens here, once, with our fallback rule."""

    def header_fetch_parse(self, name, value):
        return value


_POLICY = _RawHeaders()


def parse(raw: bytes) -> ParsedMail:
    """Parse one mail.  Raises UnparseableMail only for input that is not a mail."""
    defects: list[str] = []
    msg = _message(raw if isinstance(raw, bytes) else bytes(raw), defects)
    parts = list(_walk(msg, defects))
    full_text, attachments = _body(parts, defects)
    from_pairs = _address_pairs(msg, "From", defects)
    from_name, from_addr = _sender(from_pairs, defects)
    _note_parser_defects(parts, defects)
    _note_duplicates(msg, defects)
    return ParsedMail(
        message_id=_message_id(msg.get("Message-ID")),
        subject=_one_line(_decode_header(msg.get("Subject") or "", "Subject", defects)),
        from_addr=from_addr,
        from_name=from_name,
        reply_to=next(iter(_addresses(msg, "Reply-To", defects)), None),
        to=_addresses(msg, "To", defects),
        cc=_addresses(msg, "Cc", defects),
        date=_date(msg.get("Date"), defects),
        in_reply_to=_message_id(msg.get("In-Reply-To")),
        references=message_ids(" ".join(msg.get_all("References", []))),
        text=_own_words(full_text),
        full_text=full_text,
        attachments=tuple(attachments),
        auto=_auto(msg, from_pairs),
        defects=tuple(dict.fromkeys(defects)),
        authentication_results=tuple(" ".join(str(v).split()) for v in msg.get_all("Authentication-Results", [])),
    )


def message_ids(value: str | None) -> tuple[str, ...]:
    """The <id> tokens of a header value, in order, without duplicates.  Whitespace is
    removed first: clients fold long ids, and folding whitespace is never part of an id."""
    if not value:
        return ()
    squeezed = "".join(_CONTROL_OR_SPACE.split(value))
    ids = (f"<{m}>" for m in _ID_IN_BRACKETS.findall(squeezed) if _valid_id(m))
    return tuple(dict.fromkeys(ids))


# --- the message tree -------------------------------------------------------------------


def _message(raw: bytes, defects: list[str]) -> Message:
    """Parse with the stdlib feed parser; fed in chunks, which keeps a huge mail to a
    few copies (parsebytes would build one big str and a UCS-4 StringIO of it)."""
    if not raw or raw.isspace():  # (no strip(): that would copy a huge mail)
        raise UnparseableMail("empty input")
    try:
        msg = _feed(raw)
    except RecursionError:  # the stdlib parser recurses once per nested multipart
        defects.append("MIME structure nested too deeply to parse; body kept as raw text")
        msg = BytesParser(policy=_POLICY).parsebytes(raw, headersonly=True)
    except _STDLIB_ERRORS as error:  # e.g. an undecodable RFC 2231 boundary parameter
        name = type(error).__name__
        defects.append(f"MIME structure unparseable ({name}); body kept as raw text")
        msg = BytesParser(policy=_POLICY).parsebytes(raw, headersonly=True)
    if not msg.keys():
        raise UnparseableMail("no header block")
    return msg


def _feed(raw: bytes) -> Message:
    parser = BytesFeedParser(policy=_POLICY)
    view = memoryview(raw)
    for start in range(0, len(raw), _FEED_CHUNK):
        parser.feed(bytes(view[start : start + _FEED_CHUNK]))
    return parser.close()


def _is_container(part: Message) -> bool:
    """A multipart whose boundary actually split it; one that did not (missing or wrong
    boundary) is treated as a leaf so that its text is not lost."""
    return part.get_content_maintype() == "multipart" and part.is_multipart()


def _walk(part: Message, defects: list[str], depth: int = 0):
    """Every part, depth first, stopping at MAX_DEPTH: hostile nesting must cost nothing."""
    yield part
    if not _is_container(part):
        return
    if depth >= MAX_DEPTH:
        defects.append(f"MIME nesting deeper than {MAX_DEPTH} levels; inner parts ignored")
        return
    for sub in part.get_payload():
        yield from _walk(sub, defects, depth + 1)


def _note_parser_defects(parts: list[Message], defects: list[str]) -> None:
    """The stdlib parser's own findings, in words (first line of the defect's docstring)."""
    for part in parts:
        for defect in getattr(part, "defects", ()):
            doc = (type(defect).__doc__ or type(defect).__name__).strip().splitlines()[0]
            defects.append(f"{doc} ({_content_type(part)} part)")


def _note_duplicates(msg: Message, defects: list[str]) -> None:
    """A second From or Subject is a spoofing signal; we use the first and say so."""
    for name in ("From", "Subject", "Date", "Message-ID", "In-Reply-To", "Reply-To"):
        if len(msg.get_all(name, [])) > 1:
            defects.append(f"duplicate {name} header; the first one is used")


# --- body and attachments ---------------------------------------------------------------


def _body(parts: list[Message], defects: list[str]) -> tuple[str, list[Attachment]]:
    """Plain text parts joined (Apple Mail splits text around inline images); HTML only
    when there is no usable plain text.  Everything that is not body is an attachment."""
    plain, html, attachments = [], [], []
    for part in parts:
        try:
            kind = _body_kind(part, defects)
            if kind == "text/plain":
                plain.append(_part_text(part, defects))
            elif kind == "text/html":
                html.append(_html_body(part, defects))
            elif not _is_container(part):
                attachments.append(_attachment(part, defects))
        except _STDLIB_ERRORS as error:
            _unreadable(part, error, defects)
    text = "\n".join(plain)
    if html and not text.strip():
        text = "\n".join(convert() for convert in html)
    return text, attachments


def _html_body(part: Message, defects: list[str]) -> Callable[[], str]:
    """The text of an HTML part, on demand: tidying, cleaning and converting it is wasted
    when a text/plain part is used. Decoding (and its defects) happens at once, in part
    order; so does everything else when the markup may make conversion fail ("<![" needs
    a "[", and no step before conversion adds one), so that its defect is in order too."""
    text, flowed = _decoded(part, defects)
    if "[" not in text:
        return lambda: _html_to_text(_clean_html(_normalised(text, flowed)), defects)
    html = _clean_html(_normalised(text, flowed))
    if _HTML_MAY_FAIL not in html:
        return lambda: _html_to_text(html, defects)
    converted = _html_to_text(html, defects)
    return lambda: converted


def _unreadable(part: Message, error: Exception, defects: list[str]) -> None:
    """The stdlib email package raises from deep inside on garbage parameters (RFC 2231
    charsets it cannot name...); such a part is skipped, and the rest of the mail kept."""
    name = type(error).__name__
    defects.append(f"{_content_type(part)} part unreadable ({name}); skipped")


def _body_kind(part: Message, defects: list[str]) -> str | None:
    """text/plain or text/html when the part is body text (inline, no file name)."""
    if _is_container(part) or part.get_content_disposition() == "attachment":
        return None
    ctype = "text/plain" if part.get_content_maintype() == "multipart" else part.get_content_type()
    if ctype in ("text/plain", "text/html") and not _filename(part, defects):
        return ctype
    return None


def _part_text(part: Message, defects: list[str]) -> str:
    """Decoded, newline-normalised, control-free text of one leaf part."""
    return _normalised(*_decoded(part, defects))


def _decoded(part: Message, defects: list[str]) -> tuple[str, bool | None]:
    """A leaf part's text as decoded, and how it flows (None: not format=flowed, else
    whether DelSp=yes). All that reads the part, and may fail or note a defect, is here."""
    where = f"{_content_type(part)} part"
    data = part.get_payload(decode=True) or b""
    text = _decode_bytes(data, part.get_content_charset(), where, defects)
    if len(text) > MAX_BODY_CHARS:
        defects.append(f"{where} longer than {MAX_BODY_CHARS} characters; truncated")
        text = text[:MAX_BODY_CHARS]
    flowed = _param(part, "delsp") == "yes" if _param(part, "format") == "flowed" else None
    return text, flowed


def _normalised(text: str, flowed: bool | None) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if flowed is not None:
        text = _unflow(text, delsp=flowed)
    text = _BODY_CONTROL.sub("", text)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def _param(part: Message, name: str) -> str:
    value = part.get_param(name)
    if isinstance(value, tuple):  # RFC 2231 form
        value = collapse_rfc2231_value(value)
    return str(value or "").strip().lower()


def _unflow(text: str, delsp: bool) -> str:
    """RFC 3676 format=flowed: a line ending in a space continues on the next line of the
    same quote depth; a leading space is stuffing.  Thunderbird and Apple Mail send this."""
    out: list[str] = []
    pieces: list[str] = []  # of the logical line being joined (a list: no quadratic +=)
    depth = 0
    for raw in text.split("\n"):
        level = len(raw) - len(raw.lstrip(">"))
        content = raw[level + 1 :] if raw[level : level + 1] == " " else raw[level:]
        if pieces and level != depth:  # a change of quote depth ends the paragraph
            out.append(_requote(depth, pieces))
            pieces = []
        depth = level
        soft = content.endswith(" ") and content != "-- "
        pieces.append(content[:-1] if soft and delsp else content)
        if not soft:
            out.append(_requote(depth, pieces))
            pieces = []
    if pieces:
        out.append(_requote(depth, pieces))
    return "\n".join(out)


def _requote(depth: int, pieces: list[str]) -> str:
    return (">" * depth + " " if depth else "") + "".join(pieces)


def _attachment(part: Message, defects: list[str]) -> Attachment:
    return Attachment(_filename(part, defects), _content_type(part), _size(part))


def _content_type(part: Message) -> str:
    """The stdlib's content type, unless raw 8-bit garbage makes it no type at all."""
    ctype = part.get_content_type()
    return ctype if _MIME_TYPE.fullmatch(ctype) else "application/octet-stream"


def _filename(part: Message, defects: list[str]) -> str | None:
    """Decoded file name (RFC 2231 or, as Outlook and Gmail send it, RFC 2047)."""
    try:
        name = part.get_filename()
    except _STDLIB_ERRORS:  # an RFC 2231 charset the stdlib cannot even name
        defects.append(f"undecodable file name in {_content_type(part)} part")
        return None
    if not name:
        return None
    return _one_line(_decode_header(name, "attachment file name", defects)) or None


def _size(part: Message) -> int:
    """Decoded size, content discarded at once.  Base64 goes straight through binascii,
    which costs one copy where get_payload(decode=True) costs three."""
    if part.is_multipart():  # message/rfc822 and friends: the enclosed message
        try:
            return sum(len(m.as_bytes()) for m in part.get_payload())
        except Exception:  # serialising an arbitrary hostile tree can fail in many ways
            return 0
    if str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
        try:
            return len(binascii.a2b_base64(_to_bytes(part.get_payload())))
        except ValueError:  # binascii.Error, or the stdlib choking on a garbage charset
            pass
    return len(part.get_payload(decode=True) or b"")


# --- HTML -------------------------------------------------------------------------------


class _HtmlText(HTMLParser):
    """HTML body -> text: block tags break lines, script/style vanish, and quoted regions
    (blockquote, Gmail's gmail_quote) come out as "> " lines, so that one quote stripper
    serves plain and HTML mail alike."""

    BREAKS = frozenset("br p div li tr h1 h2 h3 h4 h5 h6 blockquote table ul ol hr pre".split())
    HIDDEN = frozenset({"script", "style", "title"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.lines: list[tuple[int, str]] = []  # (quote depth, text)
        self.chunks: list[str] = []  # of the current line
        self.depth = self.quoting = self.hidden = 0
        self.opened: list[bool] = []  # open div/blockquote elements: is each a quote?

    def handle_starttag(self, tag, attrs):
        self.hidden += tag in self.HIDDEN
        if tag in ("div", "blockquote"):
            quote = tag == "blockquote" or "gmail_quote" in (dict(attrs).get("class") or "")
            self.opened.append(quote)
            self.quoting += quote
        if tag in self.BREAKS:
            self.end_line(force=tag == "br")

    def handle_endtag(self, tag):
        if tag in self.HIDDEN and self.hidden:
            self.hidden -= 1
        if tag in ("div", "blockquote") and self.opened:
            self.quoting -= self.opened.pop()
        if tag in self.BREAKS:
            self.end_line(force=False)

    def handle_data(self, data):
        if not self.hidden:
            self.chunks.append(_HTML_SPACE.sub(" ", data))
            self.depth = max(self.depth, self.quoting)

    def end_line(self, force: bool) -> None:
        """End the current line; an empty one only for <br> (or an &nbsp; paragraph)."""
        line = "".join(self.chunks)
        if force or line.strip(" "):
            depth = min(self.depth, MAX_DEPTH)  # hostile nesting must not cost "> " * 100000
            self.lines.append((depth, " ".join(line.split())))
        self.chunks, self.depth = [], self.quoting

    def text(self) -> str:
        self.end_line(force=False)
        lines = ((">" * d + " " if d else "") + t for d, t in self.lines)
        return _BLANK_RUNS.sub("\n\n", "\n".join(line.rstrip() for line in lines)).strip("\n")


def _clean_html(html: str) -> str:
    """A linear clean-up that removes the inputs on which html.parser is quadratic in
    CPython 3.11 (unclosed comments, '<' that never closes a tag)."""
    return _LONE_LT.sub("&lt;", _strip_comments(html))


def _html_to_text(html: str, defects: list[str]) -> str:
    """html.parser on cleaned-up markup (_clean_html)."""
    converter = _HtmlText()
    try:
        converter.feed(html)
        converter.close()
        return converter.text()
    except Exception:  # html.parser still has assertion paths on hostile markup
        defects.append("HTML body could not be parsed; tags stripped")
        return _one_line_breaks(unescape(_ANY_TAG.sub(" ", html)))


def _strip_comments(html: str) -> str:
    """Drop <!-- ... --> (an unclosed one runs to the end, as in browsers), in linear time."""
    out, pos = [], 0
    while (start := html.find("<!--", pos)) >= 0:
        out.append(html[pos:start])
        end = html.find("-->", start + 4)
        pos = len(html) if end < 0 else end + 3
    out.append(html[pos:])
    return "".join(out)


def _one_line_breaks(text: str) -> str:
    return "\n".join(" ".join(line.split()) for line in text.splitlines()).strip()


# --- what the sender wrote --------------------------------------------------------------


def _own_words(body: str) -> str:
    """The sender's new words: stop at a signature, mobile sign-off or forwarded-original
    block; drop ">" lines and the attribution line that introduces them.  An attribution
    not followed by ">" lines introduces an unquoted original, so it also stops."""
    lines, kept, i = body.split("\n"), [], 0
    while i < len(lines):
        if lines[i].startswith(">"):  # quoted: dropped, and never a cut marker
            i += 1
        elif _plain(lines, i):  # most lines: one regex and no function calls further down
            kept.append(lines[i])
            i += 1
        elif _is_cut(lines, i):
            break
        elif n := _attribution(lines, i):
            if not _quoted_after(lines, i + n):
                break
            i += n
        else:
            kept.append(lines[i])
            i += 1
    return _tidy(kept)


def _plain(lines: list[str], i: int) -> bool:
    """Neither a cut nor an attribution, by necessary conditions: every cut line starts with
    one of _CUT_START's words or marks, and an attribution ends (on this or the next line)
    with a colon."""
    line = lines[i]
    if _CUT_START.match(line) or line.rstrip().endswith(":"):
        return False
    return i + 1 == len(lines) or not lines[i + 1].rstrip().endswith(":")


def _is_cut(lines: list[str], i: int) -> bool:
    """A line where the sender's words end: signature separator, sign-off, an "Original
    Message" rule, or the first line of an Outlook From/Sent/Subject header block."""
    line = lines[i].strip()
    if lines[i].rstrip() == "--" or _CUT_LINE.fullmatch(line):  # "--" only unindented
        return True
    if not _HDR_FROM.match(line):
        return False
    following = [x.strip() for x in lines[i + 1 : i + 6]]
    return any(map(_HDR_SENT.match, following)) and any(map(_HDR_SUBJECT.match, following))


def _attribution(lines: list[str], i: int) -> int:
    """1 or 2 if lines[i] starts an "On ... wrote:" / "Le ... a écrit :" line (clients
    wrap it), else 0.  A digit is required: real attributions carry a date.

    This runs for every body line, so the cheap necessary condition comes first: the
    pattern ends with ":", hence so must the last of the joined lines."""
    for n in (1, 2):
        if i + n <= len(lines) and lines[i + n - 1].rstrip().endswith(":"):
            joined = " ".join(x.strip() for x in lines[i : i + n])
            dated = len(joined) < 400 and any(c.isdigit() for c in joined)
            if dated and _ATTRIBUTION.fullmatch(joined):
                return n
    return 0


def _quoted_after(lines: list[str], j: int) -> bool:
    """Is the next non-blank line (if any) quoted?"""
    while j < len(lines) and not lines[j].strip():
        j += 1
    return j == len(lines) or lines[j].startswith(">")


def _tidy(lines: list[str]) -> str:
    """Trailing whitespace, runs of blank lines and trailing separators (Outlook's row of
    underscores above its header block) removed."""
    while lines and (not lines[-1].strip() or _SEPARATOR.fullmatch(lines[-1].strip())):
        lines.pop()
    text = "\n".join(line.rstrip() for line in lines)
    return _BLANK_RUNS.sub("\n\n", text).strip("\n")


# --- headers ----------------------------------------------------------------------------


def _decode_header(value: str, where: str, defects: list[str]) -> str:
    """RFC 2047 that never raises.  Adjacent encoded words in one charset are joined as
    bytes before decoding (Outlook splits multi-byte characters across words); blanks
    between two good encoded words are dropped; a broken word is kept literally."""
    pieces, buf, charset, pos, prev_ok = [], bytearray(), None, 0, False
    for m in _ENCODED_WORD.finditer(value):
        gap, word_cs = value[pos : m.start()], m.group(1).split("*")[0].lower()
        data = _word_bytes(m.group(2), m.group(3))
        if buf and (gap.strip() or data is None or word_cs != charset):
            pieces.append(_decode_bytes(bytes(buf), charset, f"{where} header", defects))
            buf = bytearray()
        if gap.strip() or not (prev_ok and data is not None):
            pieces.append(_raw_text(gap, where, defects))
        if data is None:
            defects.append(f"broken encoded word in {where} header")
            pieces.append(_raw_text(m.group(0), where, defects))
        else:
            buf += data
            charset = word_cs
        pos, prev_ok = m.end(), data is not None
    if buf:
        pieces.append(_decode_bytes(bytes(buf), charset, f"{where} header", defects))
    pieces.append(_raw_text(value[pos:], where, defects))
    return "".join(pieces)


def _word_bytes(encoding: str, payload: str) -> bytes | None:
    data = _to_bytes(payload)
    if encoding in "qQ":
        return binascii.a2b_qp(data, header=True)
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None


def _raw_text(value: str, where: str, defects: list[str]) -> str:
    """Header text as received: raw 8-bit bytes (kept as surrogates) are decoded."""
    if not _SURROGATE.search(value):
        return value
    defects.append(f"raw 8-bit bytes in {where} header")
    return _decode_bytes(_to_bytes(value), None, f"{where} header", defects)


def _decode_bytes(data: bytes, charset: str | None, where: str, defects: list[str]) -> str:
    """Declared charset, then UTF-8, then Windows-1252, then Latin-1 (which cannot fail)."""
    if charset:
        try:
            return _no_surrogates(data.decode(_ALIASES.get(charset.lower(), charset)))
        except LookupError:
            defects.append(f"unknown charset {charset!r} in {where}")
        except ValueError:  # UnicodeDecodeError, or a charset name with a NUL in it
            defects.append(f"bytes not valid in declared charset {charset!r} in {where}")
    for fallback in ("utf-8", "cp1252"):
        try:
            return data.decode(fallback)
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


def _no_surrogates(text: str) -> str:
    """Some codecs (unicode_escape, utf-7...) can yield lone surrogates, which no
    database or encoder downstream accepts."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _to_bytes(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _one_line(text: str, limit: int | None = MAX_LINE) -> str:
    """One safe line: CR, LF, tabs and other line-ish controls become spaces, the rest of
    the control characters (NUL...) vanish, whitespace collapses.  Kills header injection."""
    text = _LINE_CONTROL.sub("", _SPACE_CONTROL.sub(" ", text))
    return " ".join(text.split())[:limit]


def _address_pairs(msg: Message, name: str, defects: list[str]) -> list[tuple[str, str]]:
    """(name, address) pairs.  Encoded words are decoded into quoted strings first, so
    that an "@", "," or "<" hidden in one cannot change where the address is."""

    def quoted(m: re.Match) -> str:
        text = _one_line(_decode_header(m.group(0), name, defects))
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    values = (_ENCODED_RUN.sub(quoted, _one_line(str(v), None)) for v in msg.get_all(name, []))
    return getaddresses(list(values))


def _clean_address(addr: str, where: str, defects: list[str]) -> str | None:
    addr = "".join(_CONTROL_OR_SPACE.split(_raw_text(addr, where, defects))).lower()
    return addr if _ADDRESS.fullmatch(addr) else None


def _addresses(msg: Message, name: str, defects: list[str]) -> tuple[str, ...]:
    pairs = _address_pairs(msg, name, defects)
    found = (_clean_address(addr, name, defects) for _, addr in pairs)
    return tuple(dict.fromkeys(a for a in found if a))


def _sender(pairs: list[tuple[str, str]], defects: list[str]) -> tuple[str, str | None]:
    """(display name, address) of the first usable From mailbox (pairs: _address_pairs)."""
    for name, addr in pairs:
        clean = _clean_address(addr, "From", defects)
        if clean:
            return _one_line(_decode_header(name, "From", defects)), clean
    name = pairs[0][0] if pairs else ""
    return _one_line(_decode_header(name, "From", defects)), None


def _message_id(value: str | None) -> str | None:
    """First <id> of the header; a bare "local@domain" gets its brackets back."""
    ids = message_ids(value)
    if ids or not value:
        return ids[0] if ids else None
    bare = "".join(_CONTROL_OR_SPACE.split(value)).strip("<>")
    return f"<{bare}>" if _valid_id(bare) else None


def _valid_id(value: str) -> bool:
    return len(value) <= MAX_LINE and bool(_ID.fullmatch(value))


def _date(value: str | None, defects: list[str]) -> datetime | None:
    """Sender's Date as aware UTC; "-0000" (unknown zone) is read as UTC."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(_one_line(value))
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except (TypeError, ValueError, OverflowError, IndexError):
        defects.append("unparseable Date header")
        return None


# --- automatic mail ---------------------------------------------------------------------


def _auto(msg: Message, from_pairs: list[tuple[str, str]]) -> str | None:
    """Why this mail must never be auto-answered (RFC 3834 and de-facto headers), else
    None.  Bounces first (the most specific: they also carry Auto-Submitted), then explicit
    auto-reply markers, then bulk and list traffic.  `from_pairs`: _address_pairs of From."""
    if msg.get_content_type() == "multipart/report":
        return "bounce: multipart/report"
    if "".join(str(msg.get("Return-Path", "x")).split()) == "<>":
        return "bounce: empty return-path"
    if _local_part(from_pairs) in ("mailer-daemon", "postmaster"):
        return "bounce: mailer-daemon"
    return _auto_header(msg)


def _local_part(pairs: list[tuple[str, str]]) -> str:
    """Local part of the first address as written, even without a domain."""
    return pairs[0][1].split("@")[0].strip().lower() if pairs else ""


def _auto_header(msg: Message) -> str | None:
    submitted = _token(msg, "Auto-Submitted")
    if submitted is not None and submitted != "no":
        return f"auto-submitted: {submitted or 'unknown'}"
    for name in ("X-Autoreply", "X-Autorespond"):
        if msg.get(name) is not None:
            return name.lower()
    suppress = set(_TOKEN.findall(str(msg.get("X-Auto-Response-Suppress", "")).lower()))
    if suppress & _SUPPRESS:
        return "auto-response-suppress: " + ",".join(sorted(suppress & _SUPPRESS))
    if (precedence := _token(msg, "Precedence")) in _AUTO_PRECEDENCE:
        return f"precedence: {precedence}"
    listed = (name for name in ("List-Id", "List-Unsubscribe") if msg.get(name) is not None)
    return next((f"list: {name}" for name in listed), None)


def _token(msg: Message, name: str) -> str | None:
    """First word of a header, lower case ("" if it has none), None if absent."""
    value = msg.get(name)
    if value is None:
        return None
    found = _TOKEN.search(str(value).lower())
    return found.group(0) if found else ""


# --- patterns ---------------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_ENCODED_RUN = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=(?:\s+=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)*")
_SURROGATE = re.compile("[\udc80-\udcff]")  # raw 8-bit bytes, as surrogateescape keeps them
_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_SPACE_CONTROL = re.compile("[\t\n\v\f\r\x85\u2028\u2029]")
_LINE_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ufeff]")  # BOM: iOS puts one in quotes
_BODY_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")
_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")
_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+")
_ID = re.compile(r"[!-;=?-~]+@[!-;=?-~]+")  # printable ASCII without < > and spaces
_ID_IN_BRACKETS = re.compile(r"<([^<>]*)>")
_TOKEN = re.compile(r"[a-z0-9_.-]+")
_HTML_SPACE = re.compile(r"[ \t\r\n\f]+")  # HTML's whitespace: not &nbsp;
_LONE_LT = re.compile(r"<(?![^<>]*>)")
_ANY_TAG = re.compile(r"<[^<>]*>")
# html.parser (3.11) raises only from marked sections ("<![...["): see _html_body
_HTML_MAY_FAIL = "<!["
_BLANK_RUNS = re.compile(r"\n\n\n+")  # not \n{3,}: a literal start is searched 20 times faster
_SEPARATOR = re.compile(r"[_\-=*]{3,}")
_ATTRIBUTION = re.compile(r"(On\s.*\swrote|Le\s.*\sa\s+écrit)\s*:", re.I)
_HDR_FROM = re.compile(r"\*?(from|de)\s*:\*?\s*\S", re.I)
_HDR_SENT = re.compile(r"\*?(sent|date|envoyé)\s*:", re.I)
_HDR_SUBJECT = re.compile(r"\*?(subject|objet)\s*:", re.I)
_DEVICE = r"(iphone|ipad|android|mobile|smartphone|samsung.*|galaxy.*|blackberry.*)"
_CUTS = (
    r"-{2,}\s*(original message|message original|message d.origine)\s*-{2,}",
    rf"((sent from my|envoyé de mon|envoyé depuis mon)\s{_DEVICE}"
    r"|(get|sent from) outlook for (ios|android)"
    r"|(obtenir|envoyé à partir de) outlook pour (ios|android)"
    r"|(sent from|envoyé à partir de) (mail|courrier) (for|pour) windows( \d+)?"
    r")(\s*<[^<>]*>)?",  # Outlook mobile appends its link: "Get Outlook for iOS<https://...>"
)
_CUT_LINE = re.compile("|".join(_CUTS), re.I)
# What every line that _is_cut accepts begins with, after blanks: "--" and rules, a "*"
# (bold Outlook headers), the sign-off words of _CUTS, "From"/"De" of a header block.
_CUT_START = re.compile(r"\s*(-|\*|sent|envoy|get|obtenir|from|de)", re.I)
