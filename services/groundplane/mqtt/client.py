"""The one MQTT client of groundplane: v5 only, reconnecting, acknowledging after handling.

``MqttClient`` wraps aiomqtt (which drives paho-mqtt on the asyncio loop) and adds what every
component needs:

* **MQTT v5 only**, so a refused publish comes back as a PUBACK reason code; :meth:`publish`
  raises :class:`BrokerRefusedError` (e.g. 0x87 *Not authorized*) instead of returning silently.
* **TLS** when the address has :class:`~groundplane.mqtt.broker.BrokerTls` files (``mqtts://``):
  the broker is verified against the CA, the client presents its certificate (whose common name
  is its account on a ``use_identity_as_username`` broker); the files are read at every connect.
* **TCP_NODELAY** on the client socket (Nagle's algorithm costs ~88 ms per QoS 1 round trip on
  loopback against ~0.5 ms without).
* **Reconnect** with jittered exponential backoff: 1 s × 1.6ⁿ, capped at 120 s, ±20 % (see
  :class:`Backoff`), **resubscribing** every registered filter after each connect. A filter the
  broker refuses then (e.g. 0x87 *Not authorized*) is dropped, logged, kept in
  :attr:`MqttClient.refused_subscriptions` and reported to the subscriber's ``on_refused``; the
  connection and the other filters carry on.
* **Manual acknowledgement**: a QoS 1 message is acknowledged only after its handler returned
  (or failed, which is logged), and acknowledgements go out in the order the messages arrived,
  as MQTT requires. A message whose handler did not finish before the connection dropped is
  redelivered by the broker when the session resumes (``persistent_session=True``).
* **Message expiry** from a deadline: ``publish(..., deadline=...)`` sets the v5
  MessageExpiryInterval to the time left (in wall seconds, so a fast simulated clock shortens it),
  and refuses to publish a message whose deadline already passed.

Every task the client starts belongs to its ``asyncio.TaskGroup`` and has a name; every await that
does I/O has a timeout; cancelling the owner cancels the connection loop and the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import (
    DeadlineExceeded,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)
from groundplane.mqtt import topics
from groundplane.mqtt.broker import BrokerAddress, BrokerTls

log = structlog.get_logger("groundplane.mqtt.client")

DEFAULT_IO_TIMEOUT_S = 10.0
NOT_AUTHORIZED = 0x87
SUBSCRIBE_BATCH = 256
"""Most filters sent in one SUBSCRIBE request (a resubscribe after a connect is split)."""


class BrokerRefusedError(PermissionDenied):
    """The broker answered a publish or subscribe with a v5 failure reason code (≥ 0x80)."""

    def __init__(self, topic: str, reason_code: int, reason: str) -> None:
        super().__init__(
            f"broker refused {topic!r}: reason code 0x{reason_code:02X} ({reason}); "
            "a node account may only use gp/v1/node/<its id>/#"
        )
        self.topic = topic
        self.reason_code = reason_code
        self.reason = reason


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential backoff: ``min(cap_s, base_s × factor**attempt) × (1 ± jitter)``."""

    base_s: float = 1.0
    factor: float = 1.6
    cap_s: float = 120.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (self.base_s > 0 and self.factor >= 1 and self.cap_s >= self.base_s):
            raise InvalidArgument(
                f"backoff needs base_s > 0, factor >= 1 and cap_s >= base_s, got base_s="
                f"{self.base_s}, factor={self.factor}, cap_s={self.cap_s}"
            )
        if not 0 <= self.jitter < 1:
            raise InvalidArgument(f"backoff jitter must be in [0, 1), got {self.jitter}")

    def nominal_s(self, attempt: int) -> float:
        """The un-jittered delay before retry number ``attempt`` (0 for the first retry)."""
        if attempt <= 0:
            return self.base_s
        # Compare in log space so a long outage cannot overflow the power.
        if attempt * math.log(self.factor) >= math.log(self.cap_s / self.base_s):
            return self.cap_s
        return min(self.cap_s, self.base_s * self.factor**attempt)

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """A jittered delay for retry number ``attempt``."""
        return self.nominal_s(attempt) * (1.0 + self.jitter * (2.0 * rng.random() - 1.0))

    def bound_s(self, attempt: int) -> float:
        """The longest delay retry number ``attempt`` can wait."""
        return self.nominal_s(attempt) * (1.0 + self.jitter)


def tls_context(tls: BrokerTls) -> ssl.SSLContext:
    """A client TLS context: verify the broker against ``tls.ca_file`` (and its host name), and
    present ``tls``'s certificate when it has one. Built for every connect, so certificates
    rotated on disk (cert-manager) are used from the next connection on."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as error:
        raise InvalidArgument(
            f"broker TLS files (CA {tls.ca_file}, certificate {tls.cert_file}, key "
            f"{tls.key_file}) could not be loaded: {error}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class ReceivedMessage:
    """One delivered message, as a handler sees it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    message_expiry_s: int | None
    """Seconds of message expiry left when the broker delivered it (None: never expires)."""
    received_monotonic_s: float
    """Wall monotonic time of arrival (for forwarding the remaining expiry)."""
    user_properties: tuple[tuple[str, str], ...] = ()
    """The v5 user properties, in order (e.g. the ``traceparent`` of a traced request)."""


def _publish_properties(
    expiry_wall_s: float | None, user_properties: Sequence[tuple[str, str]]
) -> Properties | None:
    """The v5 PUBLISH properties: message expiry (whole seconds, at least 1), user properties."""
    if expiry_wall_s is None and not user_properties:
        return None
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if expiry_wall_s is not None:
        properties.MessageExpiryInterval = max(1, math.ceil(expiry_wall_s))
    if user_properties:
        properties.UserProperty = list(user_properties)
    return properties


@dataclass(frozen=True)
class LastWill:
    """A message the broker publishes for this client when it vanishes without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


Handler = Callable[[ReceivedMessage], Awaitable[None]]


RefusalCallback = Callable[[BrokerRefusedError], None]
"""Told when the broker refuses a filter while the client (re)subscribes it after a connect."""


@dataclass
class _Subscription:
    topic_filter: str
    qos: int
    handler: Handler
    on_refused: RefusalCallback | None = None
    match_filter: str = field(init=False)
    """The filter without a ``$share/<group>/`` prefix, for matching incoming topics: checked and
    stripped once here (a malformed shared filter is refused at :meth:`MqttClient.subscribe`),
    not per message inside paho's callback."""

    def __post_init__(self) -> None:
        self.match_filter = topics.without_share_group(self.topic_filter)


class _TrieNode:
    __slots__ = ("children", "subscriptions")

    def __init__(self) -> None:
        self.children: dict[str, _TrieNode] = {}
        self.subscriptions: dict[str, tuple[int, _Subscription]] = {}


class _Subscriptions:
    """The registered filters by filter text, indexed by topic level for matching.

    An incoming message is matched in time proportional to its topic's depth, not to the number
    of filters: a nodes shard registers thousands (two per hosted satellite).
    """

    def __init__(self) -> None:
        self._by_filter: dict[str, _Subscription] = {}
        self._root = _TrieNode()
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._by_filter)

    def get(self, topic_filter: str) -> _Subscription | None:
        return self._by_filter.get(topic_filter)

    def values(self) -> list[_Subscription]:
        return list(self._by_filter.values())

    def add(self, subscription: _Subscription) -> None:
        self.pop(subscription.topic_filter)
        self._by_filter[subscription.topic_filter] = subscription
        node = self._root
        for level in subscription.match_filter.split("/"):
            node = node.children.setdefault(level, _TrieNode())
        self._sequence += 1
        node.subscriptions[subscription.topic_filter] = (self._sequence, subscription)

    def pop(self, topic_filter: str) -> _Subscription | None:
        subscription = self._by_filter.pop(topic_filter, None)
        if subscription is None:
            return None
        path = [self._root]
        for level in subscription.match_filter.split("/"):
            path.append(path[-1].children[level])
        path[-1].subscriptions.pop(topic_filter, None)
        levels = subscription.match_filter.split("/")
        for depth in range(len(levels), 0, -1):  # prune empty branches
            node = path[depth]
            if node.children or node.subscriptions:
                break
            del path[depth - 1].children[levels[depth - 1]]
        return subscription

    def matching(self, topic: str) -> list[Handler]:
        """Handlers of every filter matching ``topic``, in the order they were registered.

        MQTT rules: ``+`` matches one level, ``#`` the rest (including none); a topic starting
        with ``$`` is not matched by a wildcard in the first level.
        """
        levels = topic.split("/")
        found: list[tuple[int, _Subscription]] = []
        dollar = topic.startswith("$")
        stack = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            wild_ok = not (dollar and depth == 0)
            if wild_ok and (rest := node.children.get("#")) is not None:
                found.extend(rest.subscriptions.values())
            if depth == len(levels):
                found.extend(node.subscriptions.values())
                continue
            if (exact := node.children.get(levels[depth])) is not None:
                stack.append((exact, depth + 1))
            if wild_ok and (one := node.children.get("+")) is not None:
                stack.append((one, depth + 1))
        found.sort(key=lambda item: item[0])
        return [subscription.handler for _, subscription in found]


@dataclass(eq=False)
class _AckSlot:
    mid: int
    qos: int
    done: bool = False


class _InOrderAcks:
    """Acknowledge QoS ≥ 1 messages of one connection in arrival order, once each is handled."""

    def __init__(self, paho_client: paho.Client) -> None:
        self._paho = paho_client
        self._queue: deque[_AckSlot] = deque()
        self.closed = False

    def receive(self, mid: int, qos: int) -> _AckSlot | None:
        if qos == 0:
            return None
        slot = _AckSlot(mid, qos)
        self._queue.append(slot)
        return slot

    def handled(self, slot: _AckSlot | None) -> None:
        if slot is None:
            return
        slot.done = True
        while self._queue and self._queue[0].done:
            head = self._queue.popleft()
            if not self.closed:
                self._paho.ack(head.mid, head.qos)


@dataclass
class _Session:
    """State of one broker connection."""

    aio: aiomqtt.Client
    acks: _InOrderAcks
    pending_pubacks: dict[int, asyncio.Future[ReasonCode]] = field(default_factory=dict)

    @property
    def paho(self) -> paho.Client:
        return self.aio._client


class MqttClient:
    """A reconnecting MQTT v5 client with handler-style subscriptions.

    ::

        async with MqttClient(broker.address, client_id="links", clock=clock) as client:
            await client.subscribe("gp/v1/ground/+/tx/#", handle)
            await client.publish("gp/v1/link/x/y/state", data, retain=True)

    ``persistent_session=True`` keeps the broker-side session (subscriptions and queued QoS 1
    messages) for ``session_expiry_s`` while the client is away; otherwise every connect starts
    clean and the client resubscribes.

    ``max_inflight_messages`` raises paho's limit of unacknowledged QoS 1 publishes (20) for a
    client that publishes for many (a nodes shard); more wait in paho's queue.

    ``will`` may be a callable: it is called before every connect, so a client can carry a new
    Will per connection (the node agent puts a fresh incarnation epoch in each). ``on_connect``
    is awaited, as a task of the client, after every successful connect (argument: the connection
    count), when publishing is possible (births, state announcements).
    """

    def __init__(  # noqa: PLR0913 - every MQTT session tunable, explicit and by keyword
        self,
        address: BrokerAddress,
        *,
        client_id: str,
        clock: Clock,
        persistent_session: bool = False,
        session_expiry_s: int = 3600,
        keepalive_s: int = 30,
        io_timeout_s: float = DEFAULT_IO_TIMEOUT_S,
        backoff: Backoff | None = None,
        will: LastWill | Callable[[], LastWill] | None = None,
        max_concurrent_handlers: int = 64,
        max_inflight_messages: int | None = None,
        rng: random.Random | None = None,
        on_connect: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        if not client_id or len(client_id) > 128:
            raise InvalidArgument(f"client_id must be 1-128 characters, got {client_id!r}")
        self._address = address
        self._client_id = client_id
        self._clock = clock
        self._persistent = persistent_session
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s
        self._io_timeout_s = io_timeout_s
        self._backoff = backoff or Backoff()
        self._will = will
        self._on_connect = on_connect
        self._rng = rng or random.Random()
        self._handler_slots = asyncio.Semaphore(max_concurrent_handlers)
        self._max_inflight = max_inflight_messages
        self._subscriptions = _Subscriptions()
        self._refused: dict[str, BrokerRefusedError] = {}
        self._session: _Session | None = None
        self._connected = asyncio.Event()
        self._connections = 0
        self._tasks: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._log = log.bind(client_id=client_id)
        self.subscribe_requests_total = 0
        self.refused_publishes_total = 0
        """Publishes the broker refused (a failure PUBACK, e.g. 0x87 *Not authorized*), each also
        logged as ``mqtt_publish_refused``."""
        """SUBSCRIBE packets sent (each of at most :data:`SUBSCRIBE_BATCH` filters). Filters
        registered before the client connects go out together in the first connect's request."""

    # -- state -----------------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def connections(self) -> int:
        """How many times this client has connected (1 after the first connect)."""
        return self._connections

    @property
    def refused_subscriptions(self) -> dict[str, BrokerRefusedError]:
        """Filters the broker refused when they were (re)subscribed after a connect, with the
        refusal; such a filter is no longer subscribed (subscribing it again clears it)."""
        return dict(self._refused)

    @property
    def backoff(self) -> Backoff:
        return self._backoff

    def tcp_nodelay(self) -> bool:
        """Whether TCP_NODELAY is set on the current connection's socket."""
        session = self._session
        sock = session.paho.socket() if session is not None else None
        if not isinstance(sock, socket.socket):
            return False
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        """Return once connected; raise Unavailable after ``timeout_s`` (default: I/O timeout)."""
        timeout = self._io_timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            raise Unavailable(
                f"not connected to the broker at {self._address.host}:{self._address.port} "
                f"within {timeout} s"
            ) from None

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._runner = self._tasks.create_task(
            self._run(), name=f"mqtt-connection:{self._client_id}"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tasks is not None, "MqttClient used outside 'async with'"
        if self._runner is not None:
            self._runner.cancel()
        for task in list(self._handler_tasks):
            task.cancel()
        await self._tasks.__aexit__(exc_type, exc, tb)
        self._tasks = None

    # -- subscribe / publish ---------------------------------------------------------------------

    async def subscribe(
        self,
        topic_filter: str,
        handler: Handler,
        *,
        qos: int = 1,
        on_refused: RefusalCallback | None = None,
    ) -> None:
        """Call ``handler`` for each message matching ``topic_filter``, now and after reconnects.

        If connected, waits for the SUBACK and raises :class:`BrokerRefusedError` when the broker
        refuses the filter; if not connected, the filter is subscribed on the next connect. When
        the broker refuses it on a later connect, the filter is dropped, the refusal is kept in
        :attr:`refused_subscriptions` and ``on_refused`` is called with it.
        """
        if qos not in (0, 1):
            raise InvalidArgument(f"qos must be 0 or 1 (QoS 2 is not used), got {qos}")
        await self.subscribe_many([(topic_filter, handler)], qos=qos, on_refused=on_refused)

    async def subscribe_many(
        self,
        filters: Sequence[tuple[str, Handler]],
        *,
        qos: int = 1,
        on_refused: RefusalCallback | None = None,
    ) -> None:
        """:meth:`subscribe` several ``(filter, handler)`` pairs in one SUBSCRIBE request.

        Raises :class:`BrokerRefusedError` for the first filter refused; every refused filter is
        unregistered, the granted ones stay.
        """
        if qos not in (0, 1):
            raise InvalidArgument(f"qos must be 0 or 1 (QoS 2 is not used), got {qos}")
        subscriptions = [
            _Subscription(topic_filter, qos, handler, on_refused)
            for topic_filter, handler in filters
        ]
        for subscription in subscriptions:
            self._subscriptions.add(subscription)
            self._refused.pop(subscription.topic_filter, None)
        session = self._session
        if session is None or not subscriptions:
            return
        try:
            refusals = await self._subscribe_each(session, subscriptions)
        except aiomqtt.MqttError as error:
            self._log.warning(
                "subscribe_deferred",
                topic_filter=subscriptions[0].topic_filter,
                filters=len(subscriptions),
                error=str(error),
            )
            return
        refused = [r for r in refusals if r is not None]
        for refusal in refused:
            if self._subscriptions.get(refusal.topic) is not None:
                self._subscriptions.pop(refusal.topic)
        if refused:
            raise refused[0]

    async def unsubscribe(self, topic_filter: str) -> None:
        """Stop delivering ``topic_filter``."""
        await self.unsubscribe_many([topic_filter])

    async def unsubscribe_many(self, topic_filters: Sequence[str]) -> None:
        """Stop delivering each of ``topic_filters``, in UNSUBSCRIBE requests of at most
        :data:`SUBSCRIBE_BATCH` filters sent one after the other."""
        removed = [f for f in topic_filters if self._subscriptions.pop(f) is not None]
        session = self._session
        if session is None:
            return
        for first in range(0, len(removed), SUBSCRIBE_BATCH):
            batch = removed[first : first + SUBSCRIBE_BATCH]
            with contextlib.suppress(aiomqtt.MqttError):
                await session.aio.unsubscribe(batch, timeout=self._io_timeout_s)

    async def publish(  # noqa: PLR0913 - MQTT PUBLISH options (qos, retain, expiry) are keywords
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        deadline: datetime | None = None,
        expiry_s: float | None = None,
        timeout_s: float | None = None,
        user_properties: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Publish and, for QoS 1, wait for the PUBACK.

        ``deadline`` (an instant of the injected clock) sets the message expiry to the time left;
        ``expiry_s`` sets it in wall seconds directly; ``user_properties`` go out as v5 user
        properties (name, value), in order. Raises :class:`BrokerRefusedError` on a
        failure reason code, :class:`DeadlineExceeded` when the deadline has passed, and
        :class:`Unavailable` when not connected (after waiting ``timeout_s``) or the connection
        dropped before the PUBACK.
        """
        if qos not in (0, 1):
            raise InvalidArgument(f"qos must be 0 or 1 (QoS 2 is not used), got {qos}")
        timeout = self._io_timeout_s if timeout_s is None else timeout_s
        expiry_wall_s = expiry_s
        if deadline is not None:
            left_wall_s = (deadline - self._clock.now()).total_seconds() / self._clock.speed
            if left_wall_s <= 0:
                raise DeadlineExceeded(
                    f"deadline {deadline.isoformat()} passed before publishing to {topic!r}"
                )
            expiry_wall_s = (
                left_wall_s if expiry_wall_s is None else min(expiry_wall_s, left_wall_s)
            )
            timeout = min(timeout, left_wall_s)
        if expiry_wall_s is not None and expiry_wall_s <= 0:
            raise DeadlineExceeded(f"message for {topic!r} expired before it was published")
        properties = _publish_properties(expiry_wall_s, user_properties)
        started = asyncio.get_running_loop().time()
        await self.wait_connected(timeout)
        session = self._session
        if session is None:  # dropped between the event and here
            raise Unavailable(f"connection to the broker dropped before publishing to {topic!r}")
        info = session.paho.publish(topic, payload, qos, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise Unavailable(
                f"could not publish to {topic!r}: {paho.error_string(info.rc)} (not connected?)"
            )
        if qos == 0:
            return
        future: asyncio.Future[ReasonCode] = asyncio.get_running_loop().create_future()
        session.pending_pubacks[info.mid] = future
        left_s = max(0.0, timeout - (asyncio.get_running_loop().time() - started))
        try:
            async with asyncio.timeout(left_s):
                reason = await future
        except TimeoutError:
            raise Unavailable(f"no PUBACK for {topic!r} within {timeout} s") from None
        finally:
            session.pending_pubacks.pop(info.mid, None)
        if reason.is_failure:
            self.refused_publishes_total += 1
            self._log.warning("mqtt_publish_refused", topic=topic, reason_code=int(reason.value))
            raise BrokerRefusedError(topic, int(reason.value), str(reason))

    # -- connection loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect_and_serve()
            except (aiomqtt.MqttError, OSError, TimeoutError, Unavailable) as error:
                self._log.warning("mqtt_disconnected", error=str(error) or type(error).__name__)
            if self._session_was_up:
                attempt = 0
            delay_s = self._backoff.delay_s(attempt, self._rng)
            self._log.info("mqtt_reconnect_wait", attempt=attempt, delay_s=round(delay_s, 3))
            attempt += 1
            await asyncio.sleep(delay_s)

    def _make_aio(self) -> aiomqtt.Client:
        connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect_properties.SessionExpiryInterval = self._session_expiry_s if self._persistent else 0
        will = None
        last_will = self._will() if callable(self._will) else self._will
        if last_will is not None:
            will = aiomqtt.Will(last_will.topic, last_will.payload, last_will.qos, last_will.retain)
        aio = aiomqtt.Client(
            self._address.host,
            self._address.port,
            username=self._address.username,
            password=self._address.password,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not self._persistent,
            properties=connect_properties,
            keepalive=self._keepalive_s,
            timeout=self._io_timeout_s,
            will=will,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            max_inflight_messages=self._max_inflight,
            tls_context=None if self._address.tls is None else tls_context(self._address.tls),
        )
        aio._client.manual_ack_set(True)
        return aio

    async def _connect_and_serve(self) -> None:
        self._session_was_up = False
        aio = self._make_aio()
        session = _Session(aio, _InOrderAcks(aio._client))
        aio._client.on_publish = self._puback_callback(session)
        aio._client.on_message = self._message_callback(session)
        try:
            async with asyncio.timeout(self._io_timeout_s):
                await aio.__aenter__()
        except BaseException:
            with contextlib.suppress(Exception):
                aio._client._sock_close()
            raise
        try:
            self._session = session
            await self._resubscribe(session)
            self._session_was_up = True
            self._connections += 1
            self._connected.set()
            self._log.info("mqtt_connected", connections=self._connections)
            if self._on_connect is not None and self._tasks is not None:
                self._tasks.create_task(
                    self._run_on_connect(self._on_connect, self._connections),
                    name=f"mqtt-on-connect:{self._client_id}#{self._connections}",
                )
            disconnected = aio._disconnected
            await asyncio.shield(disconnected)
        finally:
            self._connected.clear()
            self._session = None
            session.acks.closed = True
            for future in session.pending_pubacks.values():
                if not future.done():
                    future.set_exception(
                        Unavailable("connection to the broker dropped before the PUBACK")
                    )
            await self._close(aio)

    async def _run_on_connect(
        self, hook: Callable[[int], Awaitable[None]], connection: int
    ) -> None:
        try:
            await hook(connection)
        except Exception:  # a failing hook must not stop the client
            self._log.exception("mqtt_on_connect_failed", connection=connection)

    async def _close(self, aio: aiomqtt.Client) -> None:
        """Disconnect gracefully if still connected (runs even when cancelled)."""
        try:
            async with asyncio.timeout(self._io_timeout_s):
                await aio.__aexit__(None, None, None)
        except (aiomqtt.MqttError, OSError, TimeoutError) as error:
            self._log.debug("mqtt_close_error", error=str(error))
        finally:
            with contextlib.suppress(Exception):
                aio._client._sock_close()
            if aio._disconnected.done() and not aio._disconnected.cancelled():
                aio._disconnected.exception()  # mark retrieved

    async def _subscribe_each(
        self, session: _Session, subscriptions: list[_Subscription]
    ) -> list[BrokerRefusedError | None]:
        """Subscribe in requests of at most :data:`SUBSCRIBE_BATCH` filters, one after the other
        (a bounded burst for the broker); the refusal of each filter (None: granted)."""
        refusals: list[BrokerRefusedError | None] = []
        for first in range(0, len(subscriptions), SUBSCRIBE_BATCH):
            batch = subscriptions[first : first + SUBSCRIBE_BATCH]
            request = [
                (s.topic_filter, SubscribeOptions(qos=s.qos, retainHandling=1)) for s in batch
            ]
            self.subscribe_requests_total += 1
            codes = await session.aio.subscribe(request, timeout=self._io_timeout_s)
            for subscription, code in zip(batch, codes, strict=False):
                value = int(code.value) if isinstance(code, ReasonCode) else int(str(code))
                if value >= 0x80:
                    reason = str(code) if isinstance(code, ReasonCode) else "refused"
                    refusals.append(BrokerRefusedError(subscription.topic_filter, value, reason))
                else:
                    refusals.append(None)
        return refusals

    async def _resubscribe(self, session: _Session) -> None:
        """Subscribe every registered filter after a connect. A refused filter is dropped and
        reported (log, :attr:`refused_subscriptions`, ``on_refused``): one filter the broker no
        longer allows must not take the connection, or the client's owner, down."""
        subscriptions = list(self._subscriptions.values())
        refusals = await self._subscribe_each(session, subscriptions)
        for subscription, refusal in zip(subscriptions, refusals, strict=False):
            if refusal is None:
                continue
            topic_filter = subscription.topic_filter
            if self._subscriptions.get(topic_filter) is subscription:
                self._subscriptions.pop(topic_filter)
            self._refused[topic_filter] = refusal
            self._log.warning(
                "mqtt_subscription_refused",
                topic_filter=topic_filter,
                reason_code=f"0x{refusal.reason_code:02X}",
                reason=refusal.reason,
            )
            if subscription.on_refused is not None:
                try:
                    subscription.on_refused(refusal)
                except Exception:  # a failing callback must not stop the client
                    self._log.exception("mqtt_on_refused_failed", topic_filter=topic_filter)

    def _puback_callback(self, session: _Session) -> Callable[..., None]:
        def on_publish(
            _client: paho.Client, _userdata: Any, mid: int, reason: ReasonCode, _props: Any
        ) -> None:
            future = session.pending_pubacks.get(mid)
            if future is not None and not future.done():
                future.set_result(reason)

        return on_publish

    def _message_callback(self, session: _Session) -> Callable[..., None]:
        def on_message(_client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
            slot = session.acks.receive(message.mid, message.qos)
            expiry = getattr(message.properties, "MessageExpiryInterval", None)
            user = getattr(message.properties, "UserProperty", None)
            received = ReceivedMessage(
                topic=message.topic,
                payload=bytes(message.payload),
                qos=message.qos,
                retain=bool(message.retain),
                message_expiry_s=int(expiry) if expiry is not None else None,
                received_monotonic_s=asyncio.get_running_loop().time(),
                user_properties=tuple(user) if user else (),
            )
            handlers = self._subscriptions.matching(message.topic)
            if self._tasks is None:
                return
            handling = self._handle(received, handlers, session.acks, slot)
            try:
                task = self._tasks.create_task(
                    handling, name=f"mqtt-handle:{message.topic}#{message.mid}"
                )
            except RuntimeError:  # the client is shutting down (cancelled): drop, unacked
                handling.close()
                return
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_tasks.discard)

        return on_message

    async def _handle(
        self,
        message: ReceivedMessage,
        handlers: list[Handler],
        acks: _InOrderAcks,
        slot: _AckSlot | None,
    ) -> None:
        async with self._handler_slots:
            for handler in handlers:
                try:
                    await handler(message)
                except Exception:  # a failing handler must not stop the client
                    self._log.exception("mqtt_handler_failed", topic=message.topic)
        acks.handled(slot)

    _session_was_up: bool = False
