"""Load and validate rules/*.yaml into typed calendars, policies and severity evidence.

    rules/calendars/<name>.yaml   time zone, weekly hours, holidays
    rules/policies/<name>.yaml    one per contract type (severities, targets, entitlement...)
    rules/severity.yaml           bilingual evidence that maps a request to a severity level

Every problem is a `RulesError` naming the file, the key and the line, e.g.
``rules/policies/kestra-enterprise.yaml:14: severities[0].response: expected ...``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta, timezone, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import holidays as holidays_lib
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.functional_validators import PlainValidator

from bot.config import LocatedError, fail, plain_errors
from bot.resources import shipped_dir

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()


class RulesError(LocatedError):
    """A problem in a rules file: where it is and what is wrong."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _matching(pattern: str, what: str) -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            raise fail(f"must be {what}, got {value!r}")
        return value
    return Annotated[str, PlainValidator(check)]


Lang = _matching(r"[a-z]{2,3}", "a language code such as en or fr")
Key = _matching(r"[a-z][a-z0-9_-]*", "an identifier in lower case, such as high or on_site")


# --- calendars ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TimeRange:
    """Opening hours within one day, as offsets from local midnight (end may be 24:00)."""

    start: timedelta
    end: timedelta

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def __str__(self) -> str:
        def hhmm(t: timedelta) -> str:
            minutes = int(t.total_seconds()) // 60
            return f"{minutes // 60:02d}:{minutes % 60:02d}"
        return f"{hhmm(self.start)}-{hhmm(self.end)}"


def _time_range(value: Any) -> TimeRange:
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", str(value))
    if not isinstance(value, str) or not m:
        raise fail(f"expected a range like \"09:00-18:00\", got {value!r}")
    h1, m1, h2, m2 = map(int, m.groups())
    start, end = timedelta(hours=h1, minutes=m1), timedelta(hours=h2, minutes=m2)
    if m1 > 59 or m2 > 59 or h1 > 23 or end > timedelta(hours=24) or start >= end:
        raise fail(f"{value!r} is not a range of times within one day (00:00-24:00), "
                   f"start before end")
    return TimeRange(start, end)


DayHours = tuple[Annotated[TimeRange, PlainValidator(_time_range)], ...]


class WeeklyHours(_Model):
    """Opening ranges per weekday; a day that is absent, null or [] is closed."""

    mon: DayHours = ()
    tue: DayHours = ()
    wed: DayHours = ()
    thu: DayHours = ()
    fri: DayHours = ()
    sat: DayHours = ()
    sun: DayHours = ()

    @field_validator(*WEEKDAYS, mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return () if value is None else [value] if isinstance(value, str) else value

    @field_validator(*WEEKDAYS)
    @classmethod
    def _no_overlap(cls, ranges: DayHours) -> DayHours:
        ranges = tuple(sorted(ranges, key=lambda r: r.start))
        for before, after in zip(ranges, ranges[1:]):
            if after.start < before.end:
                raise fail(f"ranges {before} and {after} overlap")
        return ranges

    def on(self, weekday: int) -> tuple[TimeRange, ...]:
        """Ranges of a weekday, 0 = Monday (as date.weekday())."""
        return getattr(self, WEEKDAYS[weekday])


def _zone(name: str) -> tzinfo:
    """An IANA name (with its DST rules), or a fixed offset: UTC+1, UTC+01, UTC+01:00, UTC-05:30."""
    m = re.fullmatch(r"UTC([+-])(\d{1,2})(?::?(\d{2}))?", name)
    if m:
        offset = timedelta(hours=int(m[2]), minutes=int(m[3] or 0))
        if offset >= timedelta(hours=24) or int(m[3] or 0) > 59:
            raise ValueError(f"{name}: not an offset")
        return timezone(-offset if m[1] == "-" else offset, name)
    return ZoneInfo(name)


class HolidaySource(_Model):
    """Public holidays from the `holidays` package (country ISO code, optional subdivision)."""

    country: str
    subdivision: str | None = None

    @model_validator(mode="after")
    def _known(self) -> HolidaySource:
        try:
            holidays_lib.country_holidays(self.country, subdiv=self.subdivision)
        except NotImplementedError as exc:
            at = ("subdivision",) if "subdivision" in str(exc) else ("country",)
            raise fail(f"not known to the holidays package: {exc}", at=at) from None
        return self


@lru_cache(maxsize=256)
def _holidays(country: str, subdivision: str | None, year: int) -> Mapping[date, str]:
    return dict(holidays_lib.country_holidays(country, subdiv=subdivision, years=year))


class Calendar(_Model):
    """When business time runs. Business time only counts inside `hours`, on days that are
    neither public holidays nor `extra_closed`; `removed_holidays` reopen listed holidays."""

    timezone: str
    hours: WeeklyHours
    holidays: HolidaySource | None = None
    extra_closed: tuple[date, ...] = ()
    removed_holidays: tuple[date, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _loads(cls, name: str) -> str:
        try:
            _zone(name)
        except (ValueError, KeyError, OSError):
            raise fail(f"unknown time zone {name!r}: use an IANA name such as Europe/Paris "
                       f"or a fixed offset such as UTC+01:00") from None
        return name

    @model_validator(mode="after")
    def _open_sometimes(self) -> Calendar:
        if not any(self.hours.on(d) for d in range(7)):
            raise fail("no opening hours on any day", at=("hours",))
        return self

    @property
    def tz(self) -> tzinfo:
        """The time zone: a ZoneInfo (with DST) or a fixed-offset timezone."""
        return _zone(self.timezone)

    @property
    def day_length(self) -> timedelta | None:
        """Opening time of one business day, if every open weekday has the same (else None).
        "N business days" means N × this."""
        lengths = {sum((r.length for r in self.hours.on(d)), timedelta()) for d in range(7)}
        lengths.discard(timedelta())
        return lengths.pop() if len(lengths) == 1 else None

    def holiday_name(self, day: date) -> str | None:
        """The name of the holiday or closure that closes `day`, or None."""
        if day in self.extra_closed:
            return "closed"
        if self.holidays is None or day in self.removed_holidays:
            return None
        return _holidays(self.holidays.country, self.holidays.subdivision, day.year).get(day)

    def is_closed_date(self, day: date) -> bool:
        return self.holiday_name(day) is not None

    def openings(self, day: date) -> tuple[TimeRange, ...]:
        """Opening ranges on a local date (none on holidays and closures)."""
        return () if self.is_closed_date(day) else self.hours.on(day.weekday())


# --- policies -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A response target: `amount` business hours or business days."""

    amount: int
    unit: Literal["business_hours", "business_days"]

    def business_time(self, calendar: Calendar) -> timedelta:
        """The target as business time to count on `calendar` (days × its day length)."""
        return self.over(calendar.day_length)

    def over(self, day_length: timedelta | None) -> timedelta:
        """The target as business time, a business day lasting `day_length`."""
        if self.unit == "business_hours":
            return timedelta(hours=self.amount)
        if day_length is None:
            raise ValueError("business days need a calendar whose open days are equally long")
        return self.amount * day_length

    def __str__(self) -> str:
        noun = "hour" if self.unit == "business_hours" else "day"
        return f"{self.amount} business {noun}{'' if self.amount == 1 else 's'}"


def parse_target(value: Any) -> Target | None:
    """"8 business hours" / "1 business day" → Target; None (best effort) → None."""
    if value is None:
        return None
    if isinstance(value, Target):
        return value
    m = re.fullmatch(r"\s*(\d+)\s+business\s+(hour|day)s?\s*", str(value), re.IGNORECASE)
    if not isinstance(value, str) or not m or int(m[1]) == 0:
        raise fail("expected 'N business hours' or 'N business days' (N ≥ 1), "
                   "or null for best effort")
    return Target(int(m[1]), f"business_{m[2].lower()}s")


class Severity(_Model):
    level: int = Field(ge=1)  # 1 is the most severe
    key: Key
    labels: dict[Lang, str]
    response: Annotated[Target | None, PlainValidator(parse_target)]
    description: str = ""

    def label(self, language: str) -> str:
        return self.labels.get(language) or next(iter(self.labels.values()))


class UnpaidFees(_Model):
    """Not entitled once an invoice is unpaid `days` after `anchor` (the start of the
    contract period it bills, or its due date)."""

    anchor: Literal["period_start", "due_date"]
    days: int = Field(ge=0)
    ignore_disputed: bool = False  # disputed invoices do not count as unpaid
    suspension_after_days: int | None = Field(None, ge=0)  # informational: service suspension


class Renewal(_Model):
    tacit: bool
    term_months: int | None = Field(None, ge=1)  # None: the period is set by the order
    notice_days: int | None = Field(None, ge=0)
    notice_months: int | None = Field(None, ge=0)


class Entitlement(_Model):
    subscription_required: bool = True
    free_use_excluded: bool = False
    unpaid_fees: UnpaidFees | None = None
    renewal: Renewal | None = None


class Exclusion(_Model):
    """A matter the contract does not cover. It cannot be decided by rule, so a request
    that seems to concern it is flagged for the agent and the customer is told, politely."""

    key: Key
    description: dict[Lang, str]
    patterns: tuple[Regex, ...] = ()  # evidence in the customer's words (any language)
    older_than_latest_release: bool = False  # a version the customer names, below latest_release


class Escalation(_Model):
    warn_at_fraction: float = Field(0.75, gt=0, lt=1)
    manager_addresses: tuple[str, ...] = ()

    @field_validator("manager_addresses")
    @classmethod
    def _addresses(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", value):
                raise fail(f"{value!r} is not a bare e-mail address")
        return values


ClauseKey = Literal["scope", "subscription", "unpaid_fees", "free_use", "languages",
                    "exclusions", "response_times", "business_hours", "escalation",
                    "overrides", "renewal"]


class Policy(_Model):
    name: str
    description: str = ""
    source: str = ""  # the contract document this policy reads
    calendar: str
    languages: tuple[Lang, ...] = Field(min_length=1)
    contacts: Literal["listed", "customer_domain"]
    severities: tuple[Severity, ...] = Field(min_length=1)
    default_severity: int
    entitlement: Entitlement
    exclusions: tuple[Exclusion, ...] = ()
    escalation: Escalation = Escalation()
    customer_escalation_markers: tuple[str, ...] = ()
    latest_release: str | None = Field(None, pattern=r"^\d+(\.\d+)*$")  # e.g. "0.20"
    overridable: tuple[Literal["hours", "targets"], ...] = ()
    clauses: dict[ClauseKey, str] = {}  # citations used to explain decisions

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        _unique(self.languages, lambda lang: lang, ("languages",))
        _unique(self.severities, lambda s: s.level, ("severities",), "level")
        _unique(self.severities, lambda s: s.key, ("severities",), "key")
        _unique(self.exclusions, lambda e: e.key, ("exclusions",), "key")
        for i, severity in enumerate(self.severities):
            _covers(severity.labels, self.languages, ("severities", i, "labels"))
        for i, exclusion in enumerate(self.exclusions):
            _covers(exclusion.description, self.languages, ("exclusions", i, "description"))
        if self.default_severity not in self.levels:
            raise fail(f"no severity has level {self.default_severity} "
                       f"(levels: {', '.join(map(str, self.levels))})", at=("default_severity",))
        return self

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(sorted(s.level for s in self.severities))

    @property
    def best_effort(self) -> bool:
        """No severity has a response target."""
        return all(s.response is None for s in self.severities)

    def severity(self, level: int) -> Severity:
        for s in self.severities:
            if s.level == level:
                return s
        raise KeyError(f"policy {self.name!r} has no severity of level {level}")

    def target(self, level: int) -> Target | None:
        return self.severity(level).response

    def with_overrides(self, calendar: Calendar, overrides: Mapping[str, Any] | None,
                       ) -> tuple[Policy, Calendar]:
        """Apply an order's overrides ({"hours": {...}, "targets": {key or level: "..."}}),
        allowed only for what `overridable` lists. Raises ValueError in plain words."""
        overrides = dict(overrides or {})
        for what in overrides:
            if what not in self.overridable:
                raise ValueError(f"policy {self.name!r} does not allow overriding {what!r} "
                                 f"(overridable: {', '.join(self.overridable) or 'nothing'})")
        policy = self
        if "targets" in overrides:
            severities = {s.key: s for s in self.severities}
            for name, target in dict(overrides["targets"]).items():
                match = severities.get(name) or next(
                    (s for s in self.severities if str(s.level) == str(name)), None)
                if match is None:
                    raise ValueError(f"targets: unknown severity {name!r}")
                try:
                    severities[match.key] = match.model_copy(update={"response":
                                                                     parse_target(target)})
                except Exception:
                    raise ValueError(f"targets: {name}: expected 'N business hours' or "
                                     f"'N business days', got {target!r}") from None
            policy = self.model_copy(update={"severities": tuple(severities.values())})
        if "hours" in overrides:
            try:
                hours = WeeklyHours.model_validate(overrides["hours"])
            except ValidationError as exc:
                loc, message = plain_errors(exc, "mapping")[0]
                raise ValueError(f"hours: {_dotted(loc)}: {message}") from None
            if not any(hours.on(d) for d in range(7)):
                raise ValueError("hours: no opening hours on any day")
            calendar = calendar.model_copy(update={"hours": hours})
        if any(s.response and s.response.unit == "business_days" for s in policy.severities) \
                and calendar.day_length is None:
            raise ValueError("hours: targets in business days need open days of equal length")
        return policy, calendar


def _unique(items, key, at: tuple, what: str = "") -> None:
    seen = set()
    for i, item in enumerate(items):
        if key(item) in seen:
            raise fail(f"{key(item)!r} appears twice", at=at + (i,) + ((what,) if what else ()))
        seen.add(key(item))


def _covers(texts: Mapping[str, str], languages, at: tuple) -> None:
    missing = [lang for lang in languages if lang not in texts]
    if missing:
        raise fail(f"missing text for {', '.join(missing)} (the policy's languages)", at=at)


# --- severity evidence --------------------------------------------------------------------

def _regex(value: Any) -> re.Pattern[str]:
    if not isinstance(value, str):
        raise fail("must be a regular expression (a string)")
    try:
        return re.compile(value, re.IGNORECASE)
    except re.error as exc:
        raise fail(f"invalid regular expression {value!r}: {exc}") from None


Regex = Annotated[re.Pattern, PlainValidator(_regex)]


class LevelEvidence(_Model):
    """What a request of this severity level says, per language. Phrases are plain text
    matched case-insensitively; patterns are regular expressions (case-insensitive)."""

    level: int = Field(ge=1)
    phrases: dict[Lang, tuple[str, ...]] = {}
    patterns: dict[Lang, tuple[Regex, ...]] = {}


class DeclaredPriority(_Model):
    """How a customer states a priority themselves ("Sev1", "[URGENT]", "bloquant")."""

    level: int = Field(ge=1)
    patterns: tuple[Regex, ...] = Field(min_length=1)


class SeverityEvidence(_Model):
    evidence: tuple[LevelEvidence, ...] = ()
    declared: tuple[DeclaredPriority, ...] = ()

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(sorted({e.level for e in self.evidence} | {d.level for d in self.declared}))

    def for_level(self, level: int) -> LevelEvidence | None:
        return next((e for e in self.evidence if e.level == level), None)


# --- loading ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rules:
    directory: Path
    calendars: dict[str, Calendar]
    policies: dict[str, Policy]
    severity: SeverityEvidence

    def calendar_for(self, policy: str | Policy) -> Calendar:
        policy = self.policies[policy] if isinstance(policy, str) else policy
        return self.calendars[policy.calendar]


@dataclass
class YamlSource:
    file: str
    root: yaml.Node

    def error(self, loc: tuple, message: str) -> RulesError:
        return RulesError(self.file, _line(self.root, loc)[0], _dotted(loc), message)

    def first(self, exc: ValidationError) -> RulesError:
        """The error to report: exactly located errors first (a missing key can only be
        pointed at through its parent), then in file order."""
        located = [(_line(self.root, loc), loc, message)
                   for loc, message in plain_errors(exc, "mapping")]
        (line, _), loc, message = min(located, key=lambda e: (not e[0][1], e[0][0]))
        return RulesError(self.file, line, _dotted(loc), message)


def load_rules(directory: Path | None = None) -> Rules:
    """Load and check the rules folder (default: the shipped rules)."""
    directory = Path(directory) if directory is not None else shipped_dir("rules")
    if not directory.is_dir():
        raise RulesError(str(directory), None, "", "rules folder not found")
    calendars = _load_folder(directory / "calendars", Calendar)
    policies = _load_folder(directory / "policies", Policy)
    severity_file = directory / "severity.yaml"
    if not severity_file.is_file():
        raise RulesError(str(severity_file), None, "", "file not found")
    severity, severity_source = load_yaml_file(severity_file, SeverityEvidence)

    for name, (policy, source) in policies.items():
        if policy.calendar not in calendars:
            raise source.error(("calendar",), f"unknown calendar {policy.calendar!r} "
                               f"(known: {', '.join(sorted(calendars)) or 'none'})")
        calendar = calendars[policy.calendar][0]
        for i, s in enumerate(policy.severities):
            if s.response and s.response.unit == "business_days" and not calendar.day_length:
                raise source.error(("severities", i, "response"), f"business days need a "
                                   f"calendar whose open days are equally long; calendar "
                                   f"{policy.calendar!r} has days of different lengths")
    for part in ("evidence", "declared"):
        for i, item in enumerate(getattr(severity, part)):
            for name, (policy, _) in policies.items():
                if item.level not in policy.levels:
                    raise severity_source.error((part, i, "level"), f"policy {name!r} has no "
                                                f"severity of level {item.level}")
    return Rules(directory, {n: c for n, (c, _) in calendars.items()},
                 {n: p for n, (p, _) in policies.items()}, severity)


def _load_folder(folder: Path, model: type[_Model]) -> dict[str, tuple[Any, YamlSource]]:
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")) \
        if folder.is_dir() else []
    if not files:
        raise RulesError(str(folder), None, "", "no .yaml files found")
    loaded: dict[str, tuple[Any, YamlSource]] = {}
    for path in files:
        if path.stem in loaded:
            raise RulesError(str(path), None, "", f"a second file named {path.stem!r}")
        loaded[path.stem] = load_yaml_file(path, model)
    return loaded


def load_yaml_file(path: Path, model: type[_Model]) -> tuple[Any, YamlSource]:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(file, None, "", f"cannot read the file: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem and exc.context_mark:
            message += f" ({exc.context} started at line {exc.context_mark.line + 1})"
        raise RulesError(file, mark.line + 1 if mark else None, "",
                         f"YAML syntax error: {message}") from None
    except ValueError:  # a scalar that looks like a date but is none, such as 2026-13-01
        raise _unreadable_scalar(file, yaml.compose(text, Loader=yaml.SafeLoader)) from None
    if not isinstance(root, yaml.MappingNode):
        raise RulesError(file, root.start_mark.line + 1 if root else None, "",
                         "expected a mapping of keys to values")
    source = YamlSource(file, root)
    _check_duplicates(source, root, ())
    try:
        return model.model_validate(data), source
    except ValidationError as exc:
        raise source.first(exc) from None


def _unreadable_scalar(file: str, node: yaml.Node, loc: tuple = ()) -> RulesError:
    """The error for the first scalar PyYAML cannot build a value from (it says no line)."""
    if isinstance(node, yaml.ScalarNode):
        try:
            yaml.SafeLoader("").construct_object(node, deep=True)
        except ValueError as error:
            return RulesError(file, node.start_mark.line + 1, _dotted(loc),
                              f"{node.value!r} is not a valid date or value ({error})")
    children = node.value if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) else []
    for i, child in enumerate(children):
        key, value = child if isinstance(child, tuple) else (None, child)
        part = key.value if isinstance(key, yaml.ScalarNode) else i
        found = _unreadable_scalar(file, value, loc + (part,))
        if found.line is not None:
            return found
    return RulesError(file, None, _dotted(loc), "a value cannot be read")


def _check_duplicates(source: YamlSource, node: yaml.Node, loc: tuple) -> None:
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise RulesError(source.file, key.start_mark.line + 1, _dotted(loc),
                                     f"duplicate key {key.value!r}")
                seen.add(key.value)
            _check_duplicates(source, value, loc + (key.value,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(source, item, loc + (i,))


def _line(node: yaml.Node, loc: tuple) -> tuple[int, bool]:
    """The line of the deepest node of `loc` found in the YAML tree, and whether it is the
    node of `loc` itself."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value
                          if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
            if match is None:
                return line, False
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line, False
    return line, True


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text
