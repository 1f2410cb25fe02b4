"""The OpenAI-compatible HTTP backend against a fake chat-completions server on loopback.

The fake server is a real HTTP/1.1 server on 127.0.0.1 written here (no model weights exist on
this machine); it streams server-sent events the way vLLM and llama.cpp do, or misbehaves on
purpose.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import (
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from groundplane.node.backends import GenerateRequest, OpenAIBackend
from groundplane.node.engine import Engine, InferenceRequest
from groundplane.node.sessions import Turn

MODEL = "local-llama"
TOKENS = ["Orbit", "al", " compute", " is", " up", "."]
READ_TIMEOUT_S = 0.3
# A stalled server must be reported within the read timeout plus this much scheduling slack.
TIMEOUT_SLACK_S = 1.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeServer:
    """Answers every request according to ``mode``; records what it received."""

    mode: str = "stream"
    chunk_bytes: int | None = None
    received: list[Received] = field(default_factory=list)
    port: int = 0

    def sse(self) -> bytes:
        events = [
            ": keep-alive comment",
            "",
            "data: " + json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
            "",
        ]
        for token in TOKENS:
            chunk = {"choices": [{"index": 0, "delta": {"content": token}}]}
            events += ["data: " + json.dumps(chunk), ""]
        events += [
            "data: " + json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "x"}]}),
            "",
            "data: [DONE]",
            "",
        ]
        return ("\r\n".join(events) + "\r\n").encode()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode().split()
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode().strip()) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers["content-length"]))
            self.received.append(
                Received(request_line[0], request_line[1], headers, json.loads(body))
            )
            await self.respond(reader, writer)
        finally:
            writer.close()

    async def respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode.startswith("status-"):
            status = int(self.mode.removeprefix("status-"))
            error = json.dumps({"error": {"message": f"fake failure {status}", "code": status}})
            writer.write(
                f"HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\n"
                f"Retry-After: 7\r\nContent-Length: {len(error)}\r\n\r\n{error}".encode()
            )
            await writer.drain()
            return
        content_type = "application/json" if self.mode == "json" else "text/event-stream"
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        if self.mode == "stall":
            await writer.drain()
            await reader.read()  # silent until the client gives up and closes
            return
        payload = {
            "stream": self.sse(),
            "json": b'{"choices": []}',
            "malformed": b'data: {"choices": [{"delta": {"content": "ok"}}]}\n\ndata: {nope\n\n',
            "no-done": b'data: {"choices": [{"delta": {"content": "cut"}}]}\n\n',
        }[self.mode]
        size = self.chunk_bytes or len(payload)
        for offset in range(0, len(payload), size):
            piece = payload[offset : offset + size]
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    listener = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    fake.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield fake
        listener.close()


def backend_for(fake: FakeServer) -> OpenAIBackend:
    return OpenAIBackend(f"http://127.0.0.1:{fake.port}", [MODEL], read_timeout_s=READ_TIMEOUT_S)


async def collect(backend: OpenAIBackend, request: GenerateRequest) -> list[str]:
    return [piece async for piece in backend.generate(request)]


CONTEXT = (Turn("hello", "hi there"), Turn("where are you", "in low earth orbit"))


async def test_streams_the_servers_tokens_and_sends_the_context_as_messages(
    server: FakeServer,
) -> None:
    """The backend POSTs to /v1/chat/completions with stream=true, the model, max_tokens, the
    request id header and the context as alternating user/assistant messages followed by the
    prompt, and yields exactly the content deltas the server streamed (skipping role-only and
    final chunks and comments)."""
    request = GenerateRequest("req-42", MODEL, "what do you run", CONTEXT, max_tokens=12)
    pieces = await collect(backend_for(server), request)

    assert pieces == TOKENS
    (received,) = server.received
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    assert received.headers["x-request-id"] == "req-42"
    assert received.body["stream"] is True
    assert received.body["model"] == MODEL
    assert received.body["max_tokens"] == 12
    assert received.body["messages"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "where are you"},
        {"role": "assistant", "content": "in low earth orbit"},
        {"role": "user", "content": "what do you run"},
    ]


async def test_events_split_across_tiny_chunks_are_reassembled(server: FakeServer) -> None:
    """When the server's chunk boundaries fall inside lines and events (7-byte chunks), the
    backend still yields the same tokens."""
    server.chunk_bytes = 7
    pieces = await collect(backend_for(server), GenerateRequest("r", MODEL, "go"))
    assert pieces == TOKENS


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(500, Unavailable), (503, Unavailable), (404, NotFound), (400, InvalidArgument)],
)
async def test_http_errors_become_clear_groundplane_errors(
    server: FakeServer, status: int, error_type: type[Exception]
) -> None:
    """An HTTP error status becomes the matching groundplane error whose message names the
    backend URL, the status and the server's own error message."""
    server.mode = f"status-{status}"
    with pytest.raises(error_type, match=rf"127\.0\.0\.1.*HTTP {status}: fake failure {status}"):
        await collect(backend_for(server), GenerateRequest("r", MODEL, "go"))


async def test_rate_limiting_carries_the_servers_retry_after(server: FakeServer) -> None:
    """HTTP 429 becomes ResourceExhausted with retry_after_s taken from Retry-After."""
    server.mode = "status-429"
    with pytest.raises(ResourceExhausted) as info:
        await collect(backend_for(server), GenerateRequest("r", MODEL, "go"))
    assert info.value.retry_after_s == 7.0


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("malformed", "expected a JSON chat-completion chunk"),
        ("no-done", r"ended before 'data: \[DONE\]'"),
        ("json", "expected a text/event-stream"),
    ],
)
async def test_malformed_streams_are_reported(server: FakeServer, mode: str, message: str) -> None:
    """Invalid JSON in an event, a stream cut before [DONE] and a non-streaming answer each raise
    Unavailable saying what was expected."""
    server.mode = mode
    with pytest.raises(Unavailable, match=message):
        await collect(backend_for(server), GenerateRequest("r", MODEL, "go"))


async def test_a_stalled_server_times_out(server: FakeServer) -> None:
    """A server that sends headers and then nothing is reported as Unavailable after the read
    timeout (not hanging)."""
    server.mode = "stall"
    began = time.monotonic()
    with pytest.raises(Unavailable, match=f"did not respond within {READ_TIMEOUT_S} s"):
        await collect(backend_for(server), GenerateRequest("r", MODEL, "go"))
    assert time.monotonic() - began < READ_TIMEOUT_S + TIMEOUT_SLACK_S


async def test_an_unreachable_server_and_an_unknown_model_are_reported() -> None:
    """Connecting to a closed port raises Unavailable naming the URL; a model the backend is not
    configured for raises NotFound without any I/O; a non-HTTP URL is InvalidArgument."""
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    backend = OpenAIBackend(f"http://127.0.0.1:{port}", [MODEL])
    with pytest.raises(Unavailable, match=rf"cannot connect.*127\.0\.0\.1:{port}"):
        await collect(backend, GenerateRequest("r", MODEL, "go"))
    with pytest.raises(NotFound, match="'other'"):
        await collect(backend, GenerateRequest("r", "other", "go"))
    with pytest.raises(InvalidArgument, match="http:// or https://"):
        OpenAIBackend("ftp://example.org", [MODEL])


async def test_engine_sessions_over_the_http_backend(server: FakeServer) -> None:
    """Through the engine, the second turn of a session sends the first turn's prompt and
    streamed answer as context to the server."""
    clock = SimulatedClock(datetime(2026, 8, 15, tzinfo=UTC), speed=100.0)
    async with Engine(backend_for(server), clock) as engine:
        first = await engine.submit(InferenceRequest("a", MODEL, "hello", session_id="s"))
        await engine.submit(InferenceRequest("b", MODEL, "again", session_id="s"))
    assert first.text == "".join(TOKENS)
    assert server.received[1].body["messages"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "".join(TOKENS)},
        {"role": "user", "content": "again"},
    ]
