"""Inference backends behind one async streaming protocol.

A backend turns a :class:`GenerateRequest` (model, prompt, session context, token budget, request
id) into an async iterator of text pieces whose concatenation is the answer.

- :class:`SyntheticBackend` is a deterministic stand-in for a model: its answer and its timing are
  functions of the model name, the whole session context and the prompt, so a node that lost or
  holds a stale context answers differently, and :func:`predict_answer` tells anyone what the
  right answer is. Time passes on the injected clock following a prefill + decode cost model.
- :class:`OpenAIBackend` streams from any OpenAI-compatible server (vLLM, llama.cpp server, ...)
  through ``POST {base_url}/chat/completions`` with ``stream: true`` on one pooled
  :class:`httpx.AsyncClient`, the server-sent events parsed by ``httpx-sse``; connect, read and
  total timeouts bound every request and every failure becomes a groundplane error that says what
  was expected and what came.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog
from httpx_sse import EventSource, ServerSentEvent

from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    GroundplaneError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from groundplane.node.sessions import Turn, canonical_context, context_tokens, count_tokens

log = structlog.get_logger("groundplane.node.backends")


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """What a backend is asked: continue ``context`` with an answer to ``prompt``.

    ``timeout_s`` is how many wall seconds the caller still waits for the whole answer (from the
    request's deadline); None: the request has no deadline of its own. Backends that do real I/O
    give up after it; the synthetic one runs on its clock and ignores it.
    """

    request_id: str
    model: str
    prompt: str
    context: tuple[Turn, ...] = ()
    max_tokens: int = 64
    timeout_s: float | None = None


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
        if answer.decode_s_per_token <= 0.0:
            # No time per token: one sleep for the prefill (a single loop turn even at zero, so
            # a generator is never a busy loop), then the pieces without a loop turn each
            # (~20 turns saved per zero-cost answer).
            await clock.sleep(answer.prefill_s)
            for piece in answer.pieces:
                yield piece
            return
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

_MAX_ERROR_BODY_BYTES = 1 << 16
_MAX_ANSWER_BODY_BYTES = 1 << 24
_DEFAULT_API_PATH = "/v1"


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts an OpenAI-compatible server reported (``usage`` of a completion)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server (vLLM, llama.cpp server, ...) on httpx.

    ``base_url`` is the API's base as the OpenAI clients take it (``http://host:8000/v1``); a URL
    without a path (``http://host:8000``) means its ``/v1``. Requests go to
    ``{base_url}/chat/completions``: the session context becomes alternating user/assistant
    messages followed by the prompt, with ``stream: true`` (and ``stream_options.include_usage``)
    unless ``stream=False``; each content delta of the event stream is one piece.

    One pooled :class:`httpx.AsyncClient` (at most ``max_connections``, kept alive between
    requests) for the backend's life: enter it (``async with``) or call :meth:`aclose`.
    Timeouts: ``connect_timeout_s`` for connecting and sending, ``read_timeout_s`` for each read
    (the longest silence tolerated between two pieces), and a total per request: the smaller of
    ``total_timeout_s`` and the request's own ``timeout_s``.

    Errors: unreachable, timed out, broken mid-answer, HTTP 5xx and malformed answers are
    :class:`Unavailable` (retry elsewhere); HTTP 404 :class:`NotFound`; 400/413/422
    :class:`InvalidArgument`; 429 :class:`ResourceExhausted` with the server's Retry-After;
    401/403 :class:`FailedPrecondition` (the node's credentials); the request's own deadline
    passing :class:`DeadlineExceeded`. An answer counts only once the stream said ``[DONE]`` or
    gave a ``finish_reason`` and then ended cleanly; anything shorter is a failure, never a
    truncated success.
    """

    def __init__(  # noqa: PLR0913 - the server, its models and one HTTP client's keyword knobs
        self,
        base_url: str,
        models: Sequence[str] | None = None,
        *,
        api_key: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        total_timeout_s: float = 600.0,
        max_connections: int = 16,
        stream: bool = True,
        include_usage: bool = True,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise InvalidArgument(
                f"expected an http:// or https:// base URL such as http://127.0.0.1:8000/v1, "
                f"got {base_url!r}"
            )
        if parts.query or parts.fragment:
            raise InvalidArgument(
                f"expected a base URL without a query or fragment, got {base_url!r}"
            )
        if models is not None and not models:
            raise InvalidArgument(
                f"expected the model names served at {base_url} (or None to ask the server), "
                "got none"
            )
        if not (connect_timeout_s > 0 and read_timeout_s > 0 and total_timeout_s > 0):
            raise InvalidArgument(
                f"expected positive timeouts, got connect {connect_timeout_s} s, "
                f"read {read_timeout_s} s and total {total_timeout_s} s"
            )
        if max_connections < 1:
            raise InvalidArgument(f"expected max_connections ≥ 1, got {max_connections}")
        path = parts.path.rstrip("/") or _DEFAULT_API_PATH
        self._base_url = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        self._url = self._base_url + "/chat/completions"
        self._models = frozenset(models) if models is not None else None
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._total_timeout_s = total_timeout_s
        self._stream = stream
        self._include_usage = include_usage
        self._usage = Usage()
        headers = {"User-Agent": "groundplane-node"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        # No pool timeout of its own: waiting for a free connection counts against the total.
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(
                connect=connect_timeout_s, read=read_timeout_s, write=connect_timeout_s, pool=None
            ),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def __aenter__(self) -> OpenAIBackend:
        """Ready to serve; without model names given, they are the server's ``GET /models``."""
        if self._models is None:
            try:
                self._models = frozenset(await self.list_models())
            except BaseException:
                await self.aclose()
                raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        async with asyncio.timeout(self._connect_timeout_s):
            await self._client.aclose()

    @property
    def models(self) -> frozenset[str]:
        if self._models is None:
            raise FailedPrecondition(
                f"the models served at {self._base_url} are not known yet: give them, or enter "
                "the backend (async with) to ask the server's GET /models"
            )
        return self._models

    @property
    def url(self) -> str:
        """The chat-completions endpoint requests go to."""
        return self._url

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def usage(self) -> Usage:
        """Token counts the server reported, summed over every answer so far."""
        return self._usage

    async def list_models(self) -> list[str]:
        """The model ids the server lists at ``GET {base_url}/models``, sorted."""
        url = self._base_url + "/models"
        doing = "listing the models"
        try:
            async with asyncio.timeout(self._total_timeout_s):
                response = await self._client.get(url)
        except TimeoutError:
            raise Unavailable(self._total_message(self._total_timeout_s, doing)) from None
        except httpx.HTTPError as error:
            raise self._transport_error(error, doing) from None
        if response.status_code != httpx.codes.OK:
            raise _status_error(url, response, response.content[:_MAX_ERROR_BODY_BYTES])
        try:
            listed = response.json()["data"]
            ids = sorted({str(entry["id"]) for entry in listed})
        except (ValueError, KeyError, TypeError):
            raise Unavailable(
                f"expected a model list {{'data': [{{'id': ...}}, ...]}} from {url}, got "
                f"{response.text!r:.160}"
            ) from None
        if not ids:
            raise Unavailable(f"the server at {url} lists no models")
        return ids

    @staticmethod
    def messages(request: GenerateRequest) -> list[dict[str, str]]:
        """The chat messages for ``request``: the context's turns, then the prompt."""
        messages: list[dict[str, str]] = []
        for turn in request.context:
            messages.append({"role": "user", "content": turn.prompt})
            messages.append({"role": "assistant", "content": turn.answer})
        messages.append({"role": "user", "content": request.prompt})
        return messages

    def body(self, request: GenerateRequest) -> dict[str, Any]:
        """The JSON body POSTed for ``request``."""
        body: dict[str, Any] = {
            "model": request.model,
            "messages": self.messages(request),
            "max_tokens": request.max_tokens,
            "stream": self._stream,
        }
        if self._stream and self._include_usage:
            body["stream_options"] = {"include_usage": True}
        return body

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[str, None]:
        if request.model not in self.models:
            raise NotFound(
                f"model {request.model!r} is not served here; served models: {sorted(self.models)}"
            )
        if self._client.is_closed:
            raise Unavailable(
                f"the backend for {self._base_url} is closed (the node is shutting down); "
                "retry on another node"
            )
        budget_s = self._total_timeout_s
        by_request = request.timeout_s is not None and request.timeout_s < budget_s
        if request.timeout_s is not None:
            if request.timeout_s <= 0:
                raise DeadlineExceeded(
                    f"request {request.request_id!r} reached its deadline before the backend "
                    f"at {self._url} was asked"
                )
            budget_s = min(budget_s, request.timeout_s)
        deadline = asyncio.get_running_loop().time() + budget_s
        answer = _Answer(self._url)
        try:
            async with contextlib.aclosing(self._exchange(request, deadline, answer)) as pieces:
                async for piece in pieces:
                    yield piece
        except TimeoutError:
            raise self._deadline_error(request, budget_s, by_request, answer) from None
        except httpx.HTTPError as error:
            raise self._transport_error(error, answer.doing) from None
        self._usage = self._usage + answer.usage
        log.debug(
            "openai_answer",
            request_id=request.request_id,
            url=self._url,
            pieces=answer.pieces,
            prompt_tokens=answer.usage.prompt_tokens,
            completion_tokens=answer.usage.completion_tokens,
        )

    async def _exchange(
        self, request: GenerateRequest, deadline: float, answer: _Answer
    ) -> AsyncGenerator[str, None]:
        """POST the request and stream the answer's pieces; every await ends by ``deadline``."""
        async with asyncio.timeout_at(deadline):
            response = await self._client.send(
                self._client.build_request(
                    "POST",
                    self._url,
                    json=self.body(request),
                    headers={
                        "Accept": "text/event-stream" if self._stream else "application/json",
                        "X-Request-Id": _header_safe(request.request_id),
                    },
                ),
                stream=True,
            )
        answer.doing = "reading the answer"
        try:
            async with asyncio.timeout_at(deadline):
                await self._check_response(response)
            if _media_type(response) == "application/json":
                async with asyncio.timeout_at(deadline):
                    document = await _json_body(response, self._url)
                for piece in answer.completion(document):
                    yield piece
            else:
                async with contextlib.aclosing(EventSource(response).aiter_sse()) as events:
                    while True:
                        async with asyncio.timeout_at(deadline):
                            event = await anext(events, None)
                        if event is None:
                            break
                        for piece in answer.event(event):
                            yield piece
            answer.check_complete()
        finally:
            # Closing a fully read answer returns its connection to the pool; closing one cut
            # short (an error, a timeout, the caller stopped reading) drops the connection.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._connect_timeout_s):
                    await response.aclose()

    async def _check_response(self, response: httpx.Response) -> None:
        """Raise the groundplane error of a non-200 or non-answer response."""
        if response.status_code != httpx.codes.OK:
            collected = bytearray()
            async for data in response.aiter_bytes():
                collected += data
                if len(collected) >= _MAX_ERROR_BODY_BYTES:
                    break
            raise _status_error(self._url, response, bytes(collected[:_MAX_ERROR_BODY_BYTES]))
        media_type = _media_type(response)
        if media_type not in {"text/event-stream", "application/json"}:
            raise Unavailable(
                f"expected a text/event-stream (or application/json) answer from {self._url}, "
                f"got content type {response.headers.get('content-type', '')!r}"
            )

    def _transport_error(self, error: httpx.HTTPError, doing: str) -> Unavailable:
        if isinstance(error, httpx.ConnectTimeout):
            return Unavailable(
                f"the inference backend at {self._url} did not accept a connection within "
                f"{self._connect_timeout_s} s"
            )
        if isinstance(error, httpx.ConnectError):
            return Unavailable(
                f"cannot connect to the inference backend at {self._url}: {error or 'refused'}"
            )
        if isinstance(error, httpx.WriteTimeout):
            return Unavailable(
                f"the inference backend at {self._url} did not take the request within "
                f"{self._connect_timeout_s} s"
            )
        if isinstance(error, httpx.ReadTimeout):
            return Unavailable(
                f"the inference backend at {self._url} did not respond within "
                f"{self._read_timeout_s} s while {doing}"
            )
        if isinstance(error, httpx.RemoteProtocolError | httpx.ReadError):
            return Unavailable(
                f"the connection to the inference backend at {self._url} broke while {doing} "
                f"(the answer is incomplete): {error or type(error).__name__}"
            )
        return Unavailable(
            f"the request to the inference backend at {self._url} failed while {doing}: "
            f"{type(error).__name__} {error}"
        )

    def _deadline_error(
        self, request: GenerateRequest, budget_s: float, by_request: bool, answer: _Answer
    ) -> GroundplaneError:
        if by_request:
            return DeadlineExceeded(
                f"request {request.request_id!r} reached its deadline ({budget_s:.3g} s) while "
                f"{answer.doing} from the inference backend at {self._url}"
            )
        return Unavailable(self._total_message(budget_s, answer.doing))

    def _total_message(self, budget_s: float, doing: str) -> str:
        return (
            f"the inference backend at {self._url} did not finish within its total timeout of "
            f"{budget_s} s while {doing}"
        )


class _Answer:
    """What one answer has streamed so far: pieces, usage, whether it ended properly."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pieces = 0
        self.usage = Usage()
        self.done = False
        self.finished = False
        self.doing = "waiting for the response headers"

    def event(self, event: ServerSentEvent) -> list[str]:
        """The pieces of one server-sent event (none after ``[DONE]``)."""
        if self.done:
            return []
        if event.event == "error":
            raise Unavailable(
                f"the inference backend at {self.url} reported an error mid-stream: "
                f"{_error_detail(event.data.encode())}"
            )
        if event.event not in {"", "message"}:
            return []
        if event.data == "[DONE]":
            self.done = True
            return []
        try:
            document: Any = json.loads(event.data)
        except json.JSONDecodeError:
            raise Unavailable(
                f"expected a JSON chat-completion chunk in the event stream from {self.url}, "
                f"got {event.data!r:.120}"
            ) from None
        return self._chunk(document, event.data)

    def completion(self, document: Any) -> list[str]:
        """The piece of a whole (non-streamed) chat completion."""
        if isinstance(document, dict) and "error" in document:
            raise Unavailable(
                f"the inference backend at {self.url} answered an error: "
                f"{_error_detail(json.dumps(document).encode())}"
            )
        try:
            choice = document["choices"][0]
            content = choice["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise Unavailable(
                f"expected a chat completion with choices[0].message from {self.url}, "
                f"got {json.dumps(document)!r:.160}"
            ) from None
        self._take_usage(document)
        self.done = True
        return self._content(content, "choices[0].message.content")

    def check_complete(self) -> None:
        if self.done or self.finished:
            return
        raise Unavailable(
            f"the event stream from {self.url} ended before 'data: [DONE]' or a finish_reason, "
            f"after {self.pieces} pieces: the answer is incomplete"
        )

    def _chunk(self, document: Any, raw: str) -> list[str]:
        # vLLM sends {"error": {...}} (older releases {"object": "error", "message": ...}) as an
        # event when generation fails after the 200, then [DONE].
        if isinstance(document, dict) and (
            "error" in document or document.get("object") == "error"
        ):
            raise Unavailable(
                f"the inference backend at {self.url} reported an error mid-stream: "
                f"{_error_detail(raw.encode())}"
            )
        choices = document.get("choices") if isinstance(document, dict) else None
        if not isinstance(choices, list):
            raise Unavailable(
                f"expected a chat-completion chunk with a choices list from {self.url}, "
                f"got {raw!r:.120}"
            )
        self._take_usage(document)
        if not choices:  # the usage chunk of stream_options.include_usage
            return []
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            raise Unavailable(
                f"expected a chat-completion chunk with choices[0].delta from {self.url}, "
                f"got {raw!r:.120}"
            )
        if choice.get("finish_reason"):
            self.finished = True
        return self._content(delta.get("content"), "choices[0].delta.content")

    def _content(self, content: Any, where: str) -> list[str]:
        if content is None or content == "":
            return []
        if not isinstance(content, str):
            raise Unavailable(
                f"expected {where} to be text in the answer from {self.url}, got {content!r:.80}"
            )
        self.pieces += 1
        self.doing = f"reading the answer after {self.pieces} pieces"
        return [content]

    def _take_usage(self, document: dict[str, Any]) -> None:
        usage = document.get("usage")
        if not isinstance(usage, dict):
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            # Servers that report usage in every chunk (vLLM's continuous usage stats) send
            # running totals: the last report is the answer's.
            self.usage = Usage(prompt, completion)


def _media_type(response: httpx.Response) -> str:
    content_type: str = response.headers.get("content-type", "")
    return content_type.partition(";")[0].strip().lower()


async def _json_body(response: httpx.Response, url: str) -> Any:
    collected = bytearray()
    async for data in response.aiter_bytes():
        collected += data
        if len(collected) > _MAX_ANSWER_BODY_BYTES:
            raise Unavailable(
                f"the answer from {url} is longer than {_MAX_ANSWER_BODY_BYTES} bytes"
            )
    try:
        return json.loads(bytes(collected))
    except json.JSONDecodeError:
        raise Unavailable(
            f"expected a JSON chat completion from {url}, got {bytes(collected)!r:.120}"
        ) from None


def _status_error(url: str, response: httpx.Response, body: bytes) -> GroundplaneError:
    status = response.status_code
    message = f"the inference backend at {url} answered HTTP {status}: {_error_detail(body)}"
    if status == 404:
        return NotFound(message)
    if status in {400, 413, 422}:
        return InvalidArgument(message)
    if status == 429:
        return ResourceExhausted(message, retry_after_s=_retry_after_s(response.headers))
    if status in {401, 403}:
        return FailedPrecondition(message + " (check the node's backend credentials)")
    return Unavailable(message)


def _header_safe(value: str) -> str:
    return "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in value)


def _retry_after_s(headers: httpx.Headers) -> float | None:
    """Retry-After in seconds: delay-seconds, or an HTTP date relative to the response's Date."""
    text = headers.get("retry-after", "").strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        until = parsedate_to_datetime(text)
        sent = parsedate_to_datetime(headers["date"])
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, (until - sent).total_seconds())


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
