"""`gateway import BUCKET --from-dir PATH`: a local folder tree copied into a bucket.

Each file is written through the bucket's backend, as a PutObject of it would be (so its
profile's storage, and whatever transforms the profile applies, hold it), under the key
``prefix + its path relative to the folder`` (with "/" separators). A file whose object
already has its size and was written no earlier than the file's last change is skipped, as
``aws s3 sync`` does, so an interrupted import started again continues where it stopped. A
file that vanishes, changes while read, or cannot be stored is reported and skipped.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import asyncpg

from gateway.errors import GatewayError
from gateway.meta import object_rows
from gateway.meta.buckets import Bucket
from gateway.meta.object_rows import DEFAULT_CONTENT_TYPE
from gateway.objects.backend import NewObject, ObjectBackend, WriteTerms
from gateway.s3 import errors, names
from gateway.s3.checksums import BodyDigests

READ_CHUNK = 1024 * 1024


class FileChangedError(Exception):
    """The file changed or vanished while it was read: what was read is not the file."""


@dataclass(frozen=True)
class LocalFile:
    path: Path
    key: str
    size: int
    mtime: float


class Progress(Protocol):
    """What an import tells as it goes (the command line shows it as progress bars)."""

    def started(self, file: LocalFile) -> None: ...

    def read(self, file: LocalFile, size: int) -> None: ...

    def finished(self, file: LocalFile, failure: str | None) -> None: ...


@dataclass
class ImportReport:
    imported: int = 0
    imported_bytes: int = 0
    # (file, why) of every file that was not imported and not skipped.
    failed: list[tuple[Path, str]] = field(default_factory=list)


def walk(root: Path, prefix: str) -> Iterator[LocalFile | tuple[Path, str]]:
    """The regular files under ``root`` in key order, or (path, why) for those that cannot
    be imported. Links are not followed: a link could lead out of the folder."""
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        for name in sorted(files):
            path = Path(directory) / name
            relative = path.relative_to(root).as_posix()
            try:
                stat = path.lstat()
            except OSError as exc:
                yield path, exc.strerror or str(exc)
                continue
            if not path.is_file() or path.is_symlink():
                yield path, "not a regular file"
                continue
            key = prefix + relative
            try:
                names.validate_key(key)
            except errors.S3Error as exc:
                yield path, exc.message
                continue
            yield LocalFile(path, key, stat.st_size, stat.st_mtime)


class FileBody:
    """A file as a write's body (gateway.objects.backend.IncomingBody), read off the event
    loop; refused if it is not, when read, the file that was listed."""

    def __init__(self, file: LocalFile, progress: Progress) -> None:
        self.length: int | None = file.size
        self.content_md5: bytes | None = None
        self.digests = BodyDigests(sha256=False, checksum_algorithm=None)
        self._file = file
        self._progress = progress

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            handle = await asyncio.to_thread(open, self._file.path, "rb")
        except OSError as exc:
            raise FileChangedError(exc.strerror or str(exc)) from None
        try:
            read = 0
            while chunk := await asyncio.to_thread(handle.read, READ_CHUNK):
                read += len(chunk)
                if read > self._file.size:
                    raise FileChangedError("it grew while it was read")
                self._progress.read(self._file, len(chunk))
                yield chunk
            if read != self._file.size:
                raise FileChangedError("it shrank while it was read")
            if os.fstat(handle.fileno()).st_mtime != self._file.mtime:
                raise FileChangedError("it changed while it was read")
        finally:
            handle.close()

    def verify(self) -> dict[str, str]:
        return {}


async def pending(pool: asyncpg.Pool, bucket: str, files: list[LocalFile]) -> list[LocalFile]:
    """The files whose objects are not already there, as ``aws s3 sync`` judges it: an
    object of the file's size written no earlier than the file's last change is current."""
    waiting = []
    for file in files:
        record = await object_rows.get_object(pool, bucket, file.key)
        current = (
            record is not None
            and record.size == file.size
            and record.last_modified.timestamp() >= file.mtime
        )
        if not current:
            waiting.append(file)
    return waiting


async def import_folder(
    backend: ObjectBackend,
    bucket: Bucket,
    files: list[LocalFile],
    concurrency: int,
    progress: Progress,
) -> ImportReport:
    """Import ``files`` into ``bucket``, ``concurrency`` at a time; a file that cannot be
    imported is reported and the others go on."""
    report = ImportReport()
    slots = asyncio.Semaphore(concurrency)

    async def one(file: LocalFile) -> None:
        async with slots:
            progress.started(file)
            content_type = mimetypes.guess_type(file.path.name)[0] or DEFAULT_CONTENT_TYPE
            new = NewObject(bucket.name, file.key, content_type)
            try:
                await backend.put(new, FileBody(file, progress), WriteTerms())
            except (FileChangedError, errors.S3Error, GatewayError, OSError) as exc:
                why = exc.message if isinstance(exc, errors.S3Error) else str(exc)
                report.failed.append((file.path, why))
                progress.finished(file, why)
                return
            report.imported += 1
            report.imported_bytes += file.size
            progress.finished(file, None)

    await asyncio.gather(*(one(file) for file in files))
    return report
