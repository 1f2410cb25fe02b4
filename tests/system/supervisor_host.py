"""A supervisor as a process of its own, for the tests that signal or kill it (not collected).

``python supervisor_host.py WORKDIR SPECS_JSON``: starts every child of ``SPECS_JSON`` (a list of
``{"name", "argv", "health_target"}``), prints ``pids {"name": pid, …}`` once all are ready, and
stops them (reverse order) on SIGINT or SIGTERM, then prints ``stopped`` and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from groundplane.kernel.logs import configure_logging
from groundplane.system.supervisor import ChildSpec, Supervisor


async def main(workdir: Path, specs: list[dict[str, object]]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Supervisor(workdir) as supervisor:
        for raw in specs:
            argv = raw["argv"]
            assert isinstance(argv, list)
            target = raw["health_target"]
            await supervisor.start(
                ChildSpec(
                    name=str(raw["name"]),
                    argv=[str(a) for a in argv],
                    health_target=None if target is None else str(target),
                    stop_grace_s=5.0,
                )
            )
        print("pids " + json.dumps(supervisor.pids()), flush=True)
        await stop.wait()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    configure_logging("json")
    raise SystemExit(asyncio.run(main(Path(sys.argv[1]), json.loads(sys.argv[2]))))
