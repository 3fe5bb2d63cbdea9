"""A page of a listing with a delimiter, in one query.

Keys that roll up into a common prefix are skipped inside Postgres: a recursive query steps
from each entry to the next with one index probe, jumping past the whole common prefix when the
entry has the delimiter after the listing's prefix (a loose index scan). So a page costs one
round trip however many common prefixes it holds, and no more rows than it returns, however
many keys each prefix hides. ListObjects(V2) and ListMultipartUploads share it.
"""

from __future__ import annotations

# Where the next entry may start, for an entry whose key is ``column``: past its common prefix
# when it has one, else the key itself (the caller asks for the next key after it as well).
# The common prefix ends with the delimiter; the first string after every string starting with
# it is (the prefix minus the delimiter) || the delimiter's own upper bound, which the caller
# passes in ($tail: None when there is none, which ends the walk at that entry).
_SKIP = (
    "(CASE WHEN strpos(substr({c}, length({prefix}::text) + 1), {delimiter}::text) = 0 THEN {c}"
    " ELSE left({c}, length({prefix}::text) + strpos(substr({c}, length({prefix}::text) + 1),"
    ' {delimiter}::text) - 1) || {tail}::text END) COLLATE "C"'
)


def skip_expression(prefix: str, delimiter: str, tail: str) -> str:
    """SQL for the walk's ``skip`` column, of an entry whose key is ``{c}``; the arguments name
    the query parameters of the listing's prefix, its delimiter and the delimiter's tail."""
    return (
        _SKIP.replace("{prefix}", prefix).replace("{delimiter}", delimiter).replace("{tail}", tail)
    )


def walk_query(
    table: str,
    columns: list[str],
    order: list[str],
    first: str,
    after: str,
    skip: str,
    limit: str,
) -> str:
    """A recursive query returning up to ``limit`` entries of ``table`` and their ``skip``.

    ``first`` filters the first entry (the page's start); ``after`` the next one, given the
    previous entry's columns as ``w.<column>`` and its ``w.skip``. Both are used with
    ``ORDER BY order LIMIT 1``, so each step is one index probe.
    """
    listed = ", ".join(columns)
    ordering = ", ".join(order)
    inner = ", ".join(f"e.{column}" for column in columns)
    first_skip, next_skip = skip.replace("{c}", "key"), skip.replace("{c}", "e.key")
    return (
        f"WITH RECURSIVE walk (n, {listed}, skip) AS ("
        f" (SELECT 1, {listed}, {first_skip} FROM {table}"
        f"  WHERE {first} ORDER BY {ordering} LIMIT 1)"
        " UNION ALL"
        f" SELECT w.n + 1, {inner}, {next_skip} FROM walk w"
        f" CROSS JOIN LATERAL (SELECT {listed} FROM {table}"
        f"  WHERE key >= w.skip AND {after} ORDER BY {ordering} LIMIT 1) e"
        f" WHERE w.n < {limit} AND w.skip IS NOT NULL"
        f") SELECT {listed}, skip FROM walk ORDER BY n"
    )
