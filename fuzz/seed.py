"""Write the starting corpus of every target from the repository's data (run once, before a
campaign on an empty corpus): ``python fuzz/seed.py``. libFuzzer then grows and
``-merge=1`` minimises it."""

from __future__ import annotations

from datetime import UTC, datetime

from groundplane.link.v1 import link_pb2
from groundplane.node import wire
from groundplane.node.sessions import SessionState, Turn, encode_session
from groundplane.node.v1 import node_pb2
from groundplane.orbit.elements import ElementFormat, format_elements, parse_elements

from _harness import CORPUS_DIR, FUZZ_DIR


def _write(target: str, name: str, data: bytes) -> None:
    folder = CORPUS_DIR / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{name}").write_bytes(data)


def main() -> None:
    text = (FUZZ_DIR.parent / "data" / "satellites-2026-08.3le").read_text(encoding="utf-8")
    lines = text.splitlines()
    sets = parse_elements("\n".join(lines[:9]) + "\n")
    for fmt, target in [
        (ElementFormat.THREE_LE, "elements_tle"),
        (ElementFormat.OMM_JSON, "elements_omm_json"),
        (ElementFormat.OMM_CSV, "elements_omm_csv"),
        (ElementFormat.OMM_XML, "elements_omm_xml"),
    ]:
        _write(target, "one", format_elements(sets[:1], fmt).encode())
        _write(target, "three", format_elements(sets, fmt).encode())
    _write("elements_tle", "two-line", format_elements(sets[:1], ElementFormat.TLE).encode())
    for name, value in [("digits", b"25544"), ("alpha5", b"A0001"), ("synthetic", b"walker-01")]:
        _write("elements_alpha5", name, value)

    _wire_seeds()
    _http_seeds()
    for target in ("servicer_tracking", "servicer_routing"):
        for method in range(16):  # the first bytes pick the method, the rest fill the request
            _write(target, f"method-{method}", bytes([method, 0xFF, 0x01, 0x7F] * 4))


def _http_seeds() -> None:
    auth = b"authorization: Bearer fuzz-token-0123456789\r\n"
    chat = (
        b'{"model":"synth-7b","messages":[{"role":"system","content":"be brief"},'
        b'{"role":"user","content":[{"type":"text","text":"hi"}]}],'
        b'"stream":true,"stream_options":{"include_usage":true},"max_tokens":16}'
    )
    located = auth + b"x-groundplane-location: 48.1,11.6,520\r\nx-groundplane-timeout: 2.5\r\n"
    _write("http_request", "chat", located + b"\r\n" + chat)
    session = auth + b"x-groundplane-session: s-1\r\nidempotency-key: k-1\r\n"
    _write("http_request", "session", session + b"\r\n" + chat)
    prompt = b'{"model":"synth-7b","prompt":["once upon"],"user":"u-1","n":1}'
    _write("http_request", "completion", auth + b"\r\n" + prompt)


def _wire_seeds() -> None:
    deadline = datetime(2026, 8, 15, tzinfo=UTC)
    request = node_pb2.InferRequest(model="synth-7b", prompt="hello", session_id="s-1")
    infer = wire.envelope(request, request_id="r-1", sender_id="GS-1", deadline=deadline)
    error = wire.envelope(
        node_pb2.InferError(code="RESOURCE_EXHAUSTED", message="busy", retry_after_s=1.5),
        request_id="r-1",
        sender_id="S-1",
        epoch=3,
    )
    _write("wire_node", "infer", b"\0" + infer.SerializeToString())
    _write("wire_node", "error", b"\0" + error.SerializeToString())
    status = node_pb2.NodeStatus(satellite_id="S-1", epoch=2, state=node_pb2.NODE_STATE_ONLINE)
    _write("wire_node", "status", b"\1" + status.SerializeToString())
    load = node_pb2.LoadReport(satellite_id="S-1", epoch=2)
    _write("wire_node", "load", b"\2" + load.SerializeToString())
    shard = node_pb2.ShardStatus(shard_id="shard-0", epoch=1, members=["S-1", "S-2"])
    _write("wire_node", "shard", b"\3" + shard.SerializeToString())
    state = link_pb2.LinkState(station_id="GS-1", satellite_id="S-1", up=True, delay_s=0.01)
    for name, topic in [
        ("uplink", "gp/v1/ground/GS-1/tx/S-1/infer/req"),
        ("downlink", "gp/v1/node/S-1/tx/gs/GS-1/resp/r-1"),
        ("isl", "gp/v1/node/S-1/tx/isl/S-2/infer/req"),
        ("state", "gp/v1/link/GS-1/S-1/state"),
        ("reply", "gp/v1/ground/GS-1/rx/S-1/resp/req-1"),
    ]:
        _write("wire_link", name, topic.encode() + b"\0" + state.SerializeToString())
    snapshot = encode_session(
        SessionState("s-1", "synth-7b", 2, (Turn("hi", "hello"), Turn("more", "sure")))
    )
    _write("wire_handoff", "snapshot", snapshot)
    exported = node_pb2.SessionExportResult(session_id="s-1", snapshot=snapshot)
    _write(
        "wire_handoff",
        "export",
        wire.envelope(exported, request_id="r-2", sender_id="S-1").SerializeToString(),
    )


if __name__ == "__main__":
    main()
