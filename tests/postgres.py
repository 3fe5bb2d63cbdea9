"""A Postgres server of a test's own, to stop and start under a live gateway.

The session's server is shared by every gateway of the suite; an outage test needs one that
nothing else uses. It runs pgserver's binaries, as the session's does, and listens on its own
Unix socket and on a free loopback port, so a test can reach it either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pgserver

from tests.conftest import free_port

# Unix socket or TCP: how the gateway reaches it. Down, the first is a missing socket file
# (FileNotFoundError), the second a refused connection (ConnectionRefusedError).
SOCKET = "socket"
TCP = "tcp"


@dataclass
class OwnPostgres:
    directory: Path
    port: int = 0
    socket_dir: Path | None = None
    system_user: str | None = None

    def start(self) -> None:
        if self.socket_dir is None:
            # pgserver makes the data directory (as its own system user when run as root) and
            # starts it on a socket only; it is restarted below with a port as well.
            self.directory.mkdir(parents=True, exist_ok=True)
            server = pgserver.get_server(self.directory, cleanup_mode=None)
            info = server.get_postmaster_info()
            self.socket_dir = info.socket_dir
            self.system_user = server.system_user
            self.port = free_port()
            self.stop()
        pgserver.pg_ctl(
            [
                "-w",
                "-o", "-h 127.0.0.1",
                "-o", f"-p {self.port}",
                "-o", f"-k {self.socket_dir}",
                "-l", str(self.directory / "log"),
                "start",
            ],
            pgdata=self.directory,
            user=self.system_user,
            timeout=60,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop it: ``fast`` ends every session with an error to its client, as an operator's
        shutdown does; ``immediate`` as a crash would."""
        if not (self.directory / "postmaster.pid").exists():
            return  # not running
        pgserver.pg_ctl(
            ["-w", "-m", mode, "stop"], pgdata=self.directory, user=self.system_user, timeout=60
        )

    def dsn(self, how: str) -> str:
        if how == TCP:
            return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return f"postgresql://postgres:@/postgres?host={self.socket_dir}&port={self.port}"
