"""The customers' contact histories as a mapping, kept inside their states.

The intervention shell keeps each customer's contact history (contacts made, for caps and
cooldowns; deferred offers; the last decision) in a mapping; the worker gives it this one,
which reads and writes the ``contacts`` field of the customers' states in
:class:`ScoringShell`: one record per customer, written with the state's next flush,
instead of a table of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from streams.worker.shell import ScoringShell


class ContactsInState(MutableMapping[str, Any]):
    """The contact histories as a mapping over the customers' states (one record each)."""

    def __init__(self, shell: ScoringShell) -> None:
        self.shell = shell

    def __getitem__(self, customer_id: str) -> Any:
        contacts = self.shell.contacts_of(customer_id)
        if contacts is None:
            raise KeyError(customer_id)
        return contacts

    def __setitem__(self, customer_id: str, contacts: Any) -> None:
        self.shell.set_contacts(customer_id, contacts)

    def get(self, customer_id: str, default: Any = None) -> Any:
        """Return the contact history of ``customer_id``, or ``default`` (no KeyError raised)."""
        contacts = self.shell.contacts_of(customer_id)
        return default if contacts is None else contacts

    def __delitem__(self, customer_id: str) -> None:
        self.shell.set_contacts(customer_id, {})

    def __iter__(self) -> Iterator[str]:
        return iter([customer_id for customer_id, _ in self.shell.contact_items()])

    def __len__(self) -> int:
        return len(self.shell.contact_items())

    def items(self) -> Any:
        """Return (customer id, contact history) pairs, read in one pass."""
        return self.shell.contact_items()
