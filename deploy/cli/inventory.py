"""`cellbank inventory`: a site's units now, as of a time or after a position of its store."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Annotated, Any

import typer

from deploy.cli.as_of import AsOf, AtPosition, StatesFound, fetch_states, parse_time, reached
from deploy.cli.as_of import state_request as request_for
from deploy.cli.calls import DEFAULT_TIMEOUT
from deploy.cli.console import Streams
from deploy.cli.endpoints import load_endpoints, signed_in_token
from deploy.cli.errors import CliError
from deploy.cli.options import Endpoints, OneSite, Timeout, json_flag, streams

INVENTORY_HELP = "a site's units now, as of a time, or after a position of its store"

# (title, key of the unit's record) in the table; --json carries every key of the record.
COLUMNS = (
    ("UNIT", "unit_id"), ("STATUS", "status"), ("TANK", "tank_id"), ("POSITION", "address"),
    ("PRODUCT", "product_type"), ("EXPIRES", "expires_on"), ("RESERVED FOR", "reserved_for"),
    ("HOLD UNTIL", "hold_until"),
)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command(
        "inventory", short_help=INVENTORY_HELP,
        help="Every unit the site's storage has held, folded from its event store by the "
        "storage domain (what the live service meant then): now, --as-of TIME (events "
        "recorded up to then) or --at-position N (up to its store's event N). Read-only. Exit 2 "
        "if the time or position is not valid or the service cannot be asked.",
    )(inventory_command)  # fmt: skip


def inventory_command(
    ctx: typer.Context,
    site: OneSite,
    endpoints: Endpoints = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    as_of: AsOf = None,
    at_position: AtPosition = None,
    as_json: Annotated[bool, json_flag("one JSON object: where it stopped, and the units")] = False,
) -> int:
    moment = parse_time(as_of) if as_of is not None else None
    return inventory(streams(ctx), endpoints, site, moment, at_position, as_json, timeout)


def inventory_document(found: StatesFound) -> dict[str, Any]:
    """The --json answer: stable keys, units by id."""
    return {
        "site_id": found.site_id,
        "position": found.position,
        "recorded_at": found.recorded_at,
        "head_position": found.head_position,
        "units": [
            {**s["state"], "version": s["version"], "updated_at": s["updated_at"]}
            for s in found.states
        ],
    }


def inventory(
    io: Streams,
    endpoints_file: str | None,
    site: str,
    as_of: datetime | None,
    at_position: int | None,
    as_json: bool,
    timeout: float,
) -> int:
    request = request_for(as_of, at_position, aggregate_type="unit")
    endpoints = load_endpoints(endpoints_file)
    token = signed_in_token(endpoints)
    (name,) = endpoints.site_names(site)
    address = endpoints.sites[name].get("storage")
    if address is None:
        raise CliError(f"site {name} has no storage endpoint in {endpoints.path}")
    found = fetch_states(name, "storage", address, request, token, timeout)
    assert found is not None
    document = inventory_document(found)
    if as_json:
        io.print(json.dumps(document, indent=2))
        return 0
    units = document["units"]
    by_status = Counter(u["status"] for u in units)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))
    io.print(f"inventory of {name} at {reached(found)}: {len(units)} units ({counts or 'none'})")
    io.table([t for t, _ in COLUMNS], [[str(u[k]) for _, k in COLUMNS] for u in units])
    return 0
