"""``groundplane up --dashboard [HOST:]PORT``: the flag, and the supervised ``serve dashboard``
child it adds to the multi-process system."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pytest

from groundplane.cli.up import dashboard_address
from groundplane.system.processes import (
    BROKER_ENV,
    CatalogSource,
    ChildPorts,
    ProcessPlan,
    child_specs,
    start_stages,
)


def _plan(tmp_path: Path, *, dashboard: bool) -> ProcessPlan:
    return ProcessPlan(
        workdir=tmp_path,
        broker_url="mqtt://gp-service:secret@127.0.0.1:1883",
        catalog=CatalogSource(constellation="walker:24/6/1@550km:53"),
        sites_csv=tmp_path / "sites.csv",
        min_elevation_deg=10.0,
        satellites=24,
        ports=ChildPorts(
            tracking=50051,
            links=50054,
            nodes=(50100,),
            routing=50052,
            handoff=50053,
            gateway=50056,
            dashboard=50070 if dashboard else None,
            dashboard_web=8089 if dashboard else None,
        ),
        clock_spec=None,
        handoff_db=tmp_path / "handoff.sqlite",
        dashboard_host="0.0.0.0",
    )


def test_the_dashboard_flag_takes_a_port_with_an_optional_host() -> None:
    """PORT alone listens on loopback; HOST:PORT and [IPv6]:PORT keep the host; 0 is a free
    port; a port out of range is refused with what was expected."""
    assert dashboard_address("8080") == ("127.0.0.1", 8080)
    assert dashboard_address("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert dashboard_address("[::1]:0") == ("::1", 0)
    with pytest.raises(argparse.ArgumentTypeError, match="TCP port"):
        dashboard_address("localhost:99999")


def test_up_with_a_dashboard_starts_serve_dashboard_last_pointed_at_every_service(
    tmp_path: Path,
) -> None:
    """The dashboard child is `serve dashboard` with the targets of tracking, routing, handoff
    and the gateway, its page on the asked host and port, the broker in its environment (never on
    its command line), health on its own port; it starts in a stage after the gateway. Without
    --dashboard there is no such child."""
    specs = child_specs(_plan(tmp_path, dashboard=True))
    (dashboard,) = [s for s in specs if s.name == "dashboard"]
    argv = dashboard.argv
    assert argv[argv.index("serve") + 1] == "dashboard"
    pairs = dict(itertools.pairwise(argv))
    assert pairs["--tracking"] == "127.0.0.1:50051"
    assert pairs["--routing"] == "127.0.0.1:50052"
    assert pairs["--handoff"] == "127.0.0.1:50053"
    assert pairs["--gateway"] == "127.0.0.1:50056"
    assert (pairs["--web-host"], pairs["--web-port"]) == ("0.0.0.0", "8089")
    assert pairs["--port"] == "50070"
    assert dashboard.health_target == "127.0.0.1:50070"
    assert dashboard.env is not None
    assert dashboard.env[BROKER_ENV].startswith("mqtt://gp-service:")
    assert not any("secret" in arg for arg in argv)
    stages = start_stages(specs)
    assert [s.name for s in stages[-1]] == ["dashboard"]
    assert "gateway" in [s.name for s in stages[-2]]
    assert all(s.name != "dashboard" for s in child_specs(_plan(tmp_path, dashboard=False)))
