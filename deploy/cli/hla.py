"""`cellbank hla`: KIR-ligand classes from an IPD-IMGT/HLA release, the release each site uses."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer

from deploy.cli.calls import DEFAULT_TIMEOUT, UNREACHABLE, bearer, call_problem, rpc_code
from deploy.cli.console import Streams, moment
from deploy.cli.endpoints import NetworkEndpoints, load_endpoints, signed_in_token
from deploy.cli.errors import CliError
from deploy.cli.options import AnySite, Endpoints, OneSite, Timeout, json_flag, streams
from deploy.processes import hla_reference_dir

T = TypeVar("T")

app = typer.Typer(help="HLA reference: KIR-ligand classes, the release each site uses")


@app.command(
    "classify",
    short_help="KIR-ligand class of each allele, from the IPD-IMGT/HLA release",
    help="One line per allele: name, class (C1, C2, Bw4-80I, Bw4-80T, A3/A11, none, "
    "ambiguous, not-expressed) and the release; --json one object per line. Names may be "
    "alleles (C*03:07), groups (C*16), G or P groups; `-` reads names from standard input. "
    "Exit 1 naming each invalid, unknown or retired name (with its current name).",
)
def classify(
    ctx: typer.Context,
    alleles: Annotated[
        list[str], typer.Argument(metavar="ALLELE", show_default=False, help="e.g. C*03:07, or -")
    ],
    endpoints: Endpoints = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    as_json: Annotated[bool, json_flag("one JSON object per line")] = False,
    reference: Annotated[
        str | None,
        typer.Option(
            metavar="REFERENCE",
            help="release directory (default: CELLBANK_HLA_REFERENCE or the dev copy)",
        ),
    ] = None,
) -> int:
    return hla_classify(streams(ctx), alleles, reference, as_json)


@app.command(
    "show",
    short_help="the IPD-IMGT/HLA release each site's matching classifies with, and its record",
    help="One line per site (--json: one object): release, classification version, "
    "directory, and who recorded it when and why; checksums with --json.",
)
def show(
    ctx: typer.Context,
    endpoints: Endpoints = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    site: AnySite = None,
    as_json: Annotated[bool, json_flag("one JSON object per site")] = False,
) -> int:
    return hla_show(streams(ctx), endpoints, site, as_json, timeout)


@app.command(
    "approve",
    short_help="move a site's matching to another IPD-IMGT/HLA release (recorded)",
    help="The site's matching loads the release in DIR (a path on its server), checks it is "
    "RELEASE, records who approved it, when and why, and classifies with it from now on, "
    "across restarts. Validate it first with `cellbank hla classify --reference DIR`. Exit 1 "
    "if refused (naming why), 2 if unreachable.",
)
def approve(
    ctx: typer.Context,
    site: OneSite,
    directory: Annotated[str, typer.Option(metavar="DIRECTORY", help="the release directory")],
    release: Annotated[
        str, typer.Option(metavar="RELEASE", help="the release it must be, e.g. 3.58.0")
    ],
    reason: Annotated[str, typer.Option(metavar="REASON", help="why (recorded with the approval)")],
    endpoints: Endpoints = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
) -> int:
    return hla_approve(streams(ctx), endpoints, site, directory, release, reason, timeout)


def hla_classify(
    io: Streams, alleles: Sequence[str], reference_dir: str | None, as_json: bool
) -> int:
    """One line per allele (or one JSON object); exit 1 naming every name it cannot classify."""
    from services.matching.adapters.hla_release import ReleaseError, load_release
    from services.matching.domain.kir_ligand import AlleleNameError

    directory = reference_dir or hla_reference_dir()
    if not directory:
        raise CliError(
            "no IPD-IMGT/HLA release: pass --reference DIR or set CELLBANK_HLA_REFERENCE"
        )
    names = list(alleles)
    if names == ["-"]:
        names = [line.strip() for line in sys.stdin if line.strip()]
    if not names:
        raise CliError("name at least one allele (or - to read them from standard input)")
    try:
        reference = load_release(Path(directory))
    except ReleaseError as exc:
        raise CliError(f"{directory}: {exc}") from None
    failed = 0
    for name in names:
        try:
            ligand = reference.classify(name)
        except AlleleNameError as exc:
            failed += 1
            io.warn(f"cellbank: error: {exc}")
            continue
        if as_json:
            line = {"allele": name.strip(), "ligand": ligand, "reference": reference.version}
            io.print(json.dumps(line))
        else:
            io.print(f"{name.strip()}\t{ligand}\t{reference.version}")
    return 1 if failed else 0


def hla_call(address: str, token: str, timeout: float, call: Callable[[Any, Any], T]) -> T:
    """Run `call(stub, metadata)` against the HlaReferenceService at `address`."""
    from cellbank.matching.v1 import hla_reference_service_pb2_grpc as hpb_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            return call(hpb_grpc.HlaReferenceServiceStub(channel), bearer(token))
        except grpc.RpcError as exc:
            code = 2 if rpc_code(exc) in UNREACHABLE else 1
            raise CliError(f"matching {call_problem(address, exc)}", code) from None


def in_use_record(site: str, in_use: Any) -> dict[str, Any]:
    return {
        "site": site, "release": in_use.release,
        "classification_version": in_use.classification_version, "source": in_use.source,
        "checksums": {c.file: c.sha256 for c in in_use.checksums},
        "recorded_by": in_use.recorded_by, "reason": in_use.reason,
        "recorded_at": moment(in_use.recorded_at) if in_use.recorded_by else "",
    }  # fmt: skip


def in_use_line(record: dict[str, Any]) -> str:
    release = f"IPD-IMGT/HLA {record['release']}" if record["release"] else "no HLA reference"
    by = f"; recorded by {record['recorded_by']} at {record['recorded_at']}" if record[
        "recorded_by"] else ""  # fmt: skip
    why = f" ({record['reason']})" if record["reason"] else ""
    return f"{record['site']}\t{release}\t{record['classification_version']}\t{record['source']}{by}{why}"


def matching_address(endpoints: NetworkEndpoints, site: str) -> str:
    address = endpoints.sites[site].get("matching")
    if not address:
        raise CliError(f"site {site} has no matching endpoint in {endpoints.path}")
    return address


def hla_show(
    io: Streams, endpoints_file: str | None, site: str | None, as_json: bool, timeout: float
) -> int:
    from cellbank.matching.v1 import hla_reference_service_pb2 as hpb

    endpoints = load_endpoints(endpoints_file)
    token = signed_in_token(endpoints)
    for name in endpoints.site_names(site):
        in_use = hla_call(
            matching_address(endpoints, name), token, timeout,
            lambda stub, md: stub.GetHlaReference(
                hpb.GetHlaReferenceRequest(), metadata=md, timeout=timeout
            ),
        )  # fmt: skip
        record = in_use_record(name, in_use)
        io.print(json.dumps(record) if as_json else in_use_line(record))
    return 0


def hla_approve(
    io: Streams,
    endpoints_file: str | None,
    site: str,
    directory: str,
    release: str,
    reason: str,
    timeout: float,
) -> int:
    from cellbank.matching.v1 import hla_reference_service_pb2 as hpb

    endpoints = load_endpoints(endpoints_file)
    token = signed_in_token(endpoints)
    (chosen,) = endpoints.site_names(site)
    request = hpb.ApproveHlaReferenceRequest(directory=directory, release=release, reason=reason)
    in_use = hla_call(
        matching_address(endpoints, chosen), token, timeout,
        lambda stub, md: stub.ApproveHlaReference(request, metadata=md, timeout=timeout),
    )  # fmt: skip
    io.print(in_use_line(in_use_record(chosen, in_use)))
    return 0
