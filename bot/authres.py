"""Can the From address be trusted? Read from the receiving server's Authentication-Results.

With `require_authenticated_sender`, a customer's entitlement is given only to mail that
our own receiving server (named by its authserv-id, RFC 8601) found to pass DMARC, or to
carry a passing DKIM signature of the From domain (relaxed alignment: the same domain or
a parent of it). Only the topmost Authentication-Results with that authserv-id counts:
servers add theirs on top, so one further down, even with our id, came from the sender.
"""

from __future__ import annotations

import re

_METHOD = re.compile(r"^\s*([a-z0-9_-]+)\s*=\s*([a-z]+)", re.I)
_PROPERTY = re.compile(r"\b(header\.(?:d|i|from))\s*=\s*\"?([^\s;\"]+)", re.I)
_COMMENT = re.compile(r"\([^()]*\)")


def verify_sender(from_addr: str, results: tuple[str, ...], authserv_id: str) -> tuple[bool, str]:
    """(trusted, why) for the From address, from the Authentication-Results header values."""
    ours = next((r for r in results if _authserv(r) == authserv_id.lower()), None)
    if ours is None:
        return False, f"no Authentication-Results from {authserv_id}"
    domain = from_addr.rpartition("@")[2].lower()
    for method, result, props in _methods(ours):
        if result != "pass":
            continue
        if method == "dmarc" and props.get("header.from", domain) == domain:
            return True, f"DMARC pass for {domain} ({authserv_id})"
        signer = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
        if method == "dkim" and signer and _aligned(domain, signer):
            return True, f"DKIM pass for {signer}, aligned with {domain} ({authserv_id})"
    return False, f"{authserv_id} reports neither a DMARC pass nor a DKIM pass aligned with {domain}"


def _authserv(value: str) -> str:
    return _COMMENT.sub("", value).split(";", 1)[0].strip().split()[0].lower() if value.strip() else ""


def _methods(value: str):
    for part in _COMMENT.sub("", value).split(";")[1:]:
        found = _METHOD.match(part)
        if found:
            props = {k.lower(): v.lower().strip(".") for k, v in _PROPERTY.findall(part)}
            yield found[1].lower(), found[2].lower(), props


def _aligned(domain: str, signer: str) -> bool:
    signer = signer.lower().strip(".")
    if "." not in signer:
        return False
    return domain == signer or domain.endswith("." + signer) or signer.endswith("." + domain)
