"""Network helpers for tests: loopback only."""

from __future__ import annotations

import socket


def closed_port() -> int:
    """A 127.0.0.1 port that was free a moment ago: nothing listens there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
