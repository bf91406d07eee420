"""`cellbank audit`: verify the stores' hash chains, read an aggregate's history."""

from __future__ import annotations

from typing import Annotated

import typer

from deploy.cli.as_of import AsOf, parse_time
from deploy.cli.calls import DEFAULT_TIMEOUT
from deploy.cli.chains import audit_verify
from deploy.cli.history import audit_log
from deploy.cli.options import AnySite, Endpoints, Kafka, Timeout, json_flag, streams

app = typer.Typer(help="audit trail: verify hash chains, read an aggregate's history")


@app.command(
    "verify",
    short_help="verify every service's audit hash chain at a site",
    help="Recompute every service's keyed hash chain and hold its head against the site's "
    "newest signed anchor and the site's events on Kafka (a rewritten row, a deleted tail, a "
    "truncated table); print one line per service, then OK or the first finding. Exit 0 "
    "intact, 1 broken, 2 unreachable.",
)
def verify(
    ctx: typer.Context,
    endpoints: Endpoints = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    site: AnySite = None,
    kafka: Kafka = None,
    trust_list: Annotated[
        str | None,
        typer.Option(
            metavar="TRUST_LIST",
            help="the network's trust list (default: $CELLBANK_TRUST_LIST_FILE, the file)",
        ),
    ] = None,
) -> int:
    return audit_verify(streams(ctx), endpoints, site, kafka, trust_list, timeout)


@app.command(
    "log",
    short_help="who did what, when and why to one aggregate",
    help="Every event of the aggregate from each service that holds it: time, actor, event "
    "type, reason, and any e-signature. With --as-of TIME: its state then (folded by the "
    "service's domain where the service folds it, e.g. storage's units) and its events up to "
    "then. Exit 1 if no service knows it (by then).",
)
def log(
    ctx: typer.Context,
    aggregate: Annotated[
        str, typer.Option(metavar="AGGREGATE", help="aggregate id (batch, unit, donor, …)")
    ],
    endpoints: Endpoints = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    site: Annotated[
        str | None,
        typer.Option(metavar="SITE", help="only this site (default: every site in the file)"),
    ] = None,
    as_json: Annotated[bool, json_flag("one JSON object per state and per event")] = False,
    as_of: AsOf = None,
) -> int:
    moment = parse_time(as_of) if as_of is not None else None
    return audit_log(streams(ctx), endpoints, aggregate, site, as_json, timeout, moment)
