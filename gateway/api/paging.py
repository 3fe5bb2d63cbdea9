"""One page of a listing in key order (ListObjects, ListObjectsV2, ListMultipartUploads):
entries under a prefix, those with the delimiter after the prefix rolled up into common
prefixes, resuming after a marker, up to a maximum.

The rules are the same whichever table is listed, so they live here once, over a ``fetch``
coroutine that reads the next batch of entries; they do no I/O of their own, and are tested
with fake fetches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

# The key order of the listing queries, so a skip here lands where their bounds do.
from gateway.meta.object_rows import prefix_upper_bound


class Keyed(Protocol):
    @property
    def key(self) -> str: ...


# An entry of the listing: ListedObject, ListedUpload.
E = TypeVar("E", bound=Keyed)
# Where an entry sits in the listing's order: its key for objects, (key, upload id) for uploads.
P = TypeVar("P")

# fetch(after, start, limit): up to ``limit`` entries under the listing's prefix, in its order,
# after the entry at position ``after`` if given, else with keys from ``start`` on (the paginator
# never passes both). With a delimiter, only the first entry of each common prefix, and whether
# the walk stopped at a common prefix it could not skip (see gateway.meta.rollup); without one,
# every entry and False.
Fetch = Callable[[P | None, str, int], Awaitable[tuple[Sequence[E], bool]]]


@dataclass(frozen=True)
class Marker(Generic[P]):
    """Where a page resumes: after the entry at ``position``, whose key is ``key`` (or after
    the common prefix ``key`` rolls up into, all of which an earlier page listed)."""

    key: str
    position: P


@dataclass
class Page(Generic[E]):
    entries: list[E] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    is_truncated: bool = False
    # The last entry or common prefix listed (the later of the two): where the next page resumes.
    last: E | str | None = None

    @property
    def count(self) -> int:
        return len(self.entries) + len(self.common_prefixes)

    @property
    def last_key(self) -> str | None:
        """The key of the last entry or the last common prefix, whichever came last."""
        if self.last is None or isinstance(self.last, str):
            return self.last
        return self.last.key


def common_prefix(key: str, prefix: str, delimiter: str | None) -> str | None:
    """The CommonPrefix that ``key`` rolls up into, if any."""
    if not delimiter or not key.startswith(prefix):
        return None
    index = key.find(delimiter, len(prefix))
    return key[: index + len(delimiter)] if index >= 0 else None


async def paginate(
    fetch: Fetch[P, E],
    prefix: str,
    delimiter: str | None,
    marker: Marker[P] | None,
    max_entries: int,
) -> Page[E]:
    """The page of up to ``max_entries`` entries and common prefixes after ``marker``.

    Truncated when there is more to list: so with ``max_entries`` 0, when there is anything at
    all (one entry is fetched to tell).
    """
    page: Page[E] = Page()
    after, start = None, ""
    if marker is not None:
        after = marker.position
        rolled_up = common_prefix(marker.key, prefix, delimiter)
        if rolled_up is not None:
            # A marker inside a common prefix: that prefix was listed already.
            past_prefix = prefix_upper_bound(rolled_up)
            if past_prefix is None:
                return page
            after, start = None, past_prefix
    while True:
        # One more than the page holds, to tell whether it is truncated.
        entries, stopped = await fetch(after, start, max_entries - page.count + 1)
        for entry in entries:
            if page.count == max_entries:
                page.is_truncated = True
                return page
            rolled_up = common_prefix(entry.key, prefix, delimiter)
            if rolled_up is None:
                page.entries.append(entry)
                page.last = entry
            else:
                page.common_prefixes.append(rolled_up)
                page.last = rolled_up
        if not stopped or not page.common_prefixes:
            return page
        # Only past a delimiter of U+10FFFF characters: the walk cannot skip such a prefix.
        past_prefix = prefix_upper_bound(page.common_prefixes[-1])
        if past_prefix is None:
            return page
        after, start = None, past_prefix
