"""What every ``groundplane serve SERVICE`` process shares: its flags and its life cycle.

Each service command adds the same process options (:func:`add_process_arguments`): where its
gRPC server listens (``--host``, ``--port``), its Prometheus ``/metrics`` port
(``--metrics-port``, off unless given), its log format, the shared simulated clock
(``--clock SPEC`` as ``groundplane up`` prints it, or ``--start``/``--speed``), and how it stops
(``--unready-delay``, ``--drain-grace``), where its traces go (``--otlp-endpoint URL``, or the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT``; ``--trace-console``; nothing by default, see
:mod:`groundplane.kernel.tracing`), and its mutual TLS (``--tls-cert``, ``--tls-key``,
``--tls-ca``: :func:`add_tls_arguments`, docs/security.md). Like every option each also comes
from its environment variable (``GROUNDPLANE_PORT``, ``GROUNDPLANE_CLOCK``, …).

:func:`run_service` runs one service body until SIGTERM or SIGINT: the body is an async context
manager that starts the service on enter (its gRPC server NOT_SERVING on readiness until its
inputs are live) and drains it on exit; the process then exits 0. A second signal while draining
cancels the drain.

The inputs most services share have one spelling too: :func:`add_tracking_argument`
(``--tracking HOST:PORT``), :func:`add_broker_argument` (``--broker URL`` without a password,
``GROUNDPLANE_BROKER`` or ``--broker-file``, and the ``--broker-tls-*`` files) and
:func:`broker_address` (the parsed URL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog

from groundplane.kernel import tracing
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.logs import configure_logging
from groundplane.kernel.tls import TlsFiles, configure_process_tls
from groundplane.kernel.validation import finite_float
from groundplane.mqtt.broker import BrokerAddress, BrokerTls, redacted_url

from . import environment, inputs

log = structlog.get_logger("groundplane.cli.process")


class RunningService(Protocol):
    """What a started service tells its process: where it serves."""

    @property
    def target(self) -> str: ...


def add_process_arguments(parser: argparse.ArgumentParser, *, default_port: int) -> None:
    """The options every service process has (see the module docstring)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=inputs.port,
        default=default_port,
        help="gRPC port to listen on; 0 picks a free port",
    )
    parser.add_argument(
        "--metrics-port",
        type=inputs.port,
        metavar="PORT",
        help="serve Prometheus /metrics on this port of --host (0 picks a free one); "
        "default: not served",
    )
    parser.add_argument(
        "--start", metavar="TIME", help="simulated time starts here (default: real time)"
    )
    parser.add_argument(
        "--speed", type=finite_float, help="simulated seconds per wall second (default: 1)"
    )
    parser.add_argument(
        "--clock",
        metavar="SPEC",
        help="share a simulated time line: 'start=ISO,speed=X,anchor=UNIX_S' as printed by "
        "groundplane up (instead of --start/--speed)",
    )
    parser.add_argument(
        "--unready-delay",
        type=finite_float,
        default=1.0,
        metavar="S",
        help="seconds NOT_SERVING before draining on SIGTERM",
    )
    parser.add_argument(
        "--drain-grace",
        type=finite_float,
        default=5.0,
        metavar="S",
        help="seconds in-flight work may take to finish after SIGTERM before it is cancelled",
    )
    parser.add_argument(
        "--log-format",
        choices=("json", "console", "auto"),
        default="auto",
        help="log lines as JSON, for a console, or console on a TTY and JSON otherwise",
    )
    add_tracing_arguments(parser)
    add_tls_arguments(parser)


def add_tracing_arguments(parser: argparse.ArgumentParser) -> None:
    """``--otlp-endpoint URL`` and ``--trace-console``: where the process's spans go."""
    parser.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="export OpenTelemetry spans over OTLP/gRPC to this collector, e.g. "
        "http://127.0.0.1:4317 (default: OTEL_EXPORTER_OTLP_ENDPOINT if set, else no tracing)",
    )
    parser.add_argument(
        "--trace-console",
        action="store_true",
        help="print each finished span as one JSON line on stdout",
    )


def tracing_of(
    name: str, args: argparse.Namespace, *, always: bool = False
) -> contextlib.AbstractContextManager[tracing.Tracing | None]:
    """Tracing as the process options ask (service name ``groundplane-<name>``)."""
    return tracing.configured(
        f"groundplane-{name}",
        otlp_endpoint=getattr(args, "otlp_endpoint", None),
        console=bool(getattr(args, "trace_console", False)),
        always=always,
    )


# -- mutual TLS (kernel/tls.py, kernel/authz.py) ---------------------------------------------


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tls-cert``/``--tls-key``/``--tls-ca`` (``GROUNDPLANE_TLS_CERT`` …): this process's
    certificate, its key and the CA of its peers; every gRPC server and channel it opens uses
    them (all three or none; none: plaintext)."""
    group = parser.add_argument_group(
        "mutual TLS",
        "gRPC servers then accept only peers with a certificate from --tls-ca and check each "
        "method against the peer's identity; channels present --tls-cert (docs/security.md)",
    )
    group.add_argument("--tls-cert", metavar="PEM", help="this process's certificate (chain)")
    group.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    group.add_argument("--tls-ca", metavar="PEM", help="the CA that signs every peer accepted")


def tls_files(args: argparse.Namespace) -> TlsFiles | None:
    """The files of the TLS options (None: plaintext), read once to fail early."""
    return TlsFiles.from_options(
        getattr(args, "tls_cert", None),
        getattr(args, "tls_key", None),
        getattr(args, "tls_ca", None),
    )


def configure_tls(args: argparse.Namespace) -> TlsFiles | None:
    """Make the TLS options this process's default for servers and channels."""
    files = tls_files(args)
    configure_process_tls(files)
    return files


# -- end of mutual TLS --------------------------------------------------------------------------


BROKER_HELP = (
    "the MQTT broker, mqtt://user:password@host:port (a service account; with a password only "
    "from GROUNDPLANE_BROKER or --broker-file) or mqtts://host:port with --broker-tls-*"
)
BROKER_TLS_FILES = (
    ("ca", "the CA that signed the broker's TLS certificate (an mqtts:// broker)"),
    ("cert", "this process's client certificate for the broker (its common name is the account)"),
    ("key", "the key of --broker-tls-cert"),
)


def add_tracking_argument(
    parser: argparse.ArgumentParser, help_text: str, *, required: bool = True
) -> None:
    """``--tracking HOST:PORT``: the tracking service whose catalog the process follows."""
    parser.add_argument(
        "--tracking", required=required, type=inputs.address, metavar="HOST:PORT", help=help_text
    )


def add_broker_argument(parser: argparse.ArgumentParser, help_text: str = BROKER_HELP) -> None:
    """The MQTT broker and the account the process logs in as (one of the two is required):

    * ``--broker URL`` — from the command line only without a password (``ps`` shows every
      command line to every user of the machine): ``mqtt://user:password@…`` goes in
      ``GROUNDPLANE_BROKER`` (how ``up`` passes it to its children) or in a file;
    * ``--broker-file FILE`` — the URL in a file (a Kubernetes Secret mounted as a file);
    * ``--broker-tls-ca/--broker-tls-cert/--broker-tls-key FILE`` — for an ``mqtts://`` broker:
      the CA of the broker's certificate and this process's certificate and key (its common
      name is the account).
    """
    where = parser.add_mutually_exclusive_group(required=True)
    environment.refuse_on_command_line(
        where.add_argument("--broker", metavar="URL", help=help_text), broker_url_refusal
    )
    where.add_argument(
        "--broker-file",
        metavar="FILE",
        help="a file holding the broker URL (with its password), e.g. a mounted Secret",
    )
    add_broker_tls_arguments(parser)


def add_broker_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """``--broker-tls-ca/--broker-tls-cert/--broker-tls-key FILE`` (an ``mqtts://`` broker)."""
    for flag, what in BROKER_TLS_FILES:
        parser.add_argument(f"--broker-tls-{flag}", metavar="FILE", help=what)


def broker_url_refusal(url: object, *, file_option: bool = True) -> str | None:
    """Why ``--broker URL`` may not be given on the command line (it holds a password), or None;
    ``file_option``: the command also has ``--broker-file``."""
    if isinstance(url, str) and urlsplit(url).password is not None:
        instead = (
            " or in a file (--broker-file FILE, GROUNDPLANE_BROKER_FILE)" if file_option else ""
        )
        return (
            f"--broker {redacted_url(url)}: a password on the command line is visible to every "
            f"user of the machine (ps); put the URL in the environment (GROUNDPLANE_BROKER=URL)"
            f"{instead}"
        )
    return None


def broker_url_refusal_without_file(url: object) -> str | None:
    """:func:`broker_url_refusal` for a command without ``--broker-file`` (up, dashboard)."""
    return broker_url_refusal(url, file_option=False)


def broker_tls(args: argparse.Namespace) -> BrokerTls | None:
    """The TLS files of ``--broker-tls-*`` (None when none is given)."""
    ca, cert, key = (getattr(args, f"broker_tls_{flag}", None) for flag, _ in BROKER_TLS_FILES)
    if ca is None and cert is None and key is None:
        return None
    if ca is None:
        raise InvalidArgument(
            "--broker-tls-cert/--broker-tls-key need --broker-tls-ca (the CA that signed the "
            "broker's certificate)"
        )
    return BrokerTls(
        Path(ca), None if cert is None else Path(cert), None if key is None else Path(key)
    )


def broker_address(args: argparse.Namespace) -> BrokerAddress:
    """The broker of ``--broker`` or ``--broker-file`` with the ``--broker-tls-*`` files
    (InvalidArgument when the URL is not an MQTT URL; never repeating its password)."""
    url = args.broker
    if url is None and getattr(args, "broker_file", None) is not None:
        url = inputs.read_text(args.broker_file).strip()
    if url is None:
        raise InvalidArgument("expected --broker URL, GROUNDPLANE_BROKER or --broker-file FILE")
    return BrokerAddress.from_url(url, broker_tls(args))


def process_clock(args: argparse.Namespace) -> Clock:
    """The clock the process options name (real time by default)."""
    return inputs.make_clock(args.start, args.speed, args.clock)


def listen_address(args: argparse.Namespace) -> str:
    """``host:port`` of the gRPC server from ``--host`` and ``--port``."""
    host: str = args.host
    return f"[{host}]:{args.port}" if ":" in host else f"{host}:{args.port}"


def run_service(
    name: str,
    args: argparse.Namespace,
    body: Callable[[], AbstractAsyncContextManager[Any]],
) -> int:
    """Configure logging and tracing, enter ``body()``, print ``<name> serving on <target>``,
    wait for SIGTERM/SIGINT, exit the body (its drain), flush the spans, return 0."""
    configure_logging(args.log_format)
    configure_tls(args)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        received = asyncio.Event()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, received.set)
        try:
            async with body() as service:
                target = getattr(service, "target", None)
                print(f"{name} serving on {target}", flush=True)
                log.info("process_serving", service=name, target=target)
                await received.wait()
                log.info("process_stopping", service=name)
                received.clear()
                # A second signal while draining cancels the drain.
                current = asyncio.current_task()
                for sig in signals:
                    loop.remove_signal_handler(sig)
                    if current is not None:
                        loop.add_signal_handler(sig, current.cancel)
        finally:
            for sig in signals:
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(sig)
        log.info("process_stopped", service=name)

    with tracing_of(name, args):
        asyncio.run(serve())
    return 0
