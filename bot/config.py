"""Load and validate the deployment file (supportbot.toml); secrets come from the environment.

Every problem is reported as a `ConfigError` naming the file, the key and the line, e.g.
``supportbot.toml:12: [imap] port: must be an integer between 1 and 65535``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator
from pydantic.functional_validators import PlainValidator
from pydantic_core import PydanticCustomError

from bot.resources import shipped_dir

ENV_IMAP_PASSWORD = "SUPPORTBOT_IMAP_PASSWORD"
ENV_SMTP_PASSWORD = "SUPPORTBOT_SMTP_PASSWORD"
_PASSWORD_ENV = {"imap": ENV_IMAP_PASSWORD, "smtp": ENV_SMTP_PASSWORD}
_OPTIONAL_SECTIONS = ("outbox", "database")


def example_path() -> Path:
    """The commented example written by `supportbot init`."""
    return Path(__file__).resolve().parent / "example.toml"


class LocatedError(Exception):
    """A problem in an operator's file: which file, line and key, and what is wrong."""

    def __init__(self, file: str, line: int | None, key: str, message: str) -> None:
        self.file, self.line, self.key, self.message = file, line, key, message
        super().__init__(str(self))

    def _where(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"

    def __str__(self) -> str:
        return f"{self._where()}: {self.key + ': ' if self.key else ''}{self.message}"


class ConfigError(LocatedError):
    """A problem in the deployment file; keys read as TOML tables: `[imap] port`."""

    def __str__(self) -> str:
        where = self._where()
        if not self.key:
            return f"{where}: {self.message}"
        section, _, key = self.key.partition(".")
        return f"{where}: [{section}]{' ' + key if key else ''}: {self.message}"


# --- pydantic errors in plain words (also used by bot.rules) ------------------------------

def fail(message: str, at: tuple = ()) -> PydanticCustomError:
    """An error to raise from a validator; `at` extends the error's location (for checks
    that involve several keys, so that the operator is pointed at the right one)."""
    return PydanticCustomError("supportbot", "{message}", {"message": message, "at": at})


def plain_errors(exc: ValidationError, container: str = "table") -> list[tuple[tuple, str]]:
    """(location, message) for each error, worded for the people who edit the files."""
    out = []
    for err in exc.errors():
        ctx = err.get("ctx") or {}
        loc = tuple(p for p in err["loc"] if p != "[key]") + tuple(ctx.get("at", ()))
        out.append((loc, _message(err, ctx, container)))
    return out


def _message(err: dict, ctx: dict, container: str) -> str:
    kind = err["type"]
    if kind == "supportbot":
        return ctx["message"]
    words = {
        "missing": "required key is missing",
        "extra_forbidden": "unknown key",
        "bool_type": "must be true or false", "bool_parsing": "must be true or false",
        "string_type": "must be a string",
        "int_type": "must be an integer", "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "float_type": "must be a number", "float_parsing": "must be a number",
        "list_type": "must be a list", "tuple_type": "must be a list",
        "dict_type": f"must be a {container}", "model_type": f"must be a {container}",
        "model_attributes_type": f"must be a {container}",
        "date_type": "must be a date (YYYY-MM-DD)", "date_from_datetime_parsing":
        "must be a date (YYYY-MM-DD)", "date_parsing": "must be a date (YYYY-MM-DD)",
        "too_short": "must not be empty", "string_too_short": "must not be empty",
    }
    if kind in words:
        return words[kind]
    if kind == "literal_error":
        return f"must be {ctx['expected']}"
    for bound, text in (("ge", "at least"), ("gt", "greater than"), ("le", "at most"),
                        ("lt", "less than")):
        if bound in ctx:
            return f"must be {text} {ctx[bound]}"
    return err["msg"].removeprefix("Value error, ")


# --- value types --------------------------------------------------------------------------

_ADDRESS = re.compile(r"^[^@\s<>\"(),;:]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def _address(value: Any) -> str:
    if not isinstance(value, str) or not _ADDRESS.match(value.strip()):
        raise fail("must be a bare e-mail address such as support@example.com")
    return value.strip()


Address = Annotated[str, PlainValidator(_address)]


def _prefix(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Z]{1,10}", value):
        raise fail("must be 1 to 10 capital letters A-Z, such as SUP")
    return value


def _int(low: int, high: int | None = None) -> Any:
    text = f"between {low} and {high}" if high is not None else f"of at least {low}"

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not (
                low <= value and (high is None or value <= high)):
            raise fail(f"must be an integer {text}")
        return value
    return Annotated[int, PlainValidator(check)]


def _positive(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise fail("must be a number greater than 0")
    return float(value)


Seconds = Annotated[float, PlainValidator(_positive)]


def _path(kind: str) -> Any:
    """A path; relative paths resolve against the config file's folder (context base_dir)."""

    def check(value: Any, info: ValidationInfo) -> Path:
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise fail("must be a path (a non-empty string)")
        path = Path(value).expanduser()
        base = (info.context or {}).get("base_dir")
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        if kind == "file" and not path.is_file():
            raise fail(f"file not found: {path}")
        if kind == "dir" and not path.is_dir():
            raise fail(f"folder not found: {path}")
        return path
    return Annotated[Path, PlainValidator(check)]


def _db_url(value: Any, info: ValidationInfo) -> str:
    if not isinstance(value, str) or not re.match(r"^(sqlite|postgresql)[+\w]*://", value):
        raise fail("must be a database URL such as sqlite:///supportbot.db "
                   "or postgresql://user@host/dbname")
    m = re.match(r"^(sqlite[+\w]*):///([^?]*)(.*)$", value)
    base = (info.context or {}).get("base_dir")
    if m and base is not None and m[2] and not m[2].startswith(("/", ":memory:", "file:")):
        return f"{m[1]}:///{Path(base) / m[2]}{m[3]}"
    return value


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- sections -----------------------------------------------------------------------------

class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class BotSettings(_Section):
    support_address: Address
    from_name: str = "Support"
    message_id_domain: str
    reference_prefix: Annotated[str, PlainValidator(_prefix)] = "SUP"
    rules_dir: _path("dir") | None = None
    templates_dir: _path("dir") | None = None
    default_language: Literal["en", "fr"] = "en"
    triage_address: Address | None = None
    # Trust the From address only with a DMARC or aligned DKIM pass reported by our own
    # receiving server, named by its authserv-id (the first word of its Authentication-Results).
    require_authenticated_sender: bool = False
    authserv_id: str | None = None
    ack_rate_limit_per_hour: _int(1) = 5
    triage_notices_per_hour: _int(1) = 20
    instance_name: str = Field(default_factory=socket.gethostname, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _domain_from_address(cls, data: Any) -> Any:
        if isinstance(data, dict) and "message_id_domain" not in data:
            address = data.get("support_address")
            if isinstance(address, str) and "@" in address:
                data = {**data, "message_id_domain": address.strip().rpartition("@")[2]}
        return data

    @model_validator(mode="after")
    def _check(self) -> BotSettings:
        if not _DOMAIN.match(self.message_id_domain):
            raise fail("must be a domain name such as example.com", at=("message_id_domain",))
        if self.require_authenticated_sender and not self.authserv_id:
            raise fail("require_authenticated_sender needs the authserv_id of your receiving "
                       "server (the first word of the Authentication-Results it adds)", at=("authserv_id",))
        return self

    @property
    def rules_path(self) -> Path:
        """rules_dir, or the rules shipped with supportbot."""
        return self.rules_dir or shipped_dir("rules")

    @property
    def templates_path(self) -> Path:
        """templates_dir, or the templates shipped with supportbot."""
        return self.templates_dir or shipped_dir("templates")


class _Server(_Section):
    host: str = Field(min_length=1)
    security: Literal["tls", "starttls", "plain"]
    tls_verify: bool = True
    ca_file: _path("file") | None = None
    timeout: Seconds = 30.0

    @model_validator(mode="after")
    def _plain_only_on_loopback(self) -> _Server:
        if self.security == "plain" and not _is_loopback(self.host):
            raise fail(f'"plain" sends the password unencrypted, so it is only allowed when '
                       f'host is this machine (localhost, 127.0.0.1, ::1), not {self.host!r}; '
                       f'use "tls" or "starttls"', at=("security",))
        return self


class ImapSettings(_Server):
    port: _int(1, 65535) = 993
    security: Literal["tls", "starttls", "plain"] = "tls"
    username: str = Field(min_length=1)
    password: str = Field(repr=False)
    inbox: str = "INBOX"
    mark: Literal["flag", "move"] = "flag"
    processed_keyword: str = "$SupportbotProcessed"
    processed_folder: str = "Supportbot/Processed"
    batch_size: _int(1) = 50
    idle: bool = True
    poll_seconds: Seconds = 60.0


class SmtpSettings(_Server):
    port: _int(1, 65535) = 587
    security: Literal["tls", "starttls", "plain"] = "starttls"
    username: str | None = None
    password: str | None = Field(None, repr=False)

    @model_validator(mode="after")
    def _password_with_username(self) -> SmtpSettings:
        if self.username is not None and self.password is None:
            raise fail(f"username is set, so the environment variable {ENV_SMTP_PASSWORD} "
                       f"must hold the SMTP password", at=("password",))
        return self


class OutboxSettings(_Section):
    transport: Literal["smtp", "folder"] = "smtp"
    capture_dir: _path("any") | None = None
    redirect_all_to: Address | None = None
    max_attempts: _int(1) = 12
    retry_base_seconds: Seconds = 30.0
    retry_max_seconds: Seconds = 3600.0
    batch_size: _int(1) = 50
    connections: _int(1, 20) = 3
    poll_seconds: Seconds = 10.0

    @model_validator(mode="after")
    def _check(self) -> OutboxSettings:
        if self.transport == "folder" and self.capture_dir is None:
            raise fail('transport = "folder" needs capture_dir, the folder the .eml files '
                       'are written to', at=("capture_dir",))
        if self.retry_max_seconds < self.retry_base_seconds:
            raise fail("must not be less than retry_base_seconds", at=("retry_max_seconds",))
        return self


class DatabaseSettings(_Section):
    url: Annotated[str, PlainValidator(_db_url)] = Field("sqlite:///supportbot.db",
                                                         validate_default=True)


class Settings(_Section):
    path: Path | None = None
    bot: BotSettings
    imap: ImapSettings
    smtp: SmtpSettings | None = None
    outbox: OutboxSettings
    database: DatabaseSettings

    @model_validator(mode="after")
    def _smtp_when_sending(self) -> Settings:
        if self.outbox.transport == "smtp" and self.smtp is None:
            raise fail('missing section: [outbox] transport is "smtp", so the SMTP server '
                       'must be described (or set transport = "folder" to write .eml files '
                       'instead of sending)', at=("smtp",))
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], env: Mapping[str, str] = os.environ,
                  base_dir: Path | None = None, *, require_secrets: bool = True) -> Settings:
        """Settings from already-parsed data (tests, the demo); errors are ConfigErrors."""
        return _build(data, env, base_dir or Path.cwd(), "<settings>", {}, require_secrets)


# --- loading ------------------------------------------------------------------------------

def load_settings(path: Path, env: Mapping[str, str] = os.environ, *,
                  require_secrets: bool = True) -> Settings:
    """Load supportbot.toml. With require_secrets=False (commands that connect to no mail
    server), missing password variables are allowed and the passwords are left empty."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, None, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, None, "", f"cannot read the file: {exc}") from None
    lines, duplicate = _key_lines(text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\s*\(at line (\d+), column \d+\)$", str(exc))
        message = str(exc)[: m.start()] if m else str(exc).removesuffix(" (at end of document)")
        line = int(m[1]) if m else duplicate
        raise ConfigError(file, line, "", f"TOML syntax error: {message}") from None
    settings = _build(data, env, path.absolute().parent, file, lines, require_secrets)
    return settings.model_copy(update={"path": path.absolute()})


def _build(data: Mapping[str, Any], env: Mapping[str, str], base_dir: Path, file: str,
           lines: dict[tuple, int], require_secrets: bool) -> Settings:
    def error(loc: tuple, message: str) -> ConfigError:
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        return ConfigError(file, line, ".".join(str(p) for p in loc), message)

    def rank(problem: ConfigError) -> tuple:
        # Exactly located problems first (a missing key can only be pointed at through its
        # table), then in file order.
        exact = tuple(problem.key.split(".")) in lines
        return (not exact, problem.line is None, problem.line or 0)

    data = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    if "path" in data:
        raise error(("path",), "unknown section")
    for section, variable in _PASSWORD_ENV.items():
        table = data.get(section)
        if isinstance(table, dict):
            if "password" in table:
                raise error((section, "password"), f"passwords are never read from this file: "
                            f"remove this key and set the environment variable {variable}")
            if env.get(variable) or not require_secrets:
                table["password"] = env.get(variable, "")
    for section in _OPTIONAL_SECTIONS:
        data.setdefault(section, {})
    try:
        return Settings.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = [error(loc, _config_message(loc, message))
                    for loc, message in plain_errors(exc)]
        raise min(problems, key=rank) from None


def _config_message(loc: tuple, message: str) -> str:
    if len(loc) == 1 and message == "required key is missing":
        return "missing section"
    if len(loc) == 1 and message == "unknown key":
        return f"unknown section (expected {', '.join(f'[{s}]' for s in _SECTIONS)})"
    if len(loc) == 2 and loc[1] == "password" and message == "required key is missing":
        return (f"the environment variable {_PASSWORD_ENV[loc[0]]} is not set (the "
                f"password is never read from this file)")
    if message == "unknown key" and len(loc) == 2 and loc[0] in _SECTIONS:
        known = [k for k in _SECTIONS[loc[0]].model_fields if k != "password"]
        return f"unknown key (expected one of: {', '.join(known)})"
    return message


_SECTIONS = {"bot": BotSettings, "imap": ImapSettings, "smtp": SmtpSettings,
             "outbox": OutboxSettings, "database": DatabaseSettings}

_HEADER = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_PART = r"""(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)"""
_KEY = re.compile(rf"^({_PART}(?:\s*\.\s*{_PART})*)\s*=")
_KEY_PART = re.compile(r""""([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+)""")


def _key_lines(text: str) -> tuple[dict[tuple, int], int | None]:
    """Line of each table and key (first occurrence), and of the first duplicated key.

    A small scan, not a parser: enough to point the operator at the right line.
    """
    lines: dict[tuple, int] = {}
    duplicate = None
    table: tuple = ()
    closing = None  # the delimiter that ends a multi-line string we are inside
    for number, raw in enumerate(text.splitlines(), 1):
        if closing:
            if closing in raw:
                closing = None
            continue
        stripped = raw.strip()
        header = _HEADER.match(stripped)
        key = None if header else _KEY.match(stripped)
        if header:
            table = tuple(a or b or c for a, b, c in _KEY_PART.findall(header[1]))
            path = table
        elif key:
            path = table + tuple(a or b or c for a, b, c in _KEY_PART.findall(key[1]))
            rest = stripped[key.end():]
            closing = next((q for q in ('"""', "'''") if rest.count(q) == 1), None)
        else:
            continue
        if path in lines and duplicate is None and not stripped.startswith("[["):
            duplicate = number
        for n in range(1, len(path) + 1):
            lines.setdefault(path[:n], number)
    return lines, duplicate
