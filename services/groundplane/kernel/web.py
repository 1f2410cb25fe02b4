"""uvicorn inside a groundplane process: the process keeps its signals, and the listening
socket is bound by the owner with Nagle's algorithm off.

The gateway's HTTP front door and the dashboard both run an ASGI app on uvicorn as a task of
their own TaskGroup. :class:`EmbeddedServer` leaves SIGTERM/SIGINT to the process
(``run_service`` drains and then stops the server through ``should_exit``);
:func:`listen_tcp` binds before uvicorn runs, so an address in use is the owner's error to
explain (uvicorn exits the process when its own bind fails).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn

#: Pending connections a listening socket queues.
BACKLOG = 1024


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers (the owning process handles them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen_tcp(host: str, port: int, *, backlog: int = BACKLOG) -> socket.socket:
    """A non-blocking listening TCP socket on ``host:port`` (port 0: a free one); OSError when
    the address cannot be bound.

    The socket is made with ``IPPROTO_TCP`` named, not 0 (what ``socket.create_server``
    passes): asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP, and an
    accepted socket inherits the listener's. With Nagle on, uvicorn's two writes per response
    (head, body) wait for the client's delayed ACK: 40 ms a request.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
