"""The keys a client supplied with its request (SSE-C), for the sealed store to use.

The API layer checks a request's key against the object's recorded MAC, then sets it here for
the request's task; the key lives only in that task's context and is never stored or logged.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

# The key id recorded for a data key wrapped by a client's own key (not a valid configured id).
CUSTOMER_KEY_ID = "~customer"


@dataclass(frozen=True)
class CustomerKeys:
    # Opens the object being read (GET, HEAD, a copy's source).
    read: bytes | None = None
    # Seals the object being written (PUT, a part, a copy's destination).
    write: bytes | None = None

    def __repr__(self) -> str:
        return "CustomerKeys(...)"


_NONE = CustomerKeys()
_KEYS: ContextVar[CustomerKeys | None] = ContextVar("customer_keys", default=None)


def current() -> CustomerKeys:
    return _KEYS.get() or _NONE


def use(read: bytes | None = None, write: bytes | None = None) -> None:
    """Set the keys of the current request (keeping one set earlier where not given)."""
    keys = current()
    _KEYS.set(CustomerKeys(read or keys.read, write or keys.write))
