"""Authentication-Results (RFC 8601): only our server's verdict counts, and only a DMARC
pass or a DKIM pass aligned with the From domain makes the From address trustworthy."""

from __future__ import annotations

import pytest

from bot.authres import verify_sender

MX = "mx.vendor.example"


@pytest.mark.parametrize("results, trusted, why", [
    ((f"{MX}; dmarc=pass (p=reject) header.from=acme.example",), True, "DMARC pass for acme.example"),
    ((f"{MX}; spf=fail; dkim=pass header.d=acme.example header.s=s1",), True, "DKIM pass for acme.example"),
    ((f"{MX}; dkim=pass header.d=mail.acme.example",), True, "aligned with acme.example"),  # relaxed
    ((f"{MX}; dkim=pass header.i=@acme.example",), True, "DKIM pass for acme.example"),
    ((f"{MX}; dkim=pass header.d=evil.example; dmarc=fail header.from=acme.example",), False, "neither"),
    ((f"{MX}; dkim=pass header.d=example",), False, "neither"),  # a bare TLD aligns with nothing
    ((f"{MX}; spf=pass smtp.mailfrom=acme.example",), False, "neither"),  # SPF alone: not the From
    ((f"{MX}; dmarc=pass header.from=other.example",), False, "neither"),
    (("mx.elsewhere.example; dmarc=pass header.from=acme.example",), False, f"no Authentication-Results from {MX}"),
    # A header with our id below ours was written by the sender: ours (on top) decides.
    ((f"{MX}; dmarc=fail header.from=acme.example", f"{MX}; dmarc=pass header.from=acme.example"), False, "neither"),
    ((f"{MX.upper()} 1; (comment; with=pass) dmarc=pass header.from=acme.example",), True, "DMARC pass"),
    (("",), False, "no Authentication-Results"),
    ((), False, "no Authentication-Results"),
])
def test_who_may_be_trusted(results, trusted, why):
    ok, reason = verify_sender("alice.martin@acme.example", results, MX)
    assert ok is trusted
    assert why in reason
