"""Matters a contract excludes that no rule can decide (on-site support, third-party
software, custom plugins, superseded releases): found in the customer's words, flagged on
the ticket for the agent, and mentioned politely to the customer. Never a refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.rules import Policy

# "version 0.17.3", "Kestra 0.18", "v0.19", "release 1.0": a number needs a word before it,
# so that dates, times and IP addresses are not read as versions.
_VERSION = re.compile(r"\b(?:version|release|kestra|v)\s*v?(\d+(?:\.\d+){1,3})\b", re.I)


@dataclass(frozen=True)
class Flag:
    key: str
    evidence: str  # what in the text matched


def flag_exclusions(policy: Policy, text: str) -> tuple[Flag, ...]:
    flags = []
    for exclusion in policy.exclusions:
        if exclusion.older_than_latest_release and policy.latest_release:
            old = next((m for m in _VERSION.finditer(text)
                        if _numbers(m[1]) < _numbers(policy.latest_release)), None)
            if old:
                flags.append(Flag(exclusion.key, f"version {old[1]} is older than {policy.latest_release}"))
                continue
        match = next((m for pattern in exclusion.patterns if (m := pattern.search(text))), None)
        if match:
            flags.append(Flag(exclusion.key, f"'{match[0]}'"))
    return tuple(flags)


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))
