"""A folder's files as import sources: which are listed, and a file changing while read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.maintenance.folder_import import FileBody, FileChangedError, LocalFile, walk


class Silent:
    def started(self, file: LocalFile) -> None: ...

    def read(self, file: LocalFile, size: int) -> None: ...

    def finished(self, file: LocalFile, failure: str | None) -> None: ...


def test_walk_lists_regular_files_in_key_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("z")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    os.mkfifo(tmp_path / "pipe")
    found = list(walk(tmp_path, "pre/"))
    files = [item for item in found if isinstance(item, LocalFile)]
    assert [file.key for file in files] == ["pre/a.txt", "pre/b/z.txt"]
    refused = sorted(item[0].name for item in found if not isinstance(item, LocalFile))
    assert refused == ["link.txt", "pipe"]


async def read_all(body: FileBody) -> bytes:
    return b"".join([chunk async for chunk in body])


async def test_a_file_that_changes_while_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    (listed,) = [item for item in walk(tmp_path, "") if isinstance(item, LocalFile)]
    assert await read_all(FileBody(listed, Silent())) == b"x" * 1000
    path.write_bytes(b"x" * 10)
    with pytest.raises(FileChangedError):
        await read_all(FileBody(listed, Silent()))
    path.write_bytes(b"y" * 2000)
    with pytest.raises(FileChangedError):
        await read_all(FileBody(listed, Silent()))
    path.unlink()
    with pytest.raises(FileChangedError):
        await read_all(FileBody(listed, Silent()))
