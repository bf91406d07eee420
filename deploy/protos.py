"""Generates Python code and .pyi stubs from protos/cellbank/** with grpcio-tools."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent.parent / "protos"


def generate(root: Path = PROTO_ROOT) -> list[Path]:
    """Compile every .proto under root/cellbank next to its source; returns the sources."""
    sources = sorted(root.glob("cellbank/**/*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={root}",
        f"--pyi_out={root}",
        f"--grpc_python_out={root}",
        *(str(s) for s in sources),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sources


if __name__ == "__main__":
    generated = generate()
    print(
        f"generated Python code for {len(generated)} proto files under {PROTO_ROOT}",
        file=sys.stderr,
    )
