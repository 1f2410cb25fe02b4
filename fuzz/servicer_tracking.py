"""Fuzz target: every ``groundplane.tracking.v1.TrackingService`` method, with random requests
built from its descriptor, against the real tracking app (``build_tracking``: catalog, SQLite
store in memory, the kernel's ``GrpcServer``) over loopback gRPC. See ``_servicers`` for the
message builder and the oracle (no INTERNAL, no UNKNOWN, no unary hang).

The app is preloaded with three real element sets (``data/satellites-2026-08.3le``) and one
site, so lookups by id also reach the code past "not found".
"""

from __future__ import annotations

from datetime import UTC, datetime

from _harness import FUZZ_DIR, instrumented, main
from _servicers import ServicerFuzzer, Stop

with instrumented():
    from groundplane.kernel.clock import SimulatedClock
    from groundplane.orbit.elements import parse_elements
    from groundplane.orbit.sites import Site
    from groundplane.tracking.app import build_tracking
    from groundplane.tracking.v1 import tracking_pb2

NOW = datetime(2026, 8, 15, tzinfo=UTC)


async def _start() -> tuple[str, Stop]:
    lines = (FUZZ_DIR.parent / "data" / "satellites-2026-08.3le").read_text().splitlines()
    app = build_tracking(
        SimulatedClock(NOW, speed=1.0),
        elements=parse_elements("\n".join(lines[:9]) + "\n"),
        sites=[Site("GS-1", 48.1, 11.6, 520.0)],
        unready_delay_s=0.0,
        drain_grace_s=0.0,
    )
    await app.server.start()

    async def stop() -> None:
        await app.server.stop(0)
        app.close()

    return app.server.target, stop


FUZZER = ServicerFuzzer(tracking_pb2.DESCRIPTOR.services_by_name["TrackingService"], _start)
test_one_input = FUZZER.test_one_input

if __name__ == "__main__":
    main(test_one_input)
