"""Dates, times and durations in the words of our mails, in English and French.

Written out in full (31 March 2026, mardi 24 novembre 2026 à 10:00) because a customer in
another country reads 03/04 the other way round, and always with the offset of the
contract's time zone, since the customer may be in another one.
"""

from __future__ import annotations

from datetime import date, datetime

from bot.calendar import offset_label
from bot.rules import Target

MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"),
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
           "septembre", "octobre", "novembre", "décembre"),
}
WEEKDAYS = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "fr": ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
}
UNITS = {  # (one, several)
    "en": {"business_hours": ("business hour", "business hours"), "business_days": ("business day", "business days")},
    "fr": {"business_hours": ("heure ouvrée", "heures ouvrées"), "business_days": ("jour ouvré", "jours ouvrés")},
}


def _lang(language: str) -> str:
    return language if language in MONTHS else "en"


def long_date(day: date, language: str = "en") -> str:
    """31 March 2026 / 31 mars 2026."""
    return f"{day.day} {MONTHS[_lang(language)][day.month - 1]} {day.year}"


def long_moment(moment: datetime, language: str = "en") -> str:
    """Tuesday 24 November 2026, 10:00 (UTC+1) / mardi 24 novembre 2026 à 10:00 (UTC+1):
    `moment` is shown in its own time zone."""
    lang = _lang(language)
    day = f"{WEEKDAYS[lang][moment.weekday()]} {long_date(moment.date(), lang)}"
    joint = " à " if lang == "fr" else ", "
    return f"{day}{joint}{moment:%H:%M} ({offset_label(moment)})"


def duration(target: Target, language: str = "en") -> str:
    """1 business day, 8 business hours / 1 jour ouvré, 8 heures ouvrées."""
    one, several = UNITS[_lang(language)][target.unit]
    return f"{target.amount} {one if target.amount == 1 else several}"
