"""The node's OpenAI-compatible backend (httpx) against a local chat-completions server.

The server is a small Starlette app on uvicorn on 127.0.0.1 (a free port), written here: no model
weights exist on this machine. It answers the way vLLM and llama.cpp's server do (server-sent
``chat.completion.chunk`` events, ``data: [DONE]``, the usage chunk of
``stream_options.include_usage``, OpenAI error JSON), or misbehaves on purpose. It records every
request and the client port it came from, so connections are counted at the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from groundplane.cli.serve_nodes import (
    NodesSettings,
    api_key,
    nodes_service,
    openai_backend,
    register,
)
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from groundplane.mqtt.broker import PrivateBroker
from groundplane.node.backends import GenerateRequest, OpenAIBackend, Usage
from groundplane.node.directory import ONLINE, NodeDirectory
from groundplane.node.engine import Engine, InferenceRequest
from groundplane.node.sessions import Turn
from groundplane.node.v1 import node_pb2

from .test_serve_nodes import Scene, ground

MODEL = "local-llama"
TOKENS = ["Orbit", "al", " compute", " is", " up", "."]
API_KEY = "sk-test-right-key"
READ_TIMEOUT_S = 0.3
# A stalled server must be reported within the timeout plus this much scheduling slack.
TIMEOUT_SLACK_S = 1.0
DRIP_S = 0.05
"""Pause between the pieces of a server that streams forever (each well within the read timeout)."""
WAIT_S = 20.0


ERROR_EVENTS: dict[str, dict[str, Any]] = {
    "error-event": {"error": {"message": "CUDA out of memory", "type": "Internal", "code": 500}},
    "error-object": {"object": "error", "message": "CUDA out of memory", "code": 500},
}
"""The two shapes of vLLM's error event after a 200 (newer, older), each followed by [DONE]."""


class Hangup(Exception):
    """Raised by the test server mid-answer: uvicorn then closes the connection."""


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    client_port: int


def sse(document: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def words(messages: list[dict[str, str]]) -> int:
    return sum(len(message["content"].split()) for message in messages)


@dataclass
class ChatServer:
    """A chat-completions server whose behaviour is ``mode``; it records what it received."""

    mode: str = "stream"
    api_key: str | None = None
    retry_after: str = "7"
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def connections(self) -> int:
        """Distinct TCP connections the requests came over (by client port)."""
        return len({seen.client_port for seen in self.seen})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/models", self.list_models, methods=["GET"]),
            ]
        )

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        body = {"error": {"message": message, "type": "test_error", "code": status}}
        return JSONResponse(body, status_code=status, headers=headers)

    async def list_models(self, request: Request) -> Response:
        data = [{"id": name, "object": "model"} for name in (MODEL, "other-model")]
        return JSONResponse({"object": "list", "data": data})

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        assert request.client is not None
        self.seen.append(Seen(request.url.path, dict(request.headers), body, request.client.port))
        if self.api_key is not None and request.headers.get("authorization") != (
            f"Bearer {self.api_key}"
        ):
            return self.error(401, "Incorrect API key provided")
        if self.mode.startswith("status-"):
            status = int(self.mode.removeprefix("status-"))
            headers = {"Retry-After": self.retry_after} if status == 429 else None
            return self.error(status, f"test failure {status}", headers)
        if self.mode == "slow-headers":
            await self.release.wait()  # silent until the test ends
            return self.error(500, "too late")
        if not body.get("stream"):
            return JSONResponse(self.completion(body))
        return StreamingResponse(self.events(body), media_type="text/event-stream")

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(TOKENS)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": words(body["messages"]), "completion_tokens": len(TOKENS)},
        }

    async def events(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        mode = self.mode
        yield b": keep-alive comment\n\n"
        yield sse(chunk({"role": "assistant", "content": ""}))
        if mode == "drip":
            while True:  # until the client gives up
                await asyncio.sleep(DRIP_S)
                yield sse(chunk({"content": " more"}))
        for index, token in enumerate(TOKENS):
            if index == 2 and mode == "cut":
                raise Hangup("the server goes away mid-answer")
            if index == 2 and mode in ERROR_EVENTS:
                yield sse(ERROR_EVENTS[mode])
                yield b"data: [DONE]\n\n"
                return
            if index == 2 and mode == "stall":
                await self.release.wait()  # silent until the test ends
                return
            event = sse(chunk({"content": token}))
            if mode == "tiny":  # boundaries inside lines and events
                for offset in range(0, len(event), 7):
                    yield event[offset : offset + 7]
            else:
                yield event
        if mode == "no-done":
            return  # a clean end of the body, but no finish_reason and no [DONE]
        yield sse(chunk({}, finish_reason="stop"))
        if body.get("stream_options", {}).get("include_usage"):
            usage = {"prompt_tokens": words(body["messages"]), "completion_tokens": len(TOKENS)}
            yield sse({"object": "chat.completion.chunk", "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"


@asynccontextmanager
async def serving(mode: str = "stream", *, api_key: str | None = None) -> AsyncIterator[ChatServer]:
    """The chat server on uvicorn on a free 127.0.0.1 port (listening before this yields)."""
    chat = ChatServer(mode=mode, api_key=api_key)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    chat.port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            chat.app(),
            http="h11",
            lifespan="off",
            log_config=None,
            log_level="critical",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(server.serve(sockets=[listener]), name="test-chat-server")
            try:
                yield chat
            finally:
                chat.release.set()
                server.should_exit = True
    finally:
        listener.close()


def backend_for(chat: ChatServer, **options: Any) -> OpenAIBackend:
    options.setdefault("read_timeout_s", READ_TIMEOUT_S)
    return OpenAIBackend(chat.base_url, [MODEL], **options)


async def collect(backend: OpenAIBackend, request: GenerateRequest) -> list[str]:
    return [piece async for piece in backend.generate(request)]


CONTEXT = (Turn("hello", "hi there"), Turn("where are you", "in low earth orbit"))
EXPECTED_MESSAGES = [
    {"role": "user", "content": "hello"},
    {"role": "assistant", "content": "hi there"},
    {"role": "user", "content": "where are you"},
    {"role": "assistant", "content": "in low earth orbit"},
    {"role": "user", "content": "what do you run"},
]


async def test_streams_the_chunks_with_the_context_as_messages_and_counts_usage() -> None:
    """The backend POSTs to {base}/chat/completions with stream=true, include_usage, the model,
    max_tokens, the request id and the context as alternating user/assistant messages, and yields
    exactly the streamed content deltas (not the role-only, final or usage chunks, nor comments);
    the usage chunk's counts are added to the backend's totals."""
    request = GenerateRequest("req-42", MODEL, "what do you run", CONTEXT, max_tokens=12)
    async with serving() as chat, backend_for(chat) as backend:
        pieces = await collect(backend, request)
        assert pieces == TOKENS
        assert backend.usage == Usage(prompt_tokens=14, completion_tokens=len(TOKENS))
    (seen,) = chat.seen
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["x-request-id"] == "req-42"
    assert seen.headers["accept"] == "text/event-stream"
    assert seen.body["stream"] is True
    assert seen.body["stream_options"] == {"include_usage": True}
    assert (seen.body["model"], seen.body["max_tokens"]) == (MODEL, 12)
    assert seen.body["messages"] == EXPECTED_MESSAGES


async def test_a_non_streaming_answer_is_one_piece_with_its_usage() -> None:
    """With stream=False the backend asks for a whole chat completion (no stream_options) and
    yields its message content as one piece; its usage is counted."""
    request = GenerateRequest("r", MODEL, "what do you run", CONTEXT)
    async with serving() as chat, backend_for(chat, stream=False) as backend:
        assert await collect(backend, request) == ["".join(TOKENS)]
        assert backend.usage == Usage(prompt_tokens=14, completion_tokens=len(TOKENS))
    (seen,) = chat.seen
    assert seen.body["stream"] is False
    assert "stream_options" not in seen.body
    assert seen.headers["accept"] == "application/json"


async def test_engine_counts_the_streamed_tokens_and_keeps_the_session() -> None:
    """Through the engine, the answer's output tokens are the streamed chunks (as many as the
    server's usage says), and a session's second turn sends the first turn's prompt and streamed
    answer as context; events cut into 7-byte pieces are reassembled."""
    clock = SimulatedClock(datetime(2026, 8, 15, tzinfo=UTC), speed=100.0)
    async with serving("tiny") as chat, backend_for(chat) as backend:
        async with Engine(backend, clock) as engine:
            first = await engine.submit(InferenceRequest("a", MODEL, "hello", session_id="s"))
            await engine.submit(InferenceRequest("b", MODEL, "again", session_id="s"))
        assert first.text == "".join(TOKENS)
        assert first.output_tokens == len(TOKENS)
        assert backend.usage.completion_tokens == 2 * first.output_tokens
    assert chat.seen[1].body["messages"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "".join(TOKENS)},
        {"role": "user", "content": "again"},
    ]


HTTP_ERRORS: dict[int, type[Exception]] = {
    500: Unavailable,
    503: Unavailable,
    404: NotFound,
    400: InvalidArgument,
    403: FailedPrecondition,
}


async def test_http_errors_become_clear_groundplane_errors() -> None:
    """Each HTTP error status becomes the matching groundplane error whose message names the
    backend URL, the status and the server's own error message."""
    async with serving() as chat, backend_for(chat) as backend:
        for status, error_type in HTTP_ERRORS.items():
            chat.mode = f"status-{status}"
            expected = rf"127\.0\.0\.1.*HTTP {status}: test failure {status}"
            with pytest.raises(error_type, match=expected):
                await collect(backend, GenerateRequest("r", MODEL, "go"))


async def test_a_wrong_api_key_is_a_credentials_error_and_the_right_one_is_sent() -> None:
    """HTTP 401 (the server refuses the key) becomes FailedPrecondition pointing at the node's
    credentials; with the right key the same server answers, so the key is sent as a bearer."""
    async with serving(api_key=API_KEY) as chat:
        async with backend_for(chat, api_key="sk-wrong") as wrong:
            with pytest.raises(
                FailedPrecondition, match=r"HTTP 401: Incorrect API key.*backend credentials"
            ):
                await collect(wrong, GenerateRequest("r", MODEL, "go"))
        async with backend_for(chat, api_key=API_KEY) as right:
            assert await collect(right, GenerateRequest("r", MODEL, "go")) == TOKENS


async def test_rate_limiting_carries_the_servers_retry_after() -> None:
    """HTTP 429 becomes ResourceExhausted with retry_after_s taken from Retry-After, in seconds
    or as an HTTP date 30 s after the response's Date header (uvicorn's, which may lag the wall
    clock by up to a second); without the header it is None."""
    async with serving("status-429") as chat, backend_for(chat) as backend:
        with pytest.raises(ResourceExhausted, match="HTTP 429") as info:
            await collect(backend, GenerateRequest("r", MODEL, "go"))
        assert info.value.retry_after_s == 7.0
        chat.retry_after = formatdate(time.time() + 30, usegmt=True)
        with pytest.raises(ResourceExhausted) as info:
            await collect(backend, GenerateRequest("r", MODEL, "go"))
        assert info.value.retry_after_s is not None
        assert 29.0 <= info.value.retry_after_s <= 32.0
        chat.retry_after = ""
        with pytest.raises(ResourceExhausted) as info:
            await collect(backend, GenerateRequest("r", MODEL, "go"))
        assert info.value.retry_after_s is None


@pytest.mark.parametrize(
    ("mode", "doing"),
    [("slow-headers", "waiting for the response headers"), ("stall", "after 2 pieces")],
)
async def test_a_silent_server_hits_the_read_timeout(mode: str, doing: str) -> None:
    """A server silent before its headers, or silent after two pieces, is reported as
    Unavailable after the read timeout, saying where it stopped (not hanging)."""
    async with serving(mode) as chat, backend_for(chat) as backend:
        began = time.monotonic()
        pieces: list[str] = []
        with pytest.raises(
            Unavailable, match=f"did not respond within {READ_TIMEOUT_S} s.*{doing}"
        ):
            async for piece in backend.generate(GenerateRequest("r", MODEL, "go")):
                pieces.append(piece)
        assert time.monotonic() - began < READ_TIMEOUT_S + TIMEOUT_SLACK_S
    assert pieces == ([] if mode == "slow-headers" else TOKENS[:2])


async def test_the_requests_deadline_and_the_total_timeout_cut_an_endless_answer() -> None:
    """A server that keeps streaming (never silent for a read timeout) is cut at the request's
    own timeout_s with DeadlineExceeded, and without one at the backend's total timeout with
    Unavailable."""
    budget_s = 0.4
    async with serving("drip") as chat:
        async with backend_for(chat) as backend:
            began = time.monotonic()
            with pytest.raises(DeadlineExceeded, match="'r1' reached its deadline"):
                await collect(backend, GenerateRequest("r1", MODEL, "go", timeout_s=budget_s))
            assert budget_s <= time.monotonic() - began < budget_s + TIMEOUT_SLACK_S
            with pytest.raises(DeadlineExceeded, match="before the backend"):
                await collect(backend, GenerateRequest("r2", MODEL, "go", timeout_s=0.0))
        async with backend_for(chat, total_timeout_s=budget_s) as capped:
            with pytest.raises(Unavailable, match=f"total timeout of {budget_s} s"):
                await collect(capped, GenerateRequest("r3", MODEL, "go"))


async def test_the_engine_gives_the_backend_the_time_left_before_the_deadline() -> None:
    """Through the engine, a request whose deadline is 4 simulated seconds away on a clock 10×
    the wall (0.4 wall seconds) is cut there by the backend with DeadlineExceeded; the same
    request id with another deadline is the same request (it joins the running one)."""
    clock = SimulatedClock(datetime(2026, 8, 15, tzinfo=UTC), speed=10.0)
    async with (
        serving("drip") as chat,
        backend_for(chat) as backend,
        Engine(backend, clock) as engine,
    ):
        began = time.monotonic()
        soon, later = clock.now() + timedelta(seconds=4), clock.now() + timedelta(seconds=9)
        ticket = engine.start(InferenceRequest("d", MODEL, "go", deadline=soon))
        assert engine.start(InferenceRequest("d", MODEL, "go", deadline=later)).deduplicated
        with pytest.raises(DeadlineExceeded, match="'d' reached its deadline"):
            await ticket.result()
        assert 0.4 <= time.monotonic() - began < 0.4 + TIMEOUT_SLACK_S


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("cut", "connection to the inference backend .* broke .* incomplete"),
        ("no-done", r"ended before 'data: \[DONE\]' or a finish_reason, after 6 pieces"),
    ],
)
async def test_a_stream_that_ends_early_is_a_failure_not_a_short_answer(
    mode: str, message: str
) -> None:
    """A server that closes the connection mid-stream (after two pieces), or ends its body
    cleanly without a finish_reason or [DONE], makes generate raise Unavailable after the pieces
    it did stream; the backend then still answers the next request (the broken connection left
    the pool)."""
    async with serving(mode) as chat, backend_for(chat) as backend:
        pieces: list[str] = []
        with pytest.raises(Unavailable, match=message):
            async for piece in backend.generate(GenerateRequest("r", MODEL, "go")):
                pieces.append(piece)
        assert pieces == TOKENS[: 2 if mode == "cut" else len(TOKENS)]
        chat.mode = "stream"
        assert await collect(backend, GenerateRequest("again", MODEL, "go")) == TOKENS


async def test_an_error_event_mid_stream_is_a_failure() -> None:
    """An error event (either shape) the server sends after two pieces, then [DONE], makes
    generate raise Unavailable with the server's message, not end with a two-piece answer."""
    async with serving() as chat, backend_for(chat) as backend:
        for mode in ERROR_EVENTS:
            chat.mode = mode
            pieces: list[str] = []
            with pytest.raises(Unavailable, match="error mid-stream: CUDA out of memory"):
                async for piece in backend.generate(GenerateRequest("r", MODEL, "go")):
                    pieces.append(piece)
            assert pieces == TOKENS[:2], mode


async def test_sequential_requests_reuse_one_pooled_connection() -> None:
    """Ten answers in a row arrive over one TCP connection (counted by client port at the
    server); six concurrent ones with max_connections=2 over at most two."""
    async with serving() as chat:
        async with backend_for(chat) as backend:
            for index in range(10):
                assert await collect(backend, GenerateRequest(f"s{index}", MODEL, "go")) == TOKENS
        assert (len(chat.seen), chat.connections) == (10, 1)
        chat.seen.clear()
        async with backend_for(chat, max_connections=2) as backend, asyncio.TaskGroup() as tasks:
            answers = [
                tasks.create_task(collect(backend, GenerateRequest(f"c{k}", MODEL, "go")))
                for k in range(6)
            ]
        assert [answer.result() for answer in answers] == [TOKENS] * 6
        assert len(chat.seen) == 6
        assert 1 <= chat.connections <= 2


async def test_an_abandoned_answer_drops_its_connection_and_the_next_one_opens_anew() -> None:
    """A caller that stops reading after the first piece closes that answer: its connection is
    not returned half-read to the pool, and the next request comes over a new connection."""
    async with serving() as chat, backend_for(chat) as backend:
        async with contextlib.aclosing(backend.generate(GenerateRequest("a", MODEL, "go"))) as gen:
            assert await anext(gen) == TOKENS[0]
        assert await collect(backend, GenerateRequest("b", MODEL, "go")) == TOKENS
    assert (len(chat.seen), chat.connections) == (2, 2)


async def test_models_from_the_server_an_unreachable_server_and_bad_configuration() -> None:
    """Without model names the backend lists the server's GET /models on entry; a closed port is
    Unavailable naming the URL, on entry and on generate; a model not served is NotFound without
    any I/O; a closed backend refuses with Unavailable; a non-HTTP URL is InvalidArgument; a URL
    without a path means its /v1."""
    async with serving() as chat:
        async with OpenAIBackend(f"http://127.0.0.1:{chat.port}") as listed:
            assert listed.models == {MODEL, "other-model"}
            assert listed.url == f"{chat.base_url}/chat/completions"
            with pytest.raises(NotFound, match="'unknown'"):
                await collect(listed, GenerateRequest("r", "unknown", "go"))
        assert chat.seen == []
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    async with OpenAIBackend(f"http://127.0.0.1:{port}/v1", [MODEL]) as backend:
        with pytest.raises(Unavailable, match=rf"cannot connect.*127\.0\.0\.1:{port}"):
            await collect(backend, GenerateRequest("r", MODEL, "go"))
    with pytest.raises(Unavailable, match=rf"cannot connect.*127\.0\.0\.1:{port}"):
        async with OpenAIBackend(f"http://127.0.0.1:{port}/v1"):
            pass
    with pytest.raises(Unavailable, match="closed"):
        await collect(backend, GenerateRequest("r", MODEL, "go"))  # after its exit
    with pytest.raises(InvalidArgument, match="http:// or https://"):
        OpenAIBackend("ftp://example.org", [MODEL])


# -- serve nodes: the backend flags -------------------------------------------------------------


def parse_nodes(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(
        ["nodes", "--broker", "mqtt://gp-shard-llm:pw@127.0.0.1:1883", "--satellites", "a", *argv]
    )


async def test_the_backend_flags_are_checked_and_the_key_never_comes_from_argv(
    tmp_path: Path,
) -> None:
    """--base-url and the key flags without --backend openai are refused, as is --backend openai
    without --base-url; the key comes from the named environment variable or the file's first
    line (an unset variable or an empty file is refused); --model names are taken verbatim
    (a colon is part of the name)."""
    with pytest.raises(InvalidArgument, match=r"--base-url.*add --backend openai"):
        NodesSettings.from_args(parse_nodes("--base-url", "http://127.0.0.1:8000/v1"))
    with pytest.raises(InvalidArgument, match=r"--api-key-env.*add --backend openai"):
        NodesSettings.from_args(parse_nodes("--api-key-env", "KEY"))
    with pytest.raises(InvalidArgument, match="needs --base-url"):
        NodesSettings.from_args(parse_nodes("--backend", "openai"))

    from_env = parse_nodes("--backend", "openai", "--base-url", "http://h/v1", "--api-key-env", "K")
    assert api_key(from_env, {"K": " sk-from-env\n"}) == "sk-from-env"
    with pytest.raises(InvalidArgument, match=r"--api-key-env K: .* not set"):
        api_key(from_env, {})
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\nignored\n")
    from_file = parse_nodes("--backend", "openai", "--base-url", "http://h/v1",
                            "--api-key-file", str(key_file), "--model", "llama3:8b")  # fmt: skip
    NodesSettings.from_args(from_file)
    assert api_key(from_file, {}) == "sk-from-file"
    key_file.write_text("\n")
    with pytest.raises(InvalidArgument, match="first line is empty"):
        api_key(from_file, {})
    assert api_key(parse_nodes(), {"K": "unused"}) is None
    key_file.write_text("sk-from-file\n")
    async with await openai_backend(from_file, max_connections=3) as backend:
        assert backend.models == {"llama3:8b"}
        assert backend.url == "http://h/v1/chat/completions"


# -- a node agent on --backend openai, end to end through MQTT ---------------------------------

SHARD_ID = "llm"
SATELLITE = "25544"
START = datetime(2026, 8, 16, tzinfo=UTC)


def nodes_args(broker: PrivateBroker, chat: ChatServer, key_file: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(
        [
            "nodes",
            "--broker",
            broker.shard_address(SHARD_ID).url,
            "--satellites",
            SATELLITE,
            "--backend",
            "openai",
            "--base-url",
            chat.base_url,
            "--model",
            MODEL,
            "--api-key-file",
            str(key_file),
            "--backend-read-timeout",
            "5",
            "--keepalive",
            "2",
            "--load-interval",
            "0.2",
            "--port",
            "0",
            "--start",
            START.isoformat(),
            "--unready-delay",
            "0",
            "--metrics-port",
            "0",
        ]
    )


async def test_a_node_on_the_openai_backend_answers_through_mqtt(tmp_path: Path) -> None:
    """``serve nodes --backend openai --base-url … --api-key-file …`` (in-process): a request
    sent over MQTT through the link emulator to the member is answered with the test server's
    streamed tokens, the server saw the request id and the key from the file, and the shard's
    metrics count the tokens the server reported."""
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n")
    broker = PrivateBroker(shards={SHARD_ID: [SATELLITE]}, workdir=tmp_path / "broker")
    world = Scene(broker, "", [SATELLITE], NodeDirectory(), SimulatedClock(START), tmp_path)
    async with broker, serving(api_key=API_KEY) as chat:
        async with nodes_service(nodes_args(broker, chat, key_file)) as running:
            await running.shard.wait_ready(WAIT_S)
            async with ground(world) as requester:
                await world.directory.wait_for(SATELLITE, lambda view: view.state == ONLINE, WAIT_S)
                outcome = await requester.infer(
                    SATELLITE,
                    "svalbard",
                    node_pb2.InferRequest(model=MODEL, prompt="hello orbit", max_tokens=8),
                    request_id="req-openai-mqtt",
                    deadline=world.clock.now() + timedelta(seconds=WAIT_S),
                )
            assert running.metrics_url is not None
            async with httpx.AsyncClient(timeout=WAIT_S) as scraper:
                metrics = (await scraper.get(running.metrics_url)).text
        assert outcome.text == "".join(TOKENS)
        assert outcome.result.output_tokens == len(TOKENS)
        (seen,) = chat.seen
        assert seen.headers["x-request-id"] == "req-openai-mqtt"
        assert seen.headers["authorization"] == f"Bearer {API_KEY}"
        assert seen.body["messages"] == [{"role": "user", "content": "hello orbit"}]
        tokens = 'groundplane_nodes_backend_tokens_total{kind="%s",shard_id="llm"} %.1f'
        assert tokens % ("prompt", 2) in metrics
        assert tokens % ("completion", len(TOKENS)) in metrics
