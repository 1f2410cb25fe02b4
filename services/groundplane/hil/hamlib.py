"""Async clients for Hamlib's network daemons, ``rotctld`` (rotators) and ``rigctld`` (radios).

The clients speak the daemons' *extended response* protocol over one TCP connection: every
command is sent with a leading ``+`` and the daemon answers with an echo line
(``set_pos: 100 45``), zero or more ``Key: value`` lines and a final ``RPRT n`` line, where
``n`` is 0 on success and a negated Hamlib error code otherwise. Measured against Hamlib 4.5.4::

    +p              -> get_pos: / Azimuth: 0.00 / Elevation: 0.00 / RPRT 0
    +P 500 45       -> set_pos: 500 45 / RPRT -1        (outside the configured limits)
    +\\dump_state    -> dump_state: / ... / Minimum Azimuth: 0.000000 / ... / done / RPRT 0
    +F 145800000    -> set_freq: 145800000 / RPRT 0
    +i              -> get_split_freq: / TX Frequency: 437800000 / RPRT 0

``\\dump_caps`` reports the *model's* static capabilities; limits set with ``rotctld -C
min_az=…,max_az=…`` only show in ``\\dump_state`` (and are what the daemon enforces), so
:meth:`RotatorClient.read_limits` prefers ``\\dump_state`` and falls back to ``\\dump_caps``.

Every exchange runs under a timeout. A timeout, EOF or a reply that does not echo the command
means the stream can no longer be trusted: the connection is closed and
:class:`HamlibConnectionError` raised, and the caller reconnects (see :class:`Backoff`). An
``RPRT`` error is logged, counted on the client and raised as :class:`HamlibReplyError`; the
connection stays usable.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import structlog

from groundplane.kernel.errors import FailedPrecondition, InvalidArgument, Unavailable
from groundplane.kernel.validation import finite_number

log = structlog.get_logger("groundplane.hil.hamlib")

#: Hamlib's error codes (``enum rig_errcode_e``), as negated in ``RPRT`` lines.
HAMLIB_ERRORS: dict[int, str] = {
    1: "invalid parameter",
    2: "invalid configuration",
    3: "memory shortage",
    4: "function not implemented",
    5: "communication timed out",
    6: "I/O error",
    7: "internal Hamlib error",
    8: "protocol error",
    9: "command rejected by the device",
    10: "command performed, but argument truncated",
    11: "function not available",
    12: "VFO not targetable",
    13: "error talking on the bus",
    14: "collision on the bus",
    15: "invalid handle or argument",
    16: "invalid VFO",
    17: "argument out of domain of function",
}

DEFAULT_IO_TIMEOUT_S = 2.0


class HamlibConnectionError(Unavailable):
    """The daemon cannot be reached, closed the connection, timed out or answered garbage."""


class HamlibReplyError(FailedPrecondition):
    """The daemon answered ``RPRT -n``: it understood the command and refused or failed it."""

    def __init__(self, command: str, rprt: int, daemon: str) -> None:
        meaning = HAMLIB_ERRORS.get(-rprt, "unknown Hamlib error")
        super().__init__(f"{daemon} answered RPRT {rprt} ({meaning}) to {command!r}")
        self.command = command
        self.rprt = rprt


@dataclass(frozen=True)
class RotatorLimits:
    """Mechanical range of an az/el rotator (mechanical azimuth, may exceed [0, 360))."""

    min_azimuth_deg: float
    max_azimuth_deg: float
    min_elevation_deg: float
    max_elevation_deg: float

    def __post_init__(self) -> None:
        for name in (
            "min_azimuth_deg",
            "max_azimuth_deg",
            "min_elevation_deg",
            "max_elevation_deg",
        ):
            finite_number(f"rotator limit {name}", getattr(self, name))
        if not self.min_azimuth_deg < self.max_azimuth_deg:
            raise InvalidArgument(
                "rotator azimuth limits must satisfy min < max, got "
                f"min_azimuth_deg={self.min_azimuth_deg}, max_azimuth_deg={self.max_azimuth_deg}"
            )
        if not self.min_elevation_deg < self.max_elevation_deg:
            raise InvalidArgument(
                "rotator elevation limits must satisfy min < max, got "
                f"min_elevation_deg={self.min_elevation_deg}, "
                f"max_elevation_deg={self.max_elevation_deg}"
            )
        if not (self.min_elevation_deg >= -90.0 and self.max_elevation_deg <= 180.0):
            raise InvalidArgument(
                "rotator elevation limits must lie in [-90, 180], got "
                f"{self.min_elevation_deg}..{self.max_elevation_deg}"
            )

    @property
    def azimuth_span_deg(self) -> float:
        return self.max_azimuth_deg - self.min_azimuth_deg

    def clamp(self, azimuth_deg: float, elevation_deg: float) -> tuple[float, float]:
        """The nearest mechanically reachable position."""
        return (
            min(max(azimuth_deg, self.min_azimuth_deg), self.max_azimuth_deg),
            min(max(elevation_deg, self.min_elevation_deg), self.max_elevation_deg),
        )

    def contains(
        self, azimuth_deg: float, elevation_deg: float, tolerance_deg: float = 0.0
    ) -> bool:
        return (
            self.min_azimuth_deg - tolerance_deg
            <= azimuth_deg
            <= self.max_azimuth_deg + tolerance_deg
            and self.min_elevation_deg - tolerance_deg
            <= elevation_deg
            <= self.max_elevation_deg + tolerance_deg
        )


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential backoff for reconnects (wall-clock seconds).

    Attempt ``n`` (from 0) waits a uniformly random time in
    ``[(1 - jitter) * d, d]`` with ``d = min(max_s, initial_s * factor**n)``, so many stations
    that lost the same daemon do not reconnect in lock step.
    """

    initial_s: float = 0.2
    max_s: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s):
            raise InvalidArgument(
                f"backoff needs 0 < initial_s <= max_s, got initial_s={self.initial_s}, "
                f"max_s={self.max_s}"
            )
        if self.factor < 1.0:
            raise InvalidArgument(f"backoff factor must be >= 1, got {self.factor}")
        if not 0.0 <= self.jitter <= 1.0:
            raise InvalidArgument(f"backoff jitter must be in [0, 1], got {self.jitter}")

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_s, self.initial_s * self.factor ** max(0, attempt))
        return ceiling * (1.0 - self.jitter * rng.random())


def _parse_rprt(line: str) -> int | None:
    if not line.startswith("RPRT "):
        return None
    try:
        return int(line[5:].strip())
    except ValueError:
        return None


def _fields(lines: Sequence[str]) -> dict[str, str]:
    """``Key: value`` lines of a reply as a dict (tabs and spaces around the value dropped)."""
    out: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _float_field(fields: dict[str, str], key: str, command: str, daemon: str) -> float:
    raw = fields.get(key)
    try:
        value = float(raw) if raw is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise HamlibConnectionError(
            f"{daemon} reply to {command!r} lacks a numeric {key!r} field (got {raw!r})"
        )
    return value


class HamlibClient:
    """One TCP connection to a Hamlib daemon speaking the extended response protocol."""

    daemon = "hamlib daemon"

    def __init__(self, host: str, port: int, *, io_timeout_s: float = DEFAULT_IO_TIMEOUT_S) -> None:
        if not 0 < port < 65536:
            raise InvalidArgument(f"{self.daemon} port must be in 1..65535, got {port}")
        if not io_timeout_s > 0:
            raise InvalidArgument(f"io_timeout_s must be positive seconds, got {io_timeout_s}")
        self.host = host
        self.port = port
        self.io_timeout_s = io_timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        #: ``RPRT`` error replies received over this client's lifetime (all connections).
        self.reply_errors = 0
        #: Connections lost (timeout, EOF, garbage) over this client's lifetime.
        self.connection_failures = 0
        #: Commands sent, by the long name the daemon echoes (``set_pos``, ``get_freq``, …).
        self.commands: collections.Counter[str] = collections.Counter()
        self._log = log.bind(daemon=self.daemon, host=host, port=port)

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def connect(self) -> None:
        """Open the connection (closing any previous one)."""
        await self.close()
        try:
            async with asyncio.timeout(self.io_timeout_s):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise HamlibConnectionError(
                f"cannot connect to {self.daemon} at {self.host}:{self.port}: "
                f"{exc.__class__.__name__} {exc}"
            ) from None
        self._reader, self._writer = reader, writer
        self._log.info("hamlib_connected")

    def _drop_connection(self) -> None:
        """Close the socket at once (no await: usable while being cancelled)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(self.io_timeout_s):
                await writer.wait_closed()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _fail(self, command: str, why: str) -> HamlibConnectionError:
        self.connection_failures += 1
        self._log.warning("hamlib_connection_lost", command=command, reason=why)
        await self.close()
        return HamlibConnectionError(
            f"{self.daemon} at {self.host}:{self.port} failed on {command!r}: {why}"
        )

    async def request(self, command: str, echo: str) -> list[str]:
        """Send ``+command`` and return the reply's body lines (between echo and ``RPRT``).

        ``echo`` is the long command name the daemon echoes (``set_pos``); a reply echoing
        anything else means the stream is out of step and the connection is dropped.
        """
        if "\n" in command or "\r" in command:
            raise InvalidArgument(f"a Hamlib command is one line, got {command!r}")
        async with self._lock:
            reader, writer = self._reader, self._writer
            if reader is None or writer is None:
                raise HamlibConnectionError(
                    f"not connected to {self.daemon} at {self.host}:{self.port}"
                )
            self.commands[echo] += 1
            lines: list[str] = []
            try:
                async with asyncio.timeout(self.io_timeout_s):
                    writer.write(f"+{command}\n".encode("ascii"))
                    await writer.drain()
                    while True:
                        raw = await reader.readline()
                        if not raw:
                            raise await self._fail(command, "connection closed by the daemon")
                        line = raw.decode("ascii", errors="replace").rstrip("\r\n")
                        rprt = _parse_rprt(line)
                        if rprt is not None:
                            break
                        lines.append(line)
            except TimeoutError:
                raise await self._fail(
                    command, f"no complete reply within {self.io_timeout_s} s"
                ) from None
            except (OSError, UnicodeError) as exc:
                raise await self._fail(command, f"{exc.__class__.__name__} {exc}") from None
            except asyncio.CancelledError:
                # The reply to this command may still arrive: the next command would read it
                # as its own. An unfinished exchange puts the stream out of step, so drop it.
                self._drop_connection()
                raise
        if not lines or not lines[0].startswith(f"{echo}:"):
            got = lines[0] if lines else f"RPRT {rprt}"
            raise await self._fail(command, f"reply echoed {got!r}, expected {echo}:")
        if rprt != 0:
            self.reply_errors += 1
            error = HamlibReplyError(command, rprt, self.daemon)
            self._log.error(
                "hamlib_error_reply",
                command=command,
                rprt=rprt,
                meaning=HAMLIB_ERRORS.get(-rprt, "unknown Hamlib error"),
                reply_errors=self.reply_errors,
            )
            raise error
        return lines[1:]


class RotatorClient(HamlibClient):
    """Client of ``rotctld``."""

    daemon = "rotctld"

    async def get_position(self) -> tuple[float, float]:
        """Reported ``(azimuth_deg, elevation_deg)`` (mechanical azimuth)."""
        fields = _fields(await self.request("p", "get_pos"))
        return (
            _float_field(fields, "Azimuth", "p", self.daemon),
            _float_field(fields, "Elevation", "p", self.daemon),
        )

    async def set_position(self, azimuth_deg: float, elevation_deg: float) -> None:
        az = finite_number("azimuth_deg", azimuth_deg)
        el = finite_number("elevation_deg", elevation_deg)
        await self.request(f"P {az:.2f} {el:.2f}", "set_pos")

    async def stop(self) -> None:
        await self.request("S", "stop")

    async def park(self) -> None:
        """The device's own park (``K``); the Hamlib dummy parks at az 0, el 0."""
        await self.request("K", "park")

    async def dump_caps(self) -> dict[str, str]:
        return _fields(await self.request("\\dump_caps", "dump_caps"))

    async def dump_state(self) -> dict[str, str]:
        return _fields(await self.request("\\dump_state", "dump_state"))

    async def read_limits(self) -> RotatorLimits:
        """The limits the daemon enforces: ``\\dump_state`` if it has them, else ``\\dump_caps``."""
        keys = ("Minimum Azimuth", "Maximum Azimuth", "Minimum Elevation", "Maximum Elevation")
        try:
            state = await self.dump_state()
        except HamlibReplyError:
            state = {}
        if all(key in state for key in keys):
            values = [_float_field(state, key, "\\dump_state", self.daemon) for key in keys]
        else:
            caps = await self.dump_caps()
            values = [
                _float_field(caps, key, "\\dump_caps", self.daemon)
                for key in ("Min Azimuth", "Max Azimuth", "Min Elevation", "Max Elevation")
            ]
        try:
            return RotatorLimits(*values)
        except InvalidArgument as bad:
            raise HamlibConnectionError(f"{self.daemon} reported unusable limits: {bad}") from None


def _check_frequency(name: str, hz: float) -> int:
    value = finite_number(name, hz)
    if not 0 < value < 1e12:
        raise InvalidArgument(f"{name} must be in (0, 1e12) Hz, got {value}")
    return round(value)


class RigClient(HamlibClient):
    """Client of ``rigctld``. Frequencies are sent as whole hertz (the dummy truncates)."""

    daemon = "rigctld"

    async def get_frequency(self) -> float:
        fields = _fields(await self.request("f", "get_freq"))
        return _float_field(fields, "Frequency", "f", self.daemon)

    async def set_frequency(self, hz: float) -> int:
        """Set the receive (current VFO) frequency; returns the whole hertz sent."""
        value = _check_frequency("frequency", hz)
        await self.request(f"F {value}", "set_freq")
        return value

    async def get_split_frequency(self) -> float:
        fields = _fields(await self.request("i", "get_split_freq"))
        return _float_field(fields, "TX Frequency", "i", self.daemon)

    async def set_split_frequency(self, hz: float) -> int:
        """Set the transmit (split) frequency; returns the whole hertz sent."""
        value = _check_frequency("split frequency", hz)
        await self.request(f"I {value}", "set_split_freq")
        return value

    async def set_split(self, enabled: bool, tx_vfo: str = "VFOB") -> None:
        if not tx_vfo.isalnum():
            raise InvalidArgument(f"tx_vfo must be a Hamlib VFO name like VFOB, got {tx_vfo!r}")
        await self.request(f"S {int(enabled)} {tx_vfo}", "set_split_vfo")

    async def get_split(self) -> tuple[bool, str]:
        fields = _fields(await self.request("s", "get_split_vfo"))
        return fields.get("Split", "0") == "1", fields.get("TX VFO", "")
