"""Build the dashboard's coastline file from Natural Earth's land outline (run once, committed).

The page draws coastlines from ``static/coastlines.json``, which this module writes from the
TopoJSON ``land-110m.json`` of the npm package ``world-atlas`` (Natural Earth 1:110m land,
public domain; the package is ISC). Nothing is fetched at run time::

    npm pack world-atlas@2 && tar xzf world-atlas-2.*.tgz
    python -m groundplane.dashboard.coastlines package/land-110m.json \\
        services/groundplane/dashboard/static/coastlines.json

The output is ``{"source": …, "lines": [[lon, lat, lon, lat, …], …]}``: every TopoJSON arc as
one polyline of degrees rounded to :data:`DECIMALS` places.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DECIMALS = 2
SOURCE = "Natural Earth 1:110m land (public domain), via the world-atlas npm package"


def decode_arcs(topology: dict[str, Any]) -> list[list[tuple[float, float]]]:
    """The arcs of a (quantized or not) TopoJSON topology as lists of (lon, lat) degrees."""
    transform = topology.get("transform")
    arcs: list[list[tuple[float, float]]] = []
    for arc in topology["arcs"]:
        points: list[tuple[float, float]] = []
        if transform is None:
            points = [(float(p[0]), float(p[1])) for p in arc]
        else:
            (sx, sy), (tx, ty) = transform["scale"], transform["translate"]
            x = y = 0
            for dx, dy, *_rest in arc:  # delta-encoded integer positions
                x, y = x + dx, y + dy
                points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)
    return arcs


def coastline_lines(arcs: Sequence[Sequence[tuple[float, float]]]) -> list[list[float]]:
    """Each arc flattened to ``[lon, lat, …]`` rounded, consecutive repeats dropped."""
    lines: list[list[float]] = []
    for arc in arcs:
        flat: list[float] = []
        last: tuple[float, float] | None = None
        for lon, lat in arc:
            point = (round(lon, DECIMALS), round(lat, DECIMALS))
            if point != last:
                flat.extend(point)
                last = point
        if len(flat) >= 4:
            lines.append(flat)
    return lines


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m groundplane.dashboard.coastlines LAND_TOPOJSON OUT_JSON")
        return 2
    topology = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    lines = coastline_lines(decode_arcs(topology))
    Path(argv[1]).write_text(
        json.dumps({"source": SOURCE, "lines": lines}, separators=(",", ":")) + "\n",
        encoding="utf-8",
    )
    print(f"wrote {len(lines)} lines, {sum(len(x) for x in lines) // 2} points to {argv[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
