"""The listing paginator over fake tables: rollup into common prefixes, markers, truncation,
and the walk that stops at a delimiter of U+10FFFF characters."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.api.paging import Marker, Page, common_prefix, paginate
from gateway.meta.object_rows import prefix_upper_bound

TOP = "\U0010ffff"
# Sorts after every upload number: "after every upload of this key", as _LAST_UPLOAD_ID does.
LAST = 2**31


@dataclass(frozen=True)
class Entry:
    key: str
    # Orders the uploads of one key, as upload ids do; 0 for objects.
    upload: int = 0


class Table:
    """Entries listed as gateway.meta lists objects and uploads: without a delimiter, in order;
    with one, as the rolled-up walk of gateway.meta.rollup, one entry per common prefix, stopping
    at a common prefix it cannot skip. Records each fetch as (after, start, limit)."""

    def __init__(
        self,
        entries: Sequence[Entry],
        prefix: str,
        delimiter: str | None,
        position: Callable[[Entry], Any],
    ) -> None:
        self.entries = sorted(entries, key=position)
        self.prefix = prefix
        self.delimiter = delimiter
        self.position = position
        self.calls: list[tuple[Any, str, int]] = []

    async def fetch(self, after: Any, start: str, limit: int) -> tuple[list[Entry], bool]:
        self.calls.append((after, start, limit))
        assert after is None or start == "", "the paginator passes after or start, never both"
        rows = [
            entry
            for entry in self.entries
            if entry.key.startswith(self.prefix)
            and entry.key >= start
            and (after is None or self.position(entry) > after)
        ]
        if self.delimiter is None:
            return rows[:limit], False
        found: list[Entry] = []
        skip = ""
        for row in rows:
            if len(found) == limit:
                break
            if row.key < skip:
                continue
            found.append(row)
            rolled_up = common_prefix(row.key, self.prefix, self.delimiter)
            if rolled_up is None:
                skip = row.key
                continue
            tail = prefix_upper_bound(self.delimiter)
            if tail is None:
                return found, True
            skip = rolled_up[: -len(self.delimiter)] + tail
        return found, False


def objects(keys: Sequence[str], prefix: str = "", delimiter: str | None = None) -> Table:
    return Table([Entry(key) for key in keys], prefix, delimiter, lambda entry: entry.key)


def uploads(
    entries: Sequence[tuple[str, int]], prefix: str = "", delimiter: str | None = None
) -> Table:
    return Table(
        [Entry(key, upload) for key, upload in entries],
        prefix,
        delimiter,
        lambda entry: (entry.key, entry.upload),
    )


async def page_of(
    table: Table, marker: Marker[Any] | None = None, max_entries: int = 1000
) -> Page[Entry]:
    return await paginate(table.fetch, table.prefix, table.delimiter, marker, max_entries)


def keys(page: Page[Entry]) -> list[str]:
    return [entry.key for entry in page.entries]


KEYS = ["a/1", "a/2", "b", "c/x/y", "d"]


async def test_no_delimiter_lists_every_key_in_one_fetch() -> None:
    table = objects(KEYS)
    page = await page_of(table, max_entries=10)
    assert keys(page) == KEYS
    assert page.common_prefixes == []
    assert not page.is_truncated
    assert page.last_key == "d"
    assert table.calls == [(None, "", 11)]


async def test_delimiter_rolls_up_keys_into_common_prefixes() -> None:
    table = objects(KEYS, delimiter="/")
    page = await page_of(table)
    assert keys(page) == ["b", "d"]
    assert page.common_prefixes == ["a/", "c/"]
    assert page.count == 4
    assert not page.is_truncated
    assert len(table.calls) == 1


async def test_rollup_after_the_prefix_only() -> None:
    table = objects(["c/x/y", "c/x/z", "c/y", "c/z/", "d/"], prefix="c/", delimiter="/")
    page = await page_of(table)
    assert keys(page) == ["c/y"]
    assert page.common_prefixes == ["c/x/", "c/z/"]


@pytest.mark.parametrize("delimiter", ["-", "--", "ab", "é", TOP])
async def test_delimiters_of_any_length(delimiter: str) -> None:
    names = [f"p{delimiter}1", f"p{delimiter}2", "q", f"r{delimiter}{delimiter}s", "t"]
    page = await page_of(objects(names, delimiter=delimiter))
    assert keys(page) == ["q", "t"]
    assert page.common_prefixes == [f"p{delimiter}", f"r{delimiter}"]


async def test_marker_inside_a_common_prefix_resumes_past_it() -> None:
    table = objects(KEYS, delimiter="/")
    page = await page_of(table, Marker("a/1", "a/1"))
    assert keys(page) == ["b", "d"]
    assert page.common_prefixes == ["c/"]
    # Not after the marker's key: past everything under "a/".
    assert table.calls == [(None, "a0", 1001)]


async def test_marker_at_a_common_prefix_resumes_past_it() -> None:
    table = objects(KEYS, delimiter="/")
    page = await page_of(table, Marker("c/", "c/"))
    assert keys(page) == ["d"]
    assert page.common_prefixes == []
    assert table.calls == [(None, "c0", 1001)]


async def test_marker_outside_common_prefixes_resumes_after_it() -> None:
    table = objects(KEYS, delimiter="/")
    page = await page_of(table, Marker("b", "b"))
    assert keys(page) == ["d"]
    assert page.common_prefixes == ["c/"]
    assert table.calls == [("b", "", 1001)]


async def test_marker_without_delimiter_stays_inside_prefixes() -> None:
    page = await page_of(objects(KEYS), Marker("a/1", "a/1"))
    assert keys(page) == KEYS[1:]


async def test_marker_before_the_prefix() -> None:
    table = objects(KEYS, prefix="c/", delimiter="/")
    page = await page_of(table, Marker("a/1", "a/1"))
    assert page.common_prefixes == ["c/x/"]


async def test_marker_in_a_common_prefix_with_no_end_lists_nothing() -> None:
    # Nothing sorts after every key starting with U+10FFFF: the page is empty, and final.
    table = objects([f"{TOP}{TOP}x", f"{TOP}y"], delimiter=TOP)
    page = await page_of(table, Marker(f"{TOP}{TOP}x", f"{TOP}{TOP}x"))
    assert page == Page()
    assert table.calls == []


async def test_truncated_when_more_follow() -> None:
    table = objects(KEYS)
    page = await page_of(table, max_entries=3)
    assert keys(page) == KEYS[:3]
    assert page.is_truncated
    assert page.last_key == "b"


async def test_not_truncated_when_the_page_ends_exactly_at_the_last_key() -> None:
    table = objects(KEYS)
    page = await page_of(table, max_entries=len(KEYS))
    assert keys(page) == KEYS
    assert not page.is_truncated
    # One more asked for than the page holds, to tell.
    assert table.calls == [(None, "", len(KEYS) + 1)]


@pytest.mark.parametrize(
    ("max_entries", "listed", "prefixes", "truncated"),
    [
        (1, [], ["a/"], True),
        (2, ["b"], ["a/"], True),
        (3, ["b"], ["a/", "c/"], True),
        (4, ["b", "d"], ["a/", "c/"], False),
        (5, ["b", "d"], ["a/", "c/"], False),
    ],
)
async def test_common_prefixes_count_towards_the_maximum(
    max_entries: int, listed: list[str], prefixes: list[str], truncated: bool
) -> None:
    page = await page_of(objects(KEYS, delimiter="/"), max_entries=max_entries)
    assert keys(page) == listed
    assert page.common_prefixes == prefixes
    assert page.is_truncated is truncated


async def test_last_is_where_the_page_ended() -> None:
    on_prefix = await page_of(objects(KEYS, delimiter="/"), max_entries=3)
    assert on_prefix.last == "c/"
    assert on_prefix.last_key == "c/"
    on_entry = await page_of(objects(KEYS, delimiter="/"), max_entries=2)
    assert on_entry.last == Entry("b")
    assert on_entry.last_key == "b"
    assert (await page_of(objects([]))).last is None


@pytest.mark.parametrize("delimiter", [None, "/"])
async def test_max_zero_is_truncated_when_anything_is_there(delimiter: str | None) -> None:
    table = objects(KEYS, delimiter=delimiter)
    page = await page_of(table, max_entries=0)
    assert page.count == 0
    assert page.is_truncated
    assert page.last is None
    assert table.calls == [(None, "", 1)]
    empty = await page_of(objects([], delimiter=delimiter), max_entries=0)
    assert empty == Page()


# A delimiter of U+10FFFF has no upper bound: the walk cannot skip such a common prefix, so it
# stops there and the paginator resumes past it.
STOPPING = [f"a{TOP}x", f"a{TOP}y", "b", f"c{TOP}z", f"c{TOP}{TOP}", "d"]


async def test_walk_stopped_at_a_common_prefix_resumes_past_it() -> None:
    table = objects(STOPPING, delimiter=TOP)
    page = await page_of(table, max_entries=10)
    assert keys(page) == ["b", "d"]
    assert page.common_prefixes == [f"a{TOP}", f"c{TOP}"]
    assert not page.is_truncated
    # Each resumption asks for what is left of the page, plus one.
    assert table.calls == [(None, "", 11), (None, "b", 10), (None, "d", 8)]


async def test_walk_stopped_at_the_last_entry_of_a_full_page() -> None:
    table = objects(STOPPING, delimiter=TOP)
    page = await page_of(table, max_entries=2)
    assert keys(page) == ["b"]
    assert page.common_prefixes == [f"a{TOP}"]
    # The walk stopped on the entry one past the page: there is more.
    assert page.is_truncated
    assert table.calls == [(None, "", 3), (None, "b", 2)]


async def test_walk_stopped_inside_the_listing_prefix() -> None:
    names = [f"p/a{TOP}1", f"p/a{TOP}2", "p/b", "q"]
    page = await page_of(objects(names, prefix="p/", delimiter=TOP))
    assert keys(page) == ["p/b"]
    assert page.common_prefixes == [f"p/a{TOP}"]


async def test_walk_stopped_at_a_common_prefix_with_no_end() -> None:
    table = objects(["a", f"{TOP}x", f"{TOP}{TOP}y"], delimiter=TOP)
    page = await page_of(table)
    assert keys(page) == ["a"]
    assert page.common_prefixes == [TOP]
    assert not page.is_truncated
    assert len(table.calls) == 1


UPLOADS = [("a/1", 1), ("a/2", 2), ("b", 3), ("b", 4), ("c/x/y", 5), ("d", 6)]


async def test_uploads_resume_after_an_upload_of_a_key() -> None:
    table = uploads(UPLOADS)
    page = await page_of(table, Marker("b", ("b", 3)))
    assert [(entry.key, entry.upload) for entry in page.entries] == UPLOADS[3:]


async def test_uploads_resume_after_every_upload_of_a_key() -> None:
    page = await page_of(uploads(UPLOADS), Marker("b", ("b", LAST)))
    assert keys(page) == ["c/x/y", "d"]


async def test_uploads_with_delimiter() -> None:
    table = uploads(UPLOADS, delimiter="/")
    page = await page_of(table, max_entries=3)
    assert [(entry.key, entry.upload) for entry in page.entries] == [("b", 3), ("b", 4)]
    assert page.common_prefixes == ["a/"]
    assert page.is_truncated
    page = await page_of(table, Marker("a/2", ("a/2", 2)))
    assert keys(page) == ["b", "b", "d"]
    assert page.common_prefixes == ["c/"]


# Every listing of these keys, paged through at every size, lists what one page does.
NAMES = [
    "a",
    "a/",
    "a/b",
    "a/b/c",
    "a//",
    "a-b",
    "ab",
    "b/x",
    "é/1",
    "é/2",
    f"z{TOP}",
    f"z{TOP}{TOP}a",
    f"z{TOP}b",
    "zz",
]


def everything(names: Sequence[str], prefix: str, delimiter: str | None) -> list[str]:
    """The keys and common prefixes a listing holds, in order, worked out directly."""
    listed: list[str] = []
    for name in sorted(names):
        if not name.startswith(prefix):
            continue
        rolled_up = common_prefix(name, prefix, delimiter)
        if rolled_up is None:
            listed.append(name)
        elif rolled_up not in listed:
            listed.append(rolled_up)
    return listed


@pytest.mark.parametrize(
    ("prefix", "delimiter"),
    list(itertools.product(["", "a", "a/", "z"], [None, "/", "b", "//", TOP, f"{TOP}{TOP}"])),
)
async def test_pages_list_everything_once(prefix: str, delimiter: str | None) -> None:
    expected = everything(NAMES, prefix, delimiter)
    for max_entries in range(1, len(NAMES) + 2):
        table = objects(NAMES, prefix, delimiter)
        seen: list[str] = []
        marker: Marker[str] | None = None
        for _ in range(len(NAMES) + 1):
            page = await page_of(table, marker, max_entries)
            assert 0 < page.count <= max_entries or expected == []
            seen += sorted([*keys(page), *page.common_prefixes])
            if not page.is_truncated:
                break
            assert page.last_key is not None
            marker = Marker(page.last_key, page.last_key)
        else:
            pytest.fail(f"still truncated after {len(NAMES) + 1} pages of {max_entries}")
        assert seen == expected, max_entries
