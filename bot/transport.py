"""How outgoing mail leaves: SMTP (aiosmtplib), or a folder of .eml files (safe mode)."""

from __future__ import annotations

import contextlib
import re
import ssl
from pathlib import Path
from typing import AsyncIterator, Protocol

import aiosmtplib


class TemporaryFailure(Exception):
    """Worth retrying later: connection refused, timeout, 4xx."""


class ConnectionLost(TemporaryFailure):
    """The server is unreachable or went away: nothing more can be sent on this connection."""


class PermanentFailure(Exception):
    """Retrying will not help: 5xx for this message or recipient."""


class Channel(Protocol):
    async def send(self, envelope_from: str, recipients: list[str], raw: bytes) -> None: ...


class Transport(Protocol):
    def open(self) -> contextlib.AbstractAsyncContextManager[Channel]: ...


def tls_context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """Certificates are verified unless the operator explicitly turns it off."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SmtpTransport:
    def __init__(self, host: str, port: int, security: str, username: str | None = None,
                 password: str | None = None, timeout: float = 30, tls_verify: bool = True,
                 ca_file: Path | None = None) -> None:
        self._options = dict(hostname=host, port=port, username=username, password=password,
                             timeout=timeout, use_tls=security == "tls",
                             start_tls=security == "starttls")
        if security != "plain":
            self._options["tls_context"] = tls_context(tls_verify, ca_file)

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Channel]:
        client = aiosmtplib.SMTP(**self._options)
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as error:
            raise ConnectionLost(f"cannot connect to SMTP server: {error}") from error
        try:
            yield _SmtpChannel(client)
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()


class _SmtpChannel:
    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self._client = client

    async def send(self, envelope_from: str, recipients: list[str], raw: bytes) -> None:
        try:
            await self._client.sendmail(envelope_from, recipients, raw)
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refused.code for refused in error.recipients]
            raise _by_code(min(codes), f"recipients refused: {error.recipients}") from error
        except aiosmtplib.SMTPResponseException as error:
            raise _by_code(error.code, f"{error.code} {error.message}") from error
        except (aiosmtplib.SMTPException, OSError) as error:
            raise ConnectionLost(str(error) or type(error).__name__) from error


def _by_code(code: int, text: str) -> Exception:
    return PermanentFailure(text) if code >= 500 else TemporaryFailure(text)


class FolderTransport:
    """Writes each mail to a folder instead of sending it: for trials and the demo."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Channel]:
        self.folder.mkdir(parents=True, exist_ok=True)
        yield self

    async def send(self, envelope_from: str, recipients: list[str], raw: bytes) -> None:
        number = len(list(self.folder.glob("*.eml"))) + 1
        match = re.search(rb"^Message-ID:\s*<([^>]*)>", raw, re.MULTILINE | re.IGNORECASE)
        name = re.sub(r"[^A-Za-z0-9.@_-]", "_", match.group(1).decode("ascii", "replace")) if match else "mail"
        (self.folder / f"{number:04d}-{name}.eml").write_bytes(raw)
