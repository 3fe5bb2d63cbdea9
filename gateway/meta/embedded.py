"""The embedded Postgres: used when no database URL is configured, stopped by the last gateway
process that used it.

pgserver counts the processes using a server in a file and stops it when the last one exits;
a process killed with SIGKILL never leaves that count, so its server was never stopped again,
not even by the gateway started after it, which adopts it. Here every process using the
server holds a shared flock on ``postgres.lock`` beside its data directory instead: the kernel
drops it however the process ends, so the process that can take it exclusively when it is done
is the last user, and stops the server, one a killed gateway left running included.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

LOCK_FILE = "postgres.lock"
# Fast shutdown (what `pg_ctl stop` does): sessions are ended, a checkpoint is written.
FAST_SHUTDOWN_SECONDS = 30.0
# Immediate shutdown, when the fast one did not end in time: recovery runs at the next start.
IMMEDIATE_SHUTDOWN_SECONDS = 5.0


class EmbeddedPostgres:
    """A Postgres in ``pgdata``, started (or joined, if one runs there) for as long as the
    ``with`` block runs; ``url`` is its DSN (a Unix socket)."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.url = ""
        self._lock: int | None = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> str:
        """Start the server, or join the one running; blocking (a new one takes seconds)."""
        import pgserver  # imported lazily: only needed when no database URL is configured

        # A fresh data dir (e.g. GATEWAY_DATA_DIR of a new container) is made here, not refused.
        self.pgdata.mkdir(parents=True, exist_ok=True)
        # Read-only is enough to lock, so a gateway run as another user may share it.
        self._lock = os.open(self.pgdata.parent / LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            # Waits while the last user of the server stops it; then a new one starts here.
            fcntl.flock(self._lock, fcntl.LOCK_SH)
            # Resolved as pgserver's get_server() does: the server's command line names it so.
            self.pgdata = self.pgdata.resolve()
            _remove_stale_pid_file(self.pgdata)
            # Not get_server(): it hands back the handle this process had, even if the server
            # behind it has been stopped since. cleanup_mode=None: stop() decides.
            server = pgserver.PostgresServer(self.pgdata, cleanup_mode=None)
            self.url = server.get_uri()
        except BaseException:
            # Interrupted (SIGTERM, Ctrl-C) while starting: what was started is not left behind.
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """Leave the server, and stop it unless another process still uses it."""
        lock, self._lock = self._lock, None
        if lock is None:
            return
        try:
            # Converting the shared lock is not atomic (it is dropped first), so of several
            # processes leaving at once the last to try gets it: never none of them.
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            return
        try:
            _stop_postmaster(self.pgdata)
        finally:
            os.close(lock)


def _stop_postmaster(pgdata: Path) -> None:
    """Shut down the Postgres that runs in ``pgdata``, if one does, and wait until it has."""
    pid = _postmaster_pid(pgdata)
    if pid is None:
        return
    log.info("stopping the embedded Postgres (pid %d)", pid)
    for signum, seconds in (
        (signal.SIGINT, FAST_SHUTDOWN_SECONDS),
        (signal.SIGQUIT, IMMEDIATE_SHUTDOWN_SECONDS),
    ):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if _postmaster_pid(pgdata) != pid:
                return
            time.sleep(0.05)
    log.warning("the embedded Postgres (pid %d) did not stop", pid)


def _recorded_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _postmaster_pid(pgdata: Path) -> int | None:
    """The pid postmaster.pid names, if that process is a Postgres of ``pgdata``. The file is
    removed as the server's very last step, so its absence means stopped even where the
    server stays a zombie."""
    pid = _recorded_pid(pgdata)
    return pid if pid is not None and _runs_postgres(pid, pgdata) else None


def _remove_stale_pid_file(pgdata: Path) -> None:
    """Remove a postmaster.pid that names a live process other than a Postgres of ``pgdata``.

    A container killed with its Postgres leaves the file behind, and in the next container
    its pid may well be another process, even one of this gateway's threads: pgserver (which
    asks only whether the pid exists) would join that as the server, and Postgres would refuse
    to start beside it. A file naming no live process is left: Postgres replaces it.
    """
    pid = _recorded_pid(pgdata)
    if pid is None or not _exists(pid) or _runs_postgres(pid, pgdata):
        return
    log.warning("removing %s: pid %d is not its Postgres", pgdata / "postmaster.pid", pid)
    (pgdata / "postmaster.pid").unlink(missing_ok=True)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    return True


def _runs_postgres(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a Postgres serving ``pgdata``: its command line names it (a zombie's
    is empty). Without /proc to tell, any live process other than this one is taken for it."""
    if not Path("/proc/self").exists():
        return pid != os.getpid() and _exists(pid)
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(pgdata) in command
