"""`cellbank trace`: lookback, from a donor, DIN or batch down to the recipient."""

from __future__ import annotations

import json
from typing import Annotated

import grpc
import typer
from cellbank.delivery.v1 import delivery_service_pb2 as dpb
from cellbank.delivery.v1 import delivery_service_pb2_grpc as dpb_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from deploy.cli.calls import DEFAULT_TIMEOUT, bearer, call_problem, rpc_code
from deploy.cli.console import Streams, moment
from deploy.cli.endpoints import load_endpoints, signed_in_token
from deploy.cli.errors import CliError
from deploy.cli.options import Endpoints, Timeout, json_flag, streams

TRACE_HELP = "lookback: donor → collections → batches → units → shipment → recipient"

TRACE_COLUMNS = (
    ("donor", "donor_id"), ("din", "din"), ("collected", "collected_at"), ("batch", "batch_id"),
    ("released", "released_at"), ("unit", "unit_id"), ("site", "unit_site"),
    ("status", "unit_status"), ("location", "location"), ("shipment", "shipment_id"),
    ("order", "order_id"), ("hospital", "hospital_id"), ("patient", "patient_ref"),
    ("delivered", "delivered_at"), ("received", "received_at"), ("infused", "infused_at"),
    ("vein-to-vein", "vein_to_vein_seconds"),
)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command(
        "trace", short_help=TRACE_HELP,
        help="The full genealogy of a DIN, a donor or a batch in one answer, with timestamps: "
        "where each unit is now, or which hospital and patient received it. Exit 1 if nothing "
        "is known.",
    )(trace_command)  # fmt: skip


def trace_command(
    ctx: typer.Context,
    endpoints: Endpoints = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    din: Annotated[str | None, typer.Option(metavar="DIN", help="a collection's DIN")] = None,
    donor: Annotated[str | None, typer.Option(metavar="DONOR", help="a donor id")] = None,
    batch: Annotated[str | None, typer.Option(metavar="BATCH", help="a batch id")] = None,
    site: Annotated[
        str | None,
        typer.Option(metavar="SITE", help="ask this site's lookback (default: the first site)"),
    ] = None,
    as_json: Annotated[bool, json_flag("the rows as a JSON array")] = False,
) -> int:
    named = (("din", din), ("donor", donor), ("batch", batch))
    chosen = [(kind, value) for kind, value in named if value]
    return trace(streams(ctx), endpoints, chosen, site, as_json, timeout)


def trace_records(reply: dpb.TraceReply) -> list[dict[str, str]]:
    """One flat record per unit (per collection without units), timestamps in ISO 8601 UTC."""
    records = []
    for row in reply.rows:
        record: dict[str, str] = {}
        for _, field in TRACE_COLUMNS:
            value = getattr(row, field)
            if isinstance(value, Timestamp):
                record[field] = moment(value) if row.HasField(field) else ""
            elif isinstance(value, float):
                record[field] = _duration(value) if value else ""
            else:
                record[field] = str(value)
        records.append(record)
    return records


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours < 48 else f"{hours // 24}d{hours % 24:02d}h"


def trace_table(records: list[dict[str, str]]) -> tuple[list[str], list[list[str]]]:
    """The genealogy's titles and rows, columns nobody has a value in left out."""
    columns = [(title, field) for title, field in TRACE_COLUMNS if any(r[field] for r in records)]
    return [title.upper() for title, _ in columns], [[r[f] for _, f in columns] for r in records]


def trace(
    io: Streams,
    endpoints_file: str | None,
    chosen: list[tuple[str, str]],
    site: str | None,
    as_json: bool,
    timeout: float,
) -> int:
    endpoints = load_endpoints(endpoints_file)
    token = signed_in_token(endpoints)
    if len(chosen) != 1:
        raise CliError("name exactly one of --din, --donor or --batch")
    kind, value = chosen[0]
    sites = [s for s in endpoints.site_names(site) if "delivery" in endpoints.sites[s]]
    if not sites:
        raise CliError(f"no site with a delivery endpoint in {endpoints.path}")
    address = endpoints.sites[sites[0]]["delivery"]
    field = {"din": "din", "donor": "donor_id", "batch": "batch_id"}[kind]
    request = dpb.TraceRequest(**{field: value.strip()})
    try:
        with grpc.insecure_channel(address) as channel:
            reply = dpb_grpc.DeliveryServiceStub(channel).Trace(
                request, metadata=bearer(token), timeout=timeout
            )
    except grpc.RpcError as err:
        if rpc_code(err) is grpc.StatusCode.NOT_FOUND:
            io.warn(f"cellbank: nothing known for {kind} {value} ({sites[0]}'s lookback)")
            return 1
        raise CliError(f"{sites[0]} delivery {call_problem(address, err)}") from None
    records = trace_records(reply)
    if as_json:
        io.print(json.dumps(records, indent=2))
        return 0
    io.print(f"trace of {kind} {value} ({len(records)} unit(s), from {sites[0]}'s lookback)")
    io.table(*trace_table(records))
    return 0
