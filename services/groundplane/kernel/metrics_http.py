"""Serving one component's Prometheus registry at ``GET /metrics``.

Every component that has metrics keeps them in a :class:`prometheus_client.CollectorRegistry`
of its own (never the process-wide default), so several components in one process, as
``groundplane up`` runs them, and tests never share or collide on a series. :class:`MetricsServer`
serves one such registry::

    async with MetricsServer(registry, host="127.0.0.1", port=0) as server:
        print(server.port)   # the bound port (port 0 asks the system for a free one)

The body is prometheus_client's own exposition (``make_wsgi_app``: text format 0.0.4, or
OpenMetrics when the scraper asks for it, gzip when accepted) on the standard library's WSGI
server, one thread per request, all of it in a thread this object starts and joins. Any path
other than ``/metrics`` is 404. Leaving the ``async with`` stops accepting, waits for the
requests being answered (each bounded by :data:`REQUEST_TIMEOUT_S`) and joins the threads.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from groundplane.kernel.errors import InvalidArgument

__all__ = ["METRICS_PATH", "REQUEST_TIMEOUT_S", "MetricsServer"]

METRICS_PATH = "/metrics"
REQUEST_TIMEOUT_S = 5.0
"""Wall seconds a scraper may take to send its request or read the answer."""
POLL_INTERVAL_S = 0.1
"""How often the serving thread looks for a stop (the most a stop waits on an idle server)."""

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def only_metrics_path(app: WsgiApp) -> WsgiApp:
    """``app`` at :data:`METRICS_PATH`; 404 anywhere else (prometheus_client answers any path)."""

    def routed(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == METRICS_PATH:
            return app(environ, start_response)
        body = f"not found: metrics are served at {METRICS_PATH}\n".encode()
        start_response(
            "404 Not Found",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return routed


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (the scraper's own log has it); a bounded wait on the socket."""

    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingWSGIServer):
    # Request threads are joined on close (so a stop leaves none behind); each is bounded by
    # the handler's socket timeout.
    daemon_threads = False
    block_on_close = True


def _family(host: str, port: int) -> socket.AddressFamily:
    """IPv4 or IPv6, whichever ``host`` resolves to first."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise InvalidArgument(
            f"the metrics host {host!r} does not resolve ({error}); give an address such as "
            "127.0.0.1 or ::1 (gateway: metrics_host)"
        ) from error
    return infos[0][0]


class MetricsServer:
    """``GET /metrics`` for one registry, over HTTP on ``host``:``port`` (an async context
    manager; see the module doc)."""

    def __init__(self, registry: CollectorRegistry, *, host: str, port: int) -> None:
        if not 0 <= port <= 65535:
            raise InvalidArgument(
                f"the metrics port must be 0..65535 (0 = a free port), got {port}"
            )
        self.registry = registry
        self.host = host
        self._port = port
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the free one the system chose when asked for port 0)."""
        if self._httpd is None:
            raise RuntimeError("the metrics server is not started; use `async with`")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{METRICS_PATH}"

    async def __aenter__(self) -> Self:
        # Name resolution and the bind (wsgiref looks up the host's name) block: off the loop.
        httpd = await asyncio.to_thread(self._bind)
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL_S},
            name=f"metrics-http:{httpd.server_address[1]}",
        )
        thread.start()
        self._httpd, self._thread = httpd, thread
        return self

    def _bind(self) -> WSGIServer:
        family = _family(self.host, self._port)

        class BoundServer(_Server):
            address_family = family

        try:
            return make_server(
                self.host,
                self._port,
                only_metrics_path(make_wsgi_app(self.registry)),
                server_class=BoundServer,
                handler_class=_QuietHandler,
            )
        except OSError as error:
            raise InvalidArgument(
                f"cannot listen for metrics on {self.host}:{self._port} ({error}); choose a "
                "free port or 0 for any (gateway: metrics_port)"
            ) from error

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None or thread is None:
            return
        await asyncio.to_thread(self._stop, httpd, thread)

    @staticmethod
    def _stop(httpd: WSGIServer, thread: threading.Thread) -> None:
        httpd.shutdown()
        thread.join()
        httpd.server_close()
