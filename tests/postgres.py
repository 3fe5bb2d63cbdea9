"""A Postgres server of a test's own, to stop and start under a live gateway.

The session's server is shared by every gateway of the suite; an outage test needs one that
nothing else uses. It runs pgserver's binaries, as the session's does, and listens on its own
Unix socket and on a free loopback port, so a test can reach it either way.
"""

from __future__ import annotations

import contextlib
import socket
import threading
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


class FaultyProxy:
    """A TCP proxy in front of a server, that can hang: every connection, open or new, then
    gets no answer at all (a server stopped, or a network that drops packets), until healed."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.hanging = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def hang(self) -> None:
        self.hanging.set()

    def heal(self) -> None:
        """Answer again; the connections that hung are cut (their clients see a reset)."""
        with self._lock:
            stuck, self._open = self._open, []
        self.hanging.clear()
        for sock in stuck:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.heal()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self._open.append(client)
            if self.hanging.is_set():
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            server = socket.create_connection(self.target)
            with self._lock:
                self._open.append(server)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not self.hanging.is_set():
                    sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _swallow(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass
