"""Generate the Python code for every .proto under proto/, or check it is up to date.

    python proto/generate.py           # regenerate the checked-in code
    python proto/generate.py --check   # exit 1 naming every stale or missing file

``groundplane.<service>.v1`` is generated into the folder that owns the service: the gateway's
contract into ``gateway/groundplane/gateway/v1``, every other one into
``services/groundplane/<service>/v1``. Output is deterministic for the pinned grpcio-tools and
mypy-protobuf versions (see pyproject.toml), so the check compares bytes.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
INIT_TEXT = '"""Generated gRPC contract; regenerate with `python proto/generate.py`."""\n'


def _owner_root(service: str) -> Path:
    return ROOT / ("gateway" if service == "gateway" else "services")


def _protoc(out_dir: Path) -> None:
    import grpc_tools  # noqa: PLC0415  (a dev-only dependency, imported when generating)

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    bin_dir = Path(sys.executable).parent
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    done = subprocess.run(command, cwd=PROTO_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"protoc failed with exit status {done.returncode}")


def _expected_files(out_dir: Path) -> dict[Path, Path]:
    """Map each destination file in the repository to its freshly generated source."""
    expected: dict[Path, Path] = {}
    for package_dir in sorted((out_dir / "groundplane").glob("*/v1")):
        service = package_dir.parent.name
        destination = _owner_root(service) / "groundplane" / service / "v1"
        for generated in sorted(package_dir.iterdir()):
            if generated.name.endswith(GENERATED_SUFFIXES):
                expected[destination / generated.name] = generated
        init = package_dir / "__init__.py"
        init.write_text(INIT_TEXT)
        expected[destination / "__init__.py"] = init
    return expected


def _existing_generated() -> set[Path]:
    found: set[Path] = set()
    for root in (ROOT / "services", ROOT / "gateway"):
        for path in root.glob("groundplane/*/v1/*"):
            if path.name.endswith(GENERATED_SUFFIXES):
                found.add(path)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        _protoc(out_dir)
        expected = _expected_files(out_dir)
        orphans = _existing_generated() - set(expected)
        if args.check:
            stale = [
                dst
                for dst, src in expected.items()
                if not dst.exists() or not filecmp.cmp(dst, src, shallow=False)
            ]
            problems = [f"stale or missing: {p.relative_to(ROOT)}" for p in stale]
            problems += [f"no .proto generates: {p.relative_to(ROOT)}" for p in sorted(orphans)]
            for line in problems:
                print(line, file=sys.stderr)
            if problems:
                print("run `python proto/generate.py` and commit the result", file=sys.stderr)
                return 1
            print(f"generated code is up to date ({len(expected)} files)")
            return 0
        for dst, src in expected.items():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        for orphan in orphans:
            orphan.unlink()
        print(f"wrote {len(expected)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
