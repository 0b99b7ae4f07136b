"""Network stand-ins for the media tests: a trap listener, a backend, a fake resolver."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass
class Trap:
    """A listening socket on 127.0.0.1 that nothing may ever connect to."""

    sock: socket.socket

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def connected(self) -> bool:
        """True if any connection reached the socket (the kernel queues it for accept)."""
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


@dataclass
class FakeResolver:
    """A DNS stand-in: a list of answers per name, the next one on each lookup."""

    answers: dict[str, list[list[str]]]
    lookups: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.answers:
            raise OSError(f"no such host: {host}")
        queue = self.answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]
