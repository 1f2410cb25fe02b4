"""The OpenAI-compatible HTTP front door driven by the official ``openai`` client, unchanged,
pointed at its base URL: the gateway test system (private Mosquitto, link emulator, node agents)
behind uvicorn on loopback, and the handoff tests' system for a session across a handoff."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from groundplane.cli.main import build_parser
from groundplane.cli.serve_gateway import gateway_settings, load_tenants
from groundplane.gateway.app import GatewayApp, GatewaySettings
from groundplane.gateway.auth import Tenant, TenantConfig, TenantRegistry
from groundplane.gateway.http import (
    NEXT_OPPORTUNITY_HEADER,
    SATELLITE_HEADER,
    STATION_HEADER,
    HttpApi,
    HttpFrontDoor,
)
from groundplane.gateway.service import InferenceGateway
from groundplane.gateway.sources import LocalTableSource
from groundplane.kernel.clock import SimulatedClock, format_utc
from groundplane.mqtt.broker import PrivateBroker
from groundplane.node.backends import predict_answer
from groundplane.node.sessions import Turn

from ..handoff.conftest import CHAT, SystemFactory, make_system
from .conftest import EPOCH, FAST, FIRST, SECOND, SLOW, STATION, TOKENS, USER, GatewaySystem
from .conftest import route_table as gateway_table
from .test_gateway_units import FakeCaller
from .test_grpc_session_turns import running_handoff

__all__ = ["make_system"]  # the handoff tests' fixture, used here too

MAX_TOKENS = 64
LOCATION = {"X-Groundplane-Location": f"{USER[0]},{USER[1]},20"}


@dataclass
class Front:
    system: GatewaySystem
    door: HttpFrontDoor

    def client(self, api_key: str = TOKENS["alpha"]) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.door.base_url,
            api_key=api_key,
            max_retries=0,
            timeout=10.0,
            default_headers=LOCATION,
        )


@contextlib.asynccontextmanager
async def serving(door: HttpFrontDoor) -> AsyncIterator[HttpFrontDoor]:
    """The front door's uvicorn as a task, as the gateway app runs it; stopped on exit."""
    door.bind()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(door.serve(), name="test-http")
        try:
            yield door
        finally:
            await door.stop()


@pytest.fixture
async def front(gateway_system: GatewaySystem) -> AsyncIterator[Front]:
    app = gateway_system.app
    api = HttpApi(
        app.gateway,
        app.settings.tenants,
        gateway_system.tables,
        links=app.links,
        directory=app.directory,
    )
    async with serving(HttpFrontDoor(api, "127.0.0.1:0", drain_grace_s=0.5)) as door:
        yield Front(gateway_system, door)


async def test_a_chat_completion_is_answered_by_a_node_over_the_emulated_link(
    front: Front,
) -> None:
    """``chat.completions.create`` is answered by the best satellite of the route table through
    the station's link: the content is the synthetic model's answer to the prompt, usage counts
    the prompt's words and the answer's tokens, and the reply's headers name the satellite and
    station. Without a location (this tenant has no default) the call is a 400."""
    expected = predict_answer(FAST, (), "hello orbit", MAX_TOKENS)
    async with front.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=FAST.name,
            messages=[{"role": "user", "content": "hello orbit"}],
            max_tokens=MAX_TOKENS,
        )
        completion = raw.parse()
        assert completion.object == "chat.completion"
        assert completion.choices[0].message.content == expected.text
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
            2,
            len(expected.pieces),
        )
        assert (raw.headers[SATELLITE_HEADER], raw.headers[STATION_HEADER]) == (
            FIRST,
            STATION.station_id,
        )
        with pytest.raises(openai.BadRequestError, match="X-Groundplane-Location"):
            await client.chat.completions.create(
                model=FAST.name,
                messages=[{"role": "user", "content": "where am I?"}],
                extra_headers={"X-Groundplane-Location": openai.omit},
            )
    assert front.system.executions() == 1


async def test_a_streamed_chat_completion_arrives_token_by_token_and_ends_with_done(
    front: Front,
) -> None:
    """``stream=True`` yields ``chat.completion.chunk``s: a first chunk with the assistant role,
    one chunk per token of the synthetic answer, a last one with ``finish_reason``, and the usage
    chunk asked for; the last content chunk names the satellite and station that served it; on
    the wire the stream ends ``data: [DONE]``."""
    prompt = "count the satellites"
    expected = predict_answer(SLOW, (), prompt, MAX_TOKENS)
    async with front.client() as client:
        stream = await client.chat.completions.create(
            model=SLOW.name,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert tuple(pieces) == expected.pieces
    assert chunks[-2].choices[0].finish_reason == "stop"
    served = (chunks[-2].model_extra or {})["groundplane"]
    assert (served["satellite_id"], served["station_id"], served["attempts"]) == (
        FIRST,
        STATION.station_id,
        1,
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(expected.pieces)
    async with httpx.AsyncClient(timeout=10.0) as http:
        response = await http.post(
            f"{front.door.base_url}/completions",
            headers={"Authorization": f"Bearer {TOKENS['alpha']}", **LOCATION},
            json={"model": FAST.name, "prompt": "hi", "max_tokens": MAX_TOKENS, "stream": True},
        )
    events = [line for line in response.text.splitlines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "data: [DONE]"
    text = "".join(json.loads(e[len("data: ") :])["choices"][0]["text"] for e in events[:-1])
    assert text == predict_answer(FAST, (), "hi", MAX_TOKENS).text


async def test_models_lists_what_satellites_in_view_offer_now(front: Front) -> None:
    """``models.list()`` names each model the nodes in view serve, with the satellites and
    station serving it; with nothing in view the list is empty and a model is 404. Requests one
    after another on a keep-alive connection take a fraction of the 40 ms delayed ACK each would
    wait for if the front door's sockets kept Nagle's algorithm on (uvicorn writes a response's
    head and body separately)."""
    async with httpx.AsyncClient(
        base_url=front.door.base_url,
        headers={"Authorization": f"Bearer {TOKENS['alpha']}"},
        timeout=5.0,
    ) as http:
        latencies_s = []
        for _ in range(15):
            started = time.perf_counter()
            (await http.get("/models")).raise_for_status()
            latencies_s.append(time.perf_counter() - started)
    assert sorted(latencies_s)[len(latencies_s) // 2] < 0.02
    async with front.client() as client:
        models = [m async for m in client.models.list()]
        assert [m.id for m in models] == sorted([FAST.name, SLOW.name])
        assert (models[0].model_extra or {})["satellites"] == [
            {"satellite_id": sat, "station_id": STATION.station_id}
            for sat in sorted([FIRST, SECOND])
        ]
        assert (await client.models.retrieve(FAST.name)).id == FAST.name
        front.system.tables.publish(gateway_table(2, visible=False))
        assert [m async for m in client.models.list()] == []
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve(FAST.name)


async def test_a_wrong_key_and_an_unknown_model_are_openai_errors(front: Front) -> None:
    """A key no tenant has raises ``AuthenticationError`` (401, OpenAI's error shape, code
    ``invalid_api_key``); an unknown model raises ``NotFoundError`` (404) naming the known
    ones; a deadline shorter than the gateway's margin for a hop is a 504; none reaches a
    node."""
    async with front.client("not-a-tenant-token-0000") as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(
                model=FAST.name, messages=[{"role": "user", "content": "let me in"}]
            )
    assert refused.value.status_code == 401
    assert refused.value.code == "invalid_api_key"
    async with front.client() as client:
        with pytest.raises(openai.NotFoundError, match=FAST.name):
            await client.completions.create(model="no-such-model", prompt="hello?")
        with pytest.raises(openai.APIStatusError) as late:
            await client.completions.create(
                model=FAST.name,
                prompt="too late",
                extra_headers={"X-Groundplane-Timeout": "0.01"},
            )
    assert late.value.status_code == 504
    assert front.system.executions() == 0


async def test_no_satellite_in_view_is_503_with_retry_after_the_next_aos(front: Front) -> None:
    """With no satellite in view the call raises ``APIStatusError`` 503 whose ``Retry-After``
    is the wall seconds to the next AOS (rounded up) and whose next-opportunity header is its
    instant; a streamed call gets the same status before any event; no node ran."""
    aos_in_s = 600.0
    front.system.tables.publish(gateway_table(2, visible=False, aos_in_s=aos_in_s))
    async with front.client() as client:
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(
                model=FAST.name, messages=[{"role": "user", "content": "anyone up there?"}]
            )
        with pytest.raises(openai.APIStatusError) as streamed:
            await client.chat.completions.create(
                model=FAST.name, messages=[{"role": "user", "content": "stream?"}], stream=True
            )
    assert streamed.value.status_code == 503
    error = refused.value
    assert error.status_code == 503
    elapsed_s = (front.system.clock.now() - EPOCH).total_seconds()
    assert int(error.response.headers["retry-after"]) == pytest.approx(aos_in_s - elapsed_s, abs=1)
    assert error.response.headers[NEXT_OPPORTUNITY_HEADER] == format_utc(
        EPOCH + timedelta(seconds=aos_in_s)
    )
    assert front.system.executions() == 0


async def test_admission_refusals_are_429_with_retry_after(front: Front) -> None:
    """Tenant beta (1 running, 1 queued) sends 4 slow calls at once: 2 are served and 2 raise
    ``RateLimitError`` (429) with a positive ``Retry-After``."""

    async def call(client: openai.AsyncOpenAI, i: int) -> int:
        try:
            await client.chat.completions.create(
                model=SLOW.name, messages=[{"role": "user", "content": f"flood {i}"}]
            )
        except openai.RateLimitError as refused:
            retry_after_s.append(int(refused.response.headers["retry-after"]))
            return 429
        return 200

    retry_after_s: list[int] = []
    async with front.client(TOKENS["beta"]) as client:
        statuses = await asyncio.gather(*(call(client, i) for i in range(4)))
    assert sorted(statuses) == [200, 200, 429, 429]
    assert len(retry_after_s) == 2
    assert all(s >= 1 for s in retry_after_s)


async def test_an_idempotency_key_runs_the_call_once(front: Front) -> None:
    """Two concurrent completions with the same ``Idempotency-Key`` get the same answer and id;
    the nodes ran it once."""
    async with front.client() as client:
        first, second = await asyncio.gather(
            *(
                client.completions.create(
                    model=FAST.name,
                    prompt="do it once",
                    extra_headers={"Idempotency-Key": "order-42"},
                )
                for _ in range(2)
            )
        )
    assert first.id == second.id
    assert first.choices[0].text == second.choices[0].text
    assert front.system.executions() == 1


async def test_stopping_lets_a_running_stream_finish_and_refuses_new_connections(
    gateway_system: GatewaySystem,
) -> None:
    """A stream running when the front door is told to stop (the gateway's drain) still
    delivers every token and ``[DONE]``, and ``stop()`` returns only once it has ended; the
    port refuses connections afterwards."""
    app = gateway_system.app
    door = HttpFrontDoor(
        HttpApi(app.gateway, app.settings.tenants, gateway_system.tables),
        "127.0.0.1:0",
        drain_grace_s=5.0,
    )
    prompt = "finish what you started"
    async with (
        serving(door),
        httpx.AsyncClient(base_url=door.base_url, timeout=10.0) as http,
        http.stream(
            "POST",
            "/completions",
            headers={"Authorization": f"Bearer {TOKENS['alpha']}", **LOCATION},
            json={"model": SLOW.name, "prompt": prompt, "max_tokens": MAX_TOKENS, "stream": True},
        ) as response,
    ):
        loop = asyncio.get_running_loop()
        lines = response.aiter_lines()
        first = await anext(lines)
        stopping = asyncio.ensure_future(door.stop())
        stopped_at: list[float] = []
        stopping.add_done_callback(lambda _: stopped_at.append(loop.time()))
        rest = [line async for line in lines]
        stream_ended_at = loop.time()
        await stopping
    assert stopped_at[0] >= stream_ended_at, "stop() returned while the stream was running"
    events = [line for line in [first, *rest] if line]
    assert events[-1] == "data: [DONE]"
    text = "".join(json.loads(e[len("data: ") :])["choices"][0]["text"] for e in events[:-1])
    assert text == predict_answer(SLOW, (), prompt, MAX_TOKENS).text
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{door.base_url}/models")


async def test_the_gateway_app_serves_the_front_door_and_closes_it_on_exit(
    tmp_path: Path,
) -> None:
    """``serve gateway --http-listen`` becomes the app's ``http_address``; the app then serves
    the OpenAI API at ``http_base_url`` (the models of its route table) and no longer accepts
    connections once it has exited."""
    args = build_parser().parse_args(
        [
            "serve",
            "gateway",
            "--routing",
            "127.0.0.1:50052",
            "--handoff",
            "127.0.0.1:50053",
            "--broker",
            "mqtt://gp-service:pw@127.0.0.1:1883",
            "--http-listen",
            "127.0.0.1:0",
        ]
    )
    assert gateway_settings(args, load_tenants(None)).http_address == "127.0.0.1:0"
    registry = TenantRegistry([TenantConfig(Tenant("alpha"), (TOKENS["alpha"],))])
    async with PrivateBroker(nodes=(), workdir=tmp_path / "broker") as broker:
        settings = GatewaySettings(
            broker=broker.address,
            tenants=registry,
            instance_id="gw-http",
            drain_grace_s=0.1,
            unready_delay_s=0.0,
            http_address="127.0.0.1:0",
        )
        async with GatewayApp(
            settings, SimulatedClock(EPOCH), tables=LocalTableSource(gateway_table(1))
        ) as app:
            base_url = app.http_base_url
            assert base_url is not None
            async with openai.AsyncOpenAI(
                base_url=base_url, api_key=TOKENS["alpha"], max_retries=0
            ) as client:
                assert [m.id async for m in client.models.list()] == sorted([FAST.name, SLOW.name])
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{base_url}/models")


@pytest.mark.slow
async def test_a_session_keeps_its_context_across_a_handoff(make_system: SystemFactory) -> None:
    """Turns of one session (the request's ``user`` field) through the HTTP front door go to
    the handoff manager; they continue while the session is handed from one satellite to the
    next, and every answer equals the synthetic model's answer over the whole conversation so
    far: the context moved with the session. The satellite header changes at the handoff."""
    registry = TenantRegistry(
        [TenantConfig(Tenant("alpha"), (TOKENS["alpha"],), location=(USER[0], USER[1]))]
    )
    async with running_handoff(make_system, 25.0) as handoff:
        system = handoff.system
        gateway = InferenceGateway(
            clock=system.clock,
            caller=FakeCaller({}, {}),
            tables=LocalTableSource(gateway_table(1)),
            session_turns=handoff.turns,
        )
        api = HttpApi(gateway, registry, LocalTableSource(gateway_table(1)))
        async with (
            serving(HttpFrontDoor(api, "127.0.0.1:0", drain_grace_s=0.5)) as door,
            openai.AsyncOpenAI(
                base_url=door.base_url, api_key=TOKENS["alpha"], max_retries=0, timeout=10.0
            ) as client,
        ):
            context: list[Turn] = []
            satellites: list[str] = []

            def handed_off() -> bool:
                events = system.manager.list_handoffs(subject_id="alpha:chat-http")
                return any(e.state == "completed" for e in events)

            async with asyncio.timeout(20):
                index = 0
                while len(set(satellites)) < 2:
                    prompt = f"question {index} about the orbit"
                    # The whole conversation, as OpenAI clients send it; the session holds it.
                    messages: list[ChatCompletionMessageParam] = []
                    for turn in context:
                        messages.append({"role": "user", "content": turn.prompt})
                        messages.append({"role": "assistant", "content": turn.answer})
                    messages.append({"role": "user", "content": prompt})
                    raw = await client.chat.completions.with_raw_response.create(
                        model=CHAT.name,
                        messages=messages,
                        max_tokens=8,
                        user="chat-http",
                        extra_headers={"Idempotency-Key": f"turn-{index}"},
                    )
                    answer = raw.parse().choices[0].message.content
                    assert answer == predict_answer(CHAT, tuple(context), prompt, 8).text, (
                        f"turn {index} answered from a wrong context"
                    )
                    context.append(Turn(prompt, answer))
                    satellites.append(raw.headers[SATELLITE_HEADER])
                    index += 1
                    await asyncio.sleep(0.2)
    assert handed_off()
    assert len(set(satellites)) >= 2
