"""Inference backends behind one async streaming protocol.

A backend turns a :class:`GenerateRequest` (model, prompt, session context, token budget, request
id) into an async iterator of text pieces whose concatenation is the answer.

- :class:`SyntheticBackend` is a deterministic stand-in for a model: its answer and its timing are
  functions of the model name, the whole session context and the prompt, so a node that lost or
  holds a stale context answers differently, and :func:`predict_answer` tells anyone what the
  right answer is. Time passes on the injected clock following a prefill + decode cost model.
- :class:`OpenAIBackend` streams from a real local server (vLLM, llama.cpp, ...) through
  ``POST {base_url}/v1/chat/completions`` with ``stream=true``, speaking HTTP/1.1 over asyncio
  streams itself; every I/O await has a timeout and every failure becomes a groundplane error that
  says what was expected and what came.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import (
    FailedPrecondition,
    GroundplaneError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from groundplane.node.sessions import Turn, canonical_context, context_tokens, count_tokens

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """What a backend is asked: continue ``context`` with an answer to ``prompt``."""

    request_id: str
    model: str
    prompt: str
    context: tuple[Turn, ...] = ()
    max_tokens: int = 64


@runtime_checkable
class InferenceBackend(Protocol):
    """An inference backend: the models it serves and a streaming generate."""

    @property
    def models(self) -> frozenset[str]:
        """Names of the models this backend serves."""
        ...

    def generate(self, request: GenerateRequest) -> AsyncIterator[str]:
        """Stream the answer as text pieces; their concatenation is the answer text."""
        ...


# --------------------------------------------------------------------------------------------
# Synthetic model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyntheticModelSpec:
    """A synthetic model: its name, cost model and answer length range.

    Serving time is ``prefill_s_per_token × (context tokens + prompt tokens)`` before the first
    piece, then ``decode_s_per_token`` per output token, in the clock's (simulated) seconds.
    """

    name: str
    prefill_s_per_token: float = 0.0
    decode_s_per_token: float = 0.0
    min_answer_tokens: int = 4
    max_answer_tokens: int = 32

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidArgument("expected a non-empty synthetic model name, got ''")
        if self.prefill_s_per_token < 0 or self.decode_s_per_token < 0:
            raise InvalidArgument(
                f"expected non-negative per-token costs for model {self.name!r}, got prefill "
                f"{self.prefill_s_per_token} s and decode {self.decode_s_per_token} s"
            )
        if not 1 <= self.min_answer_tokens <= self.max_answer_tokens:
            raise InvalidArgument(
                f"expected 1 ≤ min_answer_tokens ≤ max_answer_tokens for model {self.name!r}, "
                f"got {self.min_answer_tokens} and {self.max_answer_tokens}"
            )


@dataclass(frozen=True, slots=True)
class SyntheticAnswer:
    """The answer a synthetic model gives, and how long it takes (simulated seconds)."""

    pieces: tuple[str, ...]
    prefill_tokens: int
    prefill_s: float
    decode_s_per_token: float

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def output_tokens(self) -> int:
        return len(self.pieces)

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s_per_token * len(self.pieces)


_CONSONANTS = "bdfgklmnprstvzhj"
_VOWELS = "aeiou"


def _word(digest: bytes) -> str:
    syllables = 1 + digest[0] % 3
    return "".join(
        _CONSONANTS[digest[1 + 2 * i] % 16] + _VOWELS[digest[2 + 2 * i] % 5]
        for i in range(syllables)
    )


def answer_seed(model: str, context: tuple[Turn, ...], prompt: str) -> bytes:
    """SHA-256 of the model, the whole context and the prompt: what the answer is a function of."""
    body = json.dumps(
        [*canonical_context(model, context), prompt], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(body.encode("utf-8")).digest()


def predict_answer(
    spec: SyntheticModelSpec, context: tuple[Turn, ...], prompt: str, max_tokens: int
) -> SyntheticAnswer:
    """The answer ``spec`` gives to ``prompt`` after ``context``, and its cost.

    Tokens come from a hash chain seeded by :func:`answer_seed`: any difference in the context
    (a lost turn, a stale state) changes every token. ``max_tokens`` truncates, so a shorter budget
    gives a prefix of the longer answer.
    """
    if max_tokens < 1:
        raise InvalidArgument(f"expected max_tokens ≥ 1, got {max_tokens}")
    digest = answer_seed(spec.name, context, prompt)
    span = spec.max_answer_tokens - spec.min_answer_tokens + 1
    natural = spec.min_answer_tokens + int.from_bytes(digest[:4], "big") % span
    pieces: list[str] = []
    for index in range(min(natural, max_tokens)):
        digest = hashlib.sha256(digest).digest()
        word = _word(digest)
        pieces.append(word if index == 0 else " " + word)
    prefill_tokens = context_tokens(context) + count_tokens(prompt)
    return SyntheticAnswer(
        pieces=tuple(pieces),
        prefill_tokens=prefill_tokens,
        prefill_s=spec.prefill_s_per_token * prefill_tokens,
        decode_s_per_token=spec.decode_s_per_token,
    )


class SyntheticBackend:
    """Deterministic synthetic models whose time passes on an injected clock."""

    def __init__(self, specs: Sequence[SyntheticModelSpec], clock: Clock) -> None:
        if not specs:
            raise InvalidArgument("expected at least one synthetic model spec, got none")
        self._specs = {spec.name: spec for spec in specs}
        if len(self._specs) != len(specs):
            raise InvalidArgument(
                f"expected distinct synthetic model names, got {[spec.name for spec in specs]}"
            )
        self._clock = clock

    @property
    def models(self) -> frozenset[str]:
        return frozenset(self._specs)

    def spec(self, model: str) -> SyntheticModelSpec:
        try:
            return self._specs[model]
        except KeyError:
            raise NotFound(
                f"model {model!r} is not served here; served models: {sorted(self._specs)}"
            ) from None

    def predict(self, request: GenerateRequest) -> SyntheticAnswer:
        """What :meth:`generate` will stream for ``request`` and how long it will take."""
        return predict_answer(
            self.spec(request.model), request.context, request.prompt, request.max_tokens
        )

    async def generate(self, request: GenerateRequest) -> AsyncIterator[str]:
        answer = self.predict(request)
        clock = self._clock
        # Sleep towards absolute targets on the clock so wake-up latency does not accumulate
        # over many tokens.
        start = clock.monotonic()
        target_s = answer.prefill_s
        for piece in answer.pieces:
            target_s += answer.decode_s_per_token
            elapsed_s = (clock.monotonic() - start) * clock.speed
            await clock.sleep(max(0.0, target_s - elapsed_s))
            yield piece


# --------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP backend
# --------------------------------------------------------------------------------------------

_MAX_LINE_BYTES = 1 << 20
_MAX_ERROR_BODY_BYTES = 1 << 16


class OpenAIBackend:
    """Streams chat completions from an OpenAI-compatible server (vLLM, llama.cpp, ...).

    One HTTP/1.1 connection per request (``Connection: close``). The session context becomes
    alternating user/assistant messages followed by the prompt. Timeouts: ``connect_timeout_s``
    for connecting and sending, ``read_timeout_s`` for each read (the longest silence tolerated
    between two pieces of the answer).
    """

    def __init__(
        self,
        base_url: str,
        models: Sequence[str],
        *,
        api_key: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise InvalidArgument(
                f"expected an http:// or https:// base URL such as http://127.0.0.1:8000, "
                f"got {base_url!r}"
            )
        if not models:
            raise InvalidArgument(f"expected the model names served at {base_url}, got none")
        if connect_timeout_s <= 0 or read_timeout_s <= 0:
            raise InvalidArgument(
                f"expected positive timeouts, got connect {connect_timeout_s} s and "
                f"read {read_timeout_s} s"
            )
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._path = parts.path.rstrip("/") + "/v1/chat/completions"
        self._url = f"{parts.scheme}://{parts.netloc}{self._path}"
        self._models = frozenset(models)
        self._api_key = api_key
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s

    @property
    def models(self) -> frozenset[str]:
        return self._models

    @property
    def url(self) -> str:
        return self._url

    @staticmethod
    def messages(request: GenerateRequest) -> list[dict[str, str]]:
        """The chat messages for ``request``: the context's turns, then the prompt."""
        messages: list[dict[str, str]] = []
        for turn in request.context:
            messages.append({"role": "user", "content": turn.prompt})
            messages.append({"role": "assistant", "content": turn.answer})
        messages.append({"role": "user", "content": request.prompt})
        return messages

    async def generate(self, request: GenerateRequest) -> AsyncIterator[str]:
        if request.model not in self._models:
            raise NotFound(
                f"model {request.model!r} is not served here; served models: {sorted(self._models)}"
            )
        body = json.dumps(
            {
                "model": request.model,
                "messages": self.messages(request),
                "max_tokens": request.max_tokens,
                "stream": True,
            }
        ).encode("utf-8")
        head = [
            f"POST {self._path} HTTP/1.1",
            f"Host: {self._host}:{self._port}",
            "Content-Type: application/json",
            "Accept: text/event-stream",
            f"Content-Length: {len(body)}",
            "Connection: close",
            f"X-Request-Id: {_header_safe(request.request_id)}",
        ]
        if self._api_key is not None:
            head.append(f"Authorization: Bearer {self._api_key}")
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body

        try:
            reader, writer = await self._io(
                asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=ssl.create_default_context() if self._tls else None,
                    limit=_MAX_LINE_BYTES,
                ),
                self._connect_timeout_s,
                "connecting",
            )
        except OSError as error:
            raise Unavailable(
                f"cannot connect to the inference backend at {self._url}: {error}"
            ) from None
        try:
            writer.write(payload)
            await self._io(writer.drain(), self._connect_timeout_s, "sending the request")
            status, headers = await self._read_head(reader)
            body_bytes = self._body(reader, headers)
            if status != 200:
                raise await self._http_error(status, headers, body_bytes)
            content_type = headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                raise Unavailable(
                    f"expected a text/event-stream answer from {self._url} (stream=true), got "
                    f"content type {content_type!r}"
                )
            async for piece in _sse_pieces(_lines(body_bytes), self._url):
                yield piece
        except OSError as error:
            raise Unavailable(
                f"connection to the inference backend at {self._url} failed: {error}"
            ) from None
        finally:
            writer.close()
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    await writer.wait_closed()
            except (OSError, TimeoutError):
                pass

    async def _io(self, awaitable: Awaitable[_T], timeout_s: float, doing: str) -> _T:
        try:
            async with asyncio.timeout(timeout_s):
                return await awaitable
        except TimeoutError:
            raise Unavailable(
                f"the inference backend at {self._url} did not respond within {timeout_s} s "
                f"while {doing}"
            ) from None

    async def _readline(self, reader: asyncio.StreamReader, doing: str) -> bytes:
        try:
            return await self._io(reader.readline(), self._read_timeout_s, doing)
        except ValueError:
            raise Unavailable(
                f"the inference backend at {self._url} sent a line longer than "
                f"{_MAX_LINE_BYTES} bytes while {doing}"
            ) from None

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        status_line = await self._readline(reader, "reading the status line")
        fields = status_line.decode("latin-1").split(None, 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/1.") or not fields[1].isdigit():
            raise Unavailable(
                f"expected an HTTP/1.x status line from {self._url}, got {status_line!r:.120}"
            )
        headers: dict[str, str] = {}
        while True:
            line = await self._readline(reader, "reading the response headers")
            if not line:
                raise Unavailable(f"the inference backend at {self._url} closed mid-headers")
            text = line.decode("latin-1").strip()
            if not text:
                break
            name, colon, value = text.partition(":")
            if not colon:
                raise Unavailable(
                    f"expected an HTTP header 'Name: value' from {self._url}, got {text!r:.120}"
                )
            headers[name.strip().lower()] = value.strip()
        return int(fields[1]), headers

    async def _body(
        self, reader: asyncio.StreamReader, headers: dict[str, str]
    ) -> AsyncIterator[bytes]:
        """The response body as it arrives: chunked, by content length, or up to the close."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await self._readline(reader, "reading a chunk size")
                size_text = size_line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise Unavailable(
                        f"expected a hexadecimal chunk size from {self._url}, got {size_line!r:.80}"
                    ) from None
                if size == 0:
                    return
                chunk = await self._read_exactly(reader, size + 2)
                yield chunk[:-2]
        elif "content-length" in headers:
            remaining = int(headers["content-length"])
            while remaining > 0:
                data = await self._io(
                    reader.read(min(remaining, 1 << 16)), self._read_timeout_s, "reading the body"
                )
                if not data:
                    raise Unavailable(
                        f"the inference backend at {self._url} closed {remaining} bytes before "
                        "the announced end of the body"
                    )
                remaining -= len(data)
                yield data
        else:
            while data := await self._io(
                reader.read(1 << 16), self._read_timeout_s, "reading the body"
            ):
                yield data

    async def _read_exactly(self, reader: asyncio.StreamReader, size: int) -> bytes:
        try:
            return await self._io(reader.readexactly(size), self._read_timeout_s, "reading a chunk")
        except asyncio.IncompleteReadError:
            raise Unavailable(
                f"the inference backend at {self._url} closed in the middle of a chunk"
            ) from None

    async def _http_error(
        self, status: int, headers: dict[str, str], body: AsyncIterator[bytes]
    ) -> GroundplaneError:
        collected = bytearray()
        async for data in body:
            collected += data
            if len(collected) >= _MAX_ERROR_BODY_BYTES:
                break
        detail = _error_detail(bytes(collected[:_MAX_ERROR_BODY_BYTES]))
        message = f"the inference backend at {self._url} answered HTTP {status}: {detail}"
        if status == 404:
            return NotFound(message)
        if status in {400, 413, 422}:
            return InvalidArgument(message)
        if status == 429:
            return ResourceExhausted(message, retry_after_s=_retry_after_s(headers))
        if status in {401, 403}:
            return FailedPrecondition(message + " (check the node's backend credentials)")
        return Unavailable(message)


def _header_safe(value: str) -> str:
    return "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in value)


def _retry_after_s(headers: dict[str, str]) -> float | None:
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _error_detail(body: bytes) -> str:
    """The most useful text of an error body: an OpenAI-style message, else the raw text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return text[:300] or "(empty body)"
    if isinstance(document, dict):
        error = document.get("error", document)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:300]
        if isinstance(error, str):
            return error[:300]
    return text[:300]


async def _lines(body: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """Split a byte stream into text lines (LF or CRLF), whatever the chunk boundaries."""
    pending = b""
    async for data in body:
        pending += data
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.removesuffix(b"\r").decode("utf-8", errors="replace")
    if pending:
        yield pending.removesuffix(b"\r").decode("utf-8", errors="replace")


async def _sse_pieces(lines: AsyncIterator[str], url: str) -> AsyncIterator[str]:
    """Text pieces of an OpenAI chat-completion event stream, up to ``data: [DONE]``."""
    data: list[str] = []
    async for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
            continue
        if line and not line.startswith(":") and ":" not in line:
            raise Unavailable(
                f"expected server-sent events ('data: {{...}}' lines) from {url}, got {line!r:.120}"
            )
        if line or not data:
            continue  # a comment, another SSE field, or a blank line between events
        event, data = "\n".join(data), []
        if event == "[DONE]":
            return
        piece = _delta(event, url)
        if piece:
            yield piece
    if data and "\n".join(data) == "[DONE]":
        return
    raise Unavailable(f"the event stream from {url} ended before 'data: [DONE]'")


def _delta(event: str, url: str) -> str:
    try:
        document: Any = json.loads(event)
    except json.JSONDecodeError:
        raise Unavailable(
            f"expected a JSON chat-completion chunk in the event stream from {url}, "
            f"got {event!r:.120}"
        ) from None
    if isinstance(document, dict) and "error" in document:
        raise Unavailable(
            f"the inference backend at {url} reported an error mid-stream: "
            f"{_error_detail(event.encode())}"
        )
    try:
        delta = document["choices"][0]["delta"]
        content = delta.get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise Unavailable(
            f"expected a chat-completion chunk with choices[0].delta from {url}, got {event!r:.120}"
        ) from None
    if content is None:
        return ""
    if not isinstance(content, str):
        raise Unavailable(
            f"expected choices[0].delta.content to be text in the stream from {url}, "
            f"got {content!r:.80}"
        )
    return content
