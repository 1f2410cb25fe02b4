"""``groundplane infer``: one inference call through the gateway, printed as it streams.

The token comes from ``$GROUNDPLANE_TOKEN`` or ``--token-file FILE`` (``groundplane up`` prints
its demo tenant's token and the gateway address at start); ``--token`` on the command line is
refused, as every user of the machine can read a command line (``ps``). The answer goes to
stdout as it arrives; the summary (tokens, satellite, station, attempts) goes to stderr.
UNAVAILABLE prints the next opportunity the gateway announced.

The stream's events are chunks, not model tokens: a node coalesces the pieces it produced while
the previous chunk crossed the link, and a session turn arrives as one chunk; the gateway's
``InferSummary.output_tokens`` counts those chunks. The summary therefore counts the answer's
tokens as the nodes count them (:func:`groundplane.node.sessions.count_tokens`: whitespace-separated
words, one per token of the synthetic models) and the chunks apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import grpc

from groundplane.gateway.servicer import NEXT_OPPORTUNITY_KEY, RETRY_AFTER_KEY
from groundplane.gateway.v1 import gateway_pb2 as pb
from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.tls import open_channel
from groundplane.kernel.validation import finite_float
from groundplane.node.sessions import count_tokens
from groundplane.scenario import DEFAULT_MODEL

from . import environment, inputs
from .process import add_tls_arguments, tls_files

TOKEN_ENV = "GROUNDPLANE_TOKEN"


def register(commands: Any) -> None:
    infer = commands.add_parser(
        "infer",
        help="send one prompt through a gateway and stream the answer",
        description="Send PROMPT to the gateway as a user at LAT,LON and print the answer as it "
        f"streams. The bearer token comes from ${TOKEN_ENV} or --token-file.",
    )
    infer.add_argument("--gateway", required=True, type=inputs.address, metavar="HOST:PORT")
    infer.add_argument("--lat", type=finite_float, required=True, metavar="LAT")
    infer.add_argument("--lon", type=finite_float, required=True, metavar="LON")
    infer.add_argument("--model", default=DEFAULT_MODEL.name, help=f"({DEFAULT_MODEL.name})")
    infer.add_argument("--session", metavar="ID", help="make the call a turn of this session")
    token = infer.add_mutually_exclusive_group()
    environment.refuse_on_command_line(
        token.add_argument("--token", help=f"bearer token: from ${TOKEN_ENV} only"),
        lambda _token: (
            "--token: a token on the command line is visible to every user of the machine (ps); "
            f"set {TOKEN_ENV}=TOKEN or pass --token-file FILE"
        ),
    )
    token.add_argument("--token-file", metavar="FILE", help="a file holding the bearer token")
    infer.add_argument("--max-tokens", type=int, default=0, help="answer budget (0 = default)")
    infer.add_argument(
        "--timeout", type=finite_float, default=30.0, metavar="SECONDS", help="call deadline (30)"
    )
    infer.add_argument(
        "--wait",
        action="store_true",
        help="when no satellite is reachable, wait for the next one within the deadline",
    )
    add_tls_arguments(infer)
    infer.add_argument("prompt", metavar="PROMPT")
    infer.set_defaults(handler=run_infer)


def run_infer(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV)
    if args.token_file is not None:
        token = inputs.read_text(args.token_file).strip()
    if not token:
        raise InvalidArgument(
            f"expected a bearer token in ${TOKEN_ENV} or --token-file FILE (--token, from "
            f"{TOKEN_ENV} only), got none"
        )
    if not (-90.0 <= args.lat <= 90.0 and -180.0 <= args.lon <= 180.0):
        raise InvalidArgument(
            f"expected --lat in [-90, 90] and --lon in [-180, 180], got {args.lat}, {args.lon}"
        )
    if not args.prompt.strip():
        raise InvalidArgument("expected a non-empty PROMPT, got ''")
    if not args.timeout > 0 or args.max_tokens < 0:
        raise InvalidArgument(
            f"expected --timeout > 0 and --max-tokens ≥ 0, got {args.timeout}, {args.max_tokens}"
        )
    return asyncio.run(_infer(args, token))


async def _infer(args: argparse.Namespace, token: str) -> int:
    request = pb.InferStreamRequest(
        model=args.model,
        prompt=args.prompt,
        location=pb.UserLocation(lat_deg=args.lat, lon_deg=args.lon),
        session_id=args.session or "",
        max_tokens=args.max_tokens,
        wait_for_coverage=args.wait,
    )
    tls = tls_files(args)
    async with open_channel(args.gateway, tls=tls) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        call = stub.InferStream(
            request, metadata=(("authorization", f"Bearer {token}"),), timeout=args.timeout
        )
        answer: list[str] = []
        try:
            async for event in call:
                if event.HasField("token"):
                    answer.append(event.token.text)
                    sys.stdout.write(event.token.text)
                    sys.stdout.flush()
                else:
                    sys.stdout.write("\n")
                    sys.stdout.flush()
                    print(summary_text(event.summary, "".join(answer)), file=sys.stderr)
        except grpc.aio.AioRpcError as error:
            hint = ""
            connection = "failed to connect" in str(error.details())
            if error.code() == grpc.StatusCode.UNAVAILABLE and connection and tls is None:
                hint = (
                    " (if the gateway serves mutual TLS, as under `up --tls`, pass "
                    "--tls-cert, --tls-key and --tls-ca)"
                )
            print(f"groundplane infer: {_explain(error)}{hint}", file=sys.stderr)
            return 1
    return 0


def summary_text(summary: pb.InferSummary, answer: str) -> str:
    """``[20 tokens in 1 chunk from <sat> via <station>, …]`` for a finished stream."""
    tokens = count_tokens(answer)
    chunks = summary.output_tokens
    return (
        f"[{tokens} token{'' if tokens == 1 else 's'} in {chunks} "
        f"chunk{'' if chunks == 1 else 's'} "
        f"from {summary.satellite_id} via {summary.station_id}, {summary.attempts} attempt(s), "
        f"request {summary.request_id}]"
    )


def _explain(error: grpc.aio.AioRpcError) -> str:
    text = f"{error.code().name}: {error.details()}"
    pairs: Any = error.trailing_metadata() or ()
    for key, value in pairs:
        if key == NEXT_OPPORTUNITY_KEY:
            text += f" (next opportunity {value})"
        elif key == RETRY_AFTER_KEY:
            text += f" (retry after {value} s)"
    return text
