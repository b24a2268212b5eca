"""Who wrote: exact contact first, then the customer's domains (subdomains included)."""

from __future__ import annotations

import pytest

from bot.identify import CustomerRef, domain_candidates, identify

ACME = CustomerRef(1, "acme", "Acme Industries", "en")
INITECH = CustomerRef(2, "initech", "Initech SAS", "fr")
CONTACTS = {"alice.martin@acme.example": (ACME, "Alice Martin"),
            "consultant@gmail.example": (INITECH, "A consultant")}  # a contact outside the domain
DOMAINS = {"acme.example": ACME, "initech.example": INITECH}


@pytest.mark.parametrize("address, kind, customer", [
    ("alice.martin@acme.example", "contact", "acme"),
    ("Alice.Martin@ACME.example", "contact", "acme"),  # case-insensitive
    ("bob@acme.example", "customer_domain", "acme"),
    ("bob@eu.mail.acme.example", "customer_domain", "acme"),  # subdomains belong to the customer
    ("consultant@gmail.example", "contact", "initech"),  # the exact address wins
    ("other@gmail.example", "unknown", None),
    ("bob@acme.example.evil.example", "unknown", None),  # a look-alike is not a subdomain
    ("bob@notacme.example", "unknown", None),
    ("root@example", "unknown", None),
])
def test_who_wrote(address, kind, customer):
    sender = identify(address, CONTACTS, DOMAINS)
    assert sender.kind == kind
    assert (sender.customer.key if sender.customer else None) == customer
    assert sender.address == address.lower()


def test_domain_candidates_stop_at_two_labels():
    assert domain_candidates("x@a.b.acme.example") == ("a.b.acme.example", "b.acme.example", "acme.example")
    assert domain_candidates("x@localhost") == ()
    assert domain_candidates("x@Acme.Example.") == ("acme.example",)
