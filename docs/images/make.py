"""Draw the README's pictures with `groundplane plot` from the shipped data.

Run from the repository root: ``.venv/bin/python docs/images/make.py`` (optionally with the data
folder as the argument; default: the repository's ``data/``, which the tests read). The PNGs land
next to this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

from groundplane.cli.main import main

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "data"
WINDOW = ["--start", "2026-08-15T00:00:00Z"]


def commands(data: Path) -> list[list[str]]:
    elements = str(data / "satellites-2026-08.3le")
    stations = str(data / "ground-stations.csv")
    return [
        # The ISS over Cambridge for a day; mask.csv: a hill to the east, trees to the west.
        [
            *("plot", "sky", "--elements", elements, "--sat", "25544"),
            *("--site", "52.2,0.1,30", "--min-elevation", "10", "--mask", str(HERE / "mask.csv")),
            *WINDOW,
            *("--hours", "24", "--dpi", "80", "-o", str(HERE / "sky.png")),
        ],
        # The ISS and a sun-synchronous satellite for three hours over the stations.
        [
            *("plot", "groundtrack", "--elements", elements, "--dpi", "80"),
            *("--sat", "25544", "--sat", "27640"),
            *("--sites", stations, "--min-elevation", "10"),
            *WINDOW,
            *("--hours", "3", "-o", str(HERE / "groundtrack.png")),
        ],
        # ISS, Hubble and the sun-synchronous satellite: passes over the stations for 12 hours.
        [
            *("plot", "passes", "--elements", elements, "--dpi", "80"),
            *("--sat", "25544", "--sat", "20580", "--sat", "27640"),
            *("--sites", stations, "--min-elevation", "10"),
            *WINDOW,
            *("--hours", "12", "-o", str(HERE / "passes.png")),
        ],
    ]


def run(data: Path) -> int:
    for argv in commands(data):
        code = main(argv)
        if code:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(run(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA))
