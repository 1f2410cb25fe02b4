"""The gateway's OpenAI-compatible HTTP front door: JSON over HTTP in, domain calls, JSON out.

The HTTP twin of :mod:`groundplane.gateway.servicer`: a Starlette app (served by uvicorn inside
the gateway's process and task group, :class:`HttpFrontDoor`) whose handlers turn requests into
:class:`~groundplane.gateway.service.InferCall` and call the same
:class:`~groundplane.gateway.service.InferenceGateway` the gRPC ``InferenceService`` calls, so
admission, idempotency, routing, retries, mid-stream failover and session turns are one code path
behind two protocols. Only this module knows HTTP.

Endpoints (``/v1`` is the base URL an OpenAI client is given):

* ``POST /v1/chat/completions`` — whole (``chat.completion``) or ``"stream": true`` as
  Server-Sent Events of ``chat.completion.chunk`` ending ``data: [DONE]``;
* ``POST /v1/completions`` — the same for a bare prompt (``text_completion``);
* ``GET /v1/models`` (and ``/v1/models/{model}``) — the models offered now by nodes the route
  table has in view over a usable link, each with the satellites (and stations) serving it.

What a request carries beyond OpenAI's fields:

* ``Authorization: Bearer <token>`` — the tenant, as for gRPC (the API key of an OpenAI client);
* ``X-Groundplane-Location: lat,lon[,alt_m]`` — the user; without it the tenant's default
  location (its :class:`~groundplane.gateway.auth.TenantConfig`), and a 400 when it has none;
* ``X-Groundplane-Session`` (or the body's ``user``) — a session: the gateway's session turns
  hold the conversation, so only the last user message is sent as the turn. Without a session
  the prompt is the one message's content, or the whole conversation as ``role: content`` lines;
* ``Idempotency-Key`` — a repeated request joins or replays the first one;
* ``X-Groundplane-Timeout: S`` — the call's deadline in seconds (default: the gateway's).

A reply names who served it: ``x-groundplane-satellite`` and ``x-groundplane-station`` (a stream
knows only the satellite of its first token when its headers go out; its last chunk, the one with
``finish_reason``, carries a ``groundplane`` field: request id, satellite, station, attempts).
``usage`` counts the prompt's whitespace-separated words (how the synthetic model counts context)
and the answer's tokens.

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, and the status
that goes with the domain error (:func:`error_status`): 401 no or a wrong key, 400 a malformed
request, 404 an unknown model, 429 admission refused (``Retry-After``), 503 nothing in view
(``Retry-After`` = wall seconds to the next AOS, ``x-groundplane-next-opportunity`` its instant),
504 the deadline ran out. An error after a stream began arrives as a last ``data: {"error": …}``
event, which OpenAI clients raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
import uvicorn
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from groundplane.gateway.auth import Tenant, TenantRegistry
from groundplane.gateway.execution import InferAnswer, Token
from groundplane.gateway.service import InferCall, InferenceGateway
from groundplane.gateway.sources import LinkWatch, RouteTableSource
from groundplane.kernel import tracing
from groundplane.kernel.clock import Clock, format_utc
from groundplane.kernel.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    GroundplaneError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from groundplane.node.client import OFFLINE, NodeDirectory
from groundplane.routing.client import RouteTable

_SCOPE = "groundplane.gateway"
log = structlog.get_logger("groundplane.gateway.http")

LOCATION_HEADER = "x-groundplane-location"
SESSION_HEADER = "x-groundplane-session"
IDEMPOTENCY_HEADER = "idempotency-key"
TIMEOUT_HEADER = "x-groundplane-timeout"
SATELLITE_HEADER = "x-groundplane-satellite"
STATION_HEADER = "x-groundplane-station"
NEXT_OPPORTUNITY_HEADER = "x-groundplane-next-opportunity"
OWNER = "groundplane"
SUMMARY_FIELD = "groundplane"
BACKLOG = 1024
"""Connections the kernel queues before uvicorn accepts them."""


# -- HTTP ↔ domain ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpError:
    """What an error becomes on HTTP: status, OpenAI error body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


_STATUSES: tuple[tuple[type[GroundplaneError], int, str, str], ...] = (
    (Unauthenticated, 401, "invalid_request_error", "invalid_api_key"),
    (PermissionDenied, 403, "permission_error", "permission_denied"),
    (NotFound, 404, "invalid_request_error", "model_not_found"),
    (InvalidArgument, 400, "invalid_request_error", "invalid_argument"),
    (FailedPrecondition, 400, "invalid_request_error", "failed_precondition"),
    (ResourceExhausted, 429, "rate_limit_error", "rate_limit_exceeded"),
    (Unavailable, 503, "service_unavailable", "no_satellite_reachable"),
    (DeadlineExceeded, 504, "timeout", "deadline_exceeded"),
)


def error_status(error: GroundplaneError) -> tuple[int, str, str]:
    """(HTTP status, OpenAI error type, code) of a domain error (500 for any other)."""
    for kind, status, name, code in _STATUSES:
        if isinstance(error, kind):
            return status, name, code
    return 500, "server_error", "internal"


def http_error(error: GroundplaneError, clock: Clock, *, param: str | None = None) -> HttpError:
    """The status, body and headers of ``error``; ``Retry-After`` (whole seconds, rounded up, as
    HTTP wants) and ``retry-after-ms`` (which OpenAI clients prefer) when it carries a delay."""
    status, kind, code = error_status(error)
    headers: dict[str, str] = {}
    delay_s: float | None = None
    if isinstance(error, ResourceExhausted) and error.retry_after_s is not None:
        delay_s = error.retry_after_s
    if isinstance(error, Unavailable) and error.next_opportunity is not None:
        headers[NEXT_OPPORTUNITY_HEADER] = format_utc(error.next_opportunity)
        delay_s = (error.next_opportunity - clock.now()).total_seconds() / clock.speed
    if delay_s is not None:
        delay_s = max(0.0, delay_s)
        headers["retry-after"] = str(max(1, math.ceil(delay_s)))
        headers["retry-after-ms"] = str(math.ceil(delay_s * 1e3))
    body = {"error": {"message": error.message, "type": kind, "param": param, "code": code}}
    return HttpError(status, body, headers)


def parse_location(value: str) -> tuple[float, float]:
    """``lat,lon[,alt_m]`` in degrees (and metres) → (lat, lon); InvalidArgument otherwise."""
    parts = [p.strip() for p in value.split(",")]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (2, 3) or not all(math.isfinite(n) for n in numbers):
        raise InvalidArgument(
            f"header X-Groundplane-Location: expected 'lat,lon' or 'lat,lon,alt_m' in degrees "
            f"(and metres), got {value!r}"
        )
    lat, lon = numbers[0], numbers[1]
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise InvalidArgument(
            f"header X-Groundplane-Location: expected latitude within ±90° and longitude "
            f"within ±180°, got {lat}, {lon}"
        )
    return lat, lon


def _text_of(content: object, where: str) -> str:
    """A message's content: a string, or a list of ``{"type": "text", "text": …}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not (
                isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            ):
                raise InvalidArgument(
                    f"{where}: only text content parts are supported "
                    f'({{"type": "text", "text": "…"}}), got {part!r:.80}'
                )
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidArgument(f"{where}: expected a string or a list of text parts, got {content!r}")


def chat_prompt(messages: object, *, session: bool) -> str:
    """The prompt of a chat request (see the module doc: a session sends its last user
    message; otherwise one message's content or the conversation as ``role: content`` lines)."""
    if not isinstance(messages, list) or not messages:
        raise InvalidArgument("messages: expected a non-empty list of {role, content} objects")
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidArgument(
                f"messages[{index}]: expected an object with a 'role' and a 'content'"
            )
        turns.append((message["role"], _text_of(message.get("content"), f"messages[{index}]")))
    if session:
        for role, text in reversed(turns):
            if role == "user":
                return text
        raise InvalidArgument("messages: a session turn needs a message with role 'user'")
    if len(turns) == 1:
        return turns[0][1]
    return "\n".join(f"{role}: {text}" for role, text in turns)


def _field(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        expected = " or ".join(k.__name__ for k in kinds)
        raise InvalidArgument(f"{name}: expected {expected}, got {value!r:.80}")
    return value


def _location(
    header: str | None, tenant: Tenant, default: tuple[float, float] | None
) -> tuple[float, float]:
    if header is not None:
        return parse_location(header)
    if default is not None:
        return default
    raise InvalidArgument(
        f"tenant {tenant.tenant_id!r} has no default location: send the user's location as "
        "header X-Groundplane-Location: lat,lon[,alt_m]"
    )


def _timeout_s(header: str | None) -> float | None:
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidArgument(
            f"header X-Groundplane-Timeout: expected positive seconds, got {header!r}"
        )
    return seconds


@dataclass(frozen=True, slots=True)
class HttpCall:
    """A parsed request: the domain call, its deadline and how to answer it."""

    call: InferCall
    remaining_s: float | None
    stream: bool
    include_usage: bool


def parse_body(raw: bytes) -> object:
    """The JSON document of a request body; InvalidArgument when it is not one (not JSON, not
    UTF-8, nested deeper than the decoder's recursion limit, or an integer longer than Python's
    int-string digit limit: all of them a caller's mistake, none a server error)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise InvalidArgument(f"the request body is not JSON ({error})") from None


def call_from_http(
    body: object,
    headers: Mapping[str, str],
    tenant: Tenant,
    *,
    chat: bool,
    default_location: tuple[float, float] | None = None,
) -> HttpCall:
    """The :class:`InferCall` of a ``/v1/chat/completions`` (``chat``) or ``/v1/completions``
    body and its headers; InvalidArgument naming the first thing wrong. ``default_location``
    is the tenant's (used without an ``X-Groundplane-Location`` header)."""
    if not isinstance(body, dict):
        raise InvalidArgument("expected a JSON object as the request body")
    model = _field(body, "model", str, "")
    if not model:
        raise InvalidArgument("model: required, the name of a model (GET /v1/models lists them)")
    if _field(body, "n", int, 1) != 1:
        raise InvalidArgument("n: only one choice per request is supported")
    session_id = headers.get(SESSION_HEADER) or _field(body, "user", str, "")
    if chat:
        prompt = chat_prompt(body.get("messages"), session=bool(session_id))
    else:
        raw = body.get("prompt")
        if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
            raw = raw[0]
        if not isinstance(raw, str):
            raise InvalidArgument("prompt: expected a string (one prompt per request)")
        prompt = raw
    max_tokens = _field(body, "max_completion_tokens", int, 0) or _field(body, "max_tokens", int, 0)
    lat, lon = _location(headers.get(LOCATION_HEADER), tenant, default_location)
    remaining_s = _timeout_s(headers.get(TIMEOUT_HEADER))
    options = _field(body, "stream_options", dict, {})
    return HttpCall(
        InferCall(
            model=model,
            prompt=prompt,
            lat_deg=lat,
            lon_deg=lon,
            session_id=session_id,
            idempotency_key=headers.get(IDEMPOTENCY_HEADER, ""),
            max_tokens=max_tokens,
        ),
        remaining_s,
        stream=_field(body, "stream", bool, False),
        include_usage=bool(options.get("include_usage", False)),
    )


def usage(call: InferCall, answer: InferAnswer) -> dict[str, int]:
    prompt_tokens = len(call.prompt.split())
    completion_tokens = len(answer.tokens)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def summary(answer: InferAnswer) -> dict[str, Any]:
    """Who served a streamed answer (the last chunk's ``groundplane`` field): after a failover
    mid-stream, the satellite that finished it."""
    return {
        "request_id": answer.request_id,
        "satellite_id": answer.satellite_id,
        "station_id": answer.station_id,
        "attempts": answer.attempts,
    }


def finish_reason(call: InferCall, answer: InferAnswer) -> str:
    return "length" if call.max_tokens and len(answer.tokens) >= call.max_tokens else "stop"


def answer_to_http(
    http: HttpCall, answer: InferAnswer, created_s: int, *, chat: bool
) -> dict[str, Any]:
    """The ``chat.completion`` or ``text_completion`` body of a whole answer."""
    reason = finish_reason(http.call, answer)
    choice: dict[str, Any] = (
        {
            "index": 0,
            "message": {"role": "assistant", "content": answer.text},
            "finish_reason": reason,
        }
        if chat
        else {"index": 0, "text": answer.text, "logprobs": None, "finish_reason": reason}
    )
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{answer.request_id}",
        "object": "chat.completion" if chat else "text_completion",
        "created": created_s,
        "model": answer.model,
        "choices": [choice],
        "usage": usage(http.call, answer),
    }


@dataclass(frozen=True, slots=True)
class Chunks:
    """The streamed chunks of one completion: ``chat.completion.chunk`` (``chat``) or
    ``text_completion``, one choice each."""

    completion_id: str
    created_s: int
    chat: bool

    def chunk(
        self, model: str, *, text: str | None = None, role: bool = False, reason: str | None = None
    ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, str] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created_s,
            "model": model,
            "choices": [choice],
        }

    def usage(self, model: str, call: InferCall, answer: InferAnswer) -> dict[str, Any]:
        """The last chunk when the caller asked for usage: no choice, the counts."""
        last = self.chunk(model)
        last["choices"] = []
        last["usage"] = usage(call, answer)
        return last


def offered_models(
    table: RouteTable | None, usable: Callable[[str, str], bool] = lambda _sat, _st: True
) -> dict[str, list[tuple[str, str]]]:
    """Model → the (satellite, station) paths of ``table`` that serve it now: in view, no
    exclusion (link up, node live, …) and ``usable(satellite, station)``; sorted."""
    offered: dict[str, set[tuple[str, str]]] = {}
    if table is None:
        return {}
    for routes in table.stations:
        for path in routes.paths:
            if path.exclusion is not None or not usable(path.satellite_id, path.station_id):
                continue
            for model in path.models:
                offered.setdefault(model, set()).add((path.satellite_id, path.station_id))
    return {model: sorted(paths) for model, paths in sorted(offered.items())}


def model_to_http(model: str, paths: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": OWNER,
        "satellites": [{"satellite_id": sat, "station_id": station} for sat, station in paths],
    }


# -- the ASGI app ----------------------------------------------------------------------------------


class HttpApi:
    """The Starlette app over one :class:`InferenceGateway` (see the module doc)."""

    def __init__(
        self,
        gateway: InferenceGateway,
        tenants: TenantRegistry,
        tables: RouteTableSource,
        *,
        links: LinkWatch | None = None,
        directory: NodeDirectory | None = None,
    ) -> None:
        self.gateway = gateway
        self.tenants = tenants
        self.tables = tables
        self.links = links
        self.directory = directory
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/models/{model:path}", self.model, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_exception},
        )

    # -- errors

    def _error(self, error: GroundplaneError) -> JSONResponse:
        shaped = http_error(error, self.gateway.clock)
        return JSONResponse(shaped.body, status_code=shaped.status, headers=shaped.headers)

    async def _http_exception(self, _request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            {"error": {"message": str(exc.detail), "type": kind, "param": None, "code": None}},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    def _authenticate(self, request: Request) -> Tenant:
        return self.tenants.authenticate(request.headers.get("authorization"))

    # -- models

    def _offered(self) -> dict[str, list[tuple[str, str]]]:
        return offered_models(self.tables.current(), self._usable)

    def _usable(self, satellite_id: str, station_id: str) -> bool:
        if self.links is not None and self.links.is_down(station_id, satellite_id):
            return False
        if self.directory is not None:
            view = self.directory.get(satellite_id)
            if view is not None and view.state == OFFLINE:
                return False
        return True

    async def models(self, request: Request) -> Response:
        try:
            self._authenticate(request)
        except GroundplaneError as error:
            return self._error(error)
        data = [model_to_http(m, paths) for m, paths in self._offered().items()]
        return JSONResponse({"object": "list", "data": data})

    async def model(self, request: Request) -> Response:
        try:
            self._authenticate(request)
            name = request.path_params["model"]
            paths = self._offered().get(name)
            if paths is None:
                raise NotFound(
                    f"model {name!r} is not offered by any satellite in view now "
                    f"(offered: {', '.join(self._offered()) or 'none'})"
                )
        except GroundplaneError as error:
            return self._error(error)
        return JSONResponse(model_to_http(name, paths))

    # -- completions

    async def chat_completions(self, request: Request) -> Response:
        return await self._complete(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._complete(request, chat=False)

    async def _complete(self, request: Request, *, chat: bool) -> Response:
        # The HTTP call's server span (None unless tracing is on), continuing a caller's W3C
        # `traceparent` header: the attempts and the node's span below are its children.
        traced = tracing.start_span(
            _SCOPE,
            f"POST {request.url.path}",
            parent=tracing.remote_context((), request.headers.get(tracing.TRACEPARENT, "")),
            attributes={"http.request.method": "POST", "url.path": request.url.path},
        )

        async def answered() -> Response:
            response = await self._answer(request, chat=chat)
            if traced is not None:
                traced.set_attribute("http.response.status_code", response.status_code)
            return response

        # A streamed answer's span ends with its first event (the routing decision and the
        # attempt that produced it); the rest of the stream is the attempt's.
        return await tracing.within(traced, answered())

    async def _answer(self, request: Request, *, chat: bool) -> Response:
        try:
            tenant = self._authenticate(request)
            body = parse_body(await request.body())
            http = call_from_http(
                body,
                request.headers,
                tenant,
                chat=chat,
                default_location=self.tenants.location(tenant),
            )
            created_s = int(self.gateway.clock.now().timestamp())
            if http.stream:
                return await self._stream(http, tenant, created_s, chat=chat)
            answer = await self.gateway.infer(http.call, tenant, http.remaining_s)
        except GroundplaneError as error:
            return self._error(error)
        return JSONResponse(
            answer_to_http(http, answer, created_s, chat=chat),
            headers={SATELLITE_HEADER: answer.satellite_id, STATION_HEADER: answer.station_id},
        )

    async def _stream(
        self, http: HttpCall, tenant: Tenant, created_s: int, *, chat: bool
    ) -> Response:
        """Pull the first event before answering, so an error before the first token is an HTTP
        status; then stream the rest as Server-Sent Events."""
        events = self.gateway.stream(http.call, tenant, http.remaining_s)
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        chunks = Chunks(f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", created_s, chat)
        model = http.call.model
        headers = {SATELLITE_HEADER: first.satellite_id}
        if isinstance(first, InferAnswer):
            headers[STATION_HEADER] = first.station_id

        async def sse() -> AsyncIterator[str]:
            async with contextlib.aclosing(events) as rest:
                if chat:
                    yield _json(chunks.chunk(model, role=True, text=""))
                item = first
                while isinstance(item, Token):
                    yield _json(chunks.chunk(model, text=item.text))
                    try:
                        item = await anext(rest)
                    except GroundplaneError as error:
                        log.info("gateway_http_stream_failed", error=error.message)
                        yield _json(http_error(error, self.gateway.clock).body)
                        return
                last = chunks.chunk(item.model, reason=finish_reason(http.call, item))
                last[SUMMARY_FIELD] = summary(item)
                yield _json(last)
                if http.include_usage:
                    yield _json(chunks.usage(item.model, http.call, item))
            yield "[DONE]"

        # The background close releases the call (admission, in-flight counts) even when the
        # client went away before the body was sent.
        return EventSourceResponse(
            sse(), headers=headers, sep="\n", ping=None, background=BackgroundTask(events.aclose)
        )


def _json(data: object) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


# -- the server ------------------------------------------------------------------------------------


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the gateway's process owns SIGTERM/SIGINT and
    stops the server through :meth:`HttpFrontDoor.stop` as part of its drain."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) → (host, port); InvalidArgument otherwise."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidArgument(f"expected the HTTP listen address as HOST:PORT, got {address!r}")
    return host, int(port)


class HttpFrontDoor:
    """uvicorn serving :class:`HttpApi` on ``address`` (``host:port``; port 0 = a free one).

    :meth:`bind` opens the listening socket (connections queue from then on; an address in use
    is an :class:`InvalidArgument` naming it), :meth:`serve` runs uvicorn on it until
    :meth:`stop`, which lets in-flight requests finish within ``drain_grace_s`` and then cancels
    them. Run :meth:`serve` as a task of the owner's task group.
    """

    def __init__(self, api: HttpApi, address: str, *, drain_grace_s: float = 5.0) -> None:
        self.api = api
        self.address = address
        self._host, self._port = split_address(address)
        self._socket: socket.socket | None = None
        self._bound_port: int | None = None
        self._server = _EmbeddedServer(
            uvicorn.Config(
                api.app,
                lifespan="off",
                log_config=None,
                access_log=False,
                server_header=False,
                timeout_graceful_shutdown=max(1, math.ceil(drain_grace_s)),
            )
        )
        self._stopped = asyncio.Event()
        self._serving = False

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # IPPROTO_TCP named, not 0 (what socket.create_server passes): asyncio turns Nagle off
        # (TCP_NODELAY) only on sockets whose proto says TCP, and an accepted socket inherits
        # the listener's. With Nagle on, uvicorn's two writes per response (head, body) wait
        # for the client's delayed ACK: 40 ms a request.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(BACKLOG)
        except OSError as error:
            sock.close()
            raise InvalidArgument(
                f"the HTTP front door cannot listen on {self.address}: {error.strerror}"
            ) from None
        sock.setblocking(False)
        self._socket = sock
        self._bound_port = int(sock.getsockname()[1])

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("the HTTP front door is not bound; call bind() first")
        return self._bound_port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``: what an OpenAI client takes as ``base_url``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/v1"

    async def serve(self) -> None:
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        log.info("gateway_http_serving", base_url=self.base_url)
        self._serving = True
        try:
            await self._server.serve(sockets=[self._socket])
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests (within the drain grace), return."""
        self._server.should_exit = True
        if self._serving:
            await self._stopped.wait()
        elif self._socket is not None:
            self._socket.close()
