"""Who wrote: a registered contact, someone at a customer's domain, or an unknown sender.

Pure: the caller looks the address and its domains up (bot/contracts.py reads them from
the database). An exact contact address wins over the domain; a domain covers its
subdomains (someone@eu.acme.example belongs to acme.example). Whether a colleague who is
not a registered contact is served is the contract's policy (`contacts:`), decided with
the entitlement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class CustomerRef:
    id: int
    key: str
    name: str
    language: str | None = None  # preferred


@dataclass(frozen=True)
class Sender:
    address: str
    customer: CustomerRef | None
    registered: bool = False  # the exact address is one of the customer's contacts
    name: str = ""  # the contact's name, when registered

    @property
    def kind(self) -> str:
        if self.customer is None:
            return "unknown"
        return "contact" if self.registered else "customer_domain"


def domain_candidates(address: str) -> tuple[str, ...]:
    """The address's domain and each parent with at least two labels, nearest first."""
    domain = address.rpartition("@")[2].lower().strip(".")
    labels = domain.split(".")
    return tuple(".".join(labels[i:]) for i in range(len(labels) - 1)) if len(labels) > 1 else ()


def identify(address: str, contacts: Mapping[str, tuple[CustomerRef, str]],
             domains: Mapping[str, CustomerRef]) -> Sender:
    """`contacts`: address → (customer, contact name); `domains`: domain → customer."""
    address = address.lower()
    if address in contacts:
        customer, name = contacts[address]
        return Sender(address, customer, registered=True, name=name)
    for domain in domain_candidates(address):
        if domain in domains:
            return Sender(address, domains[domain])
    return Sender(address, None)
