"""`cellbank watch`: the network's events as they arrive on Kafka, readable or as JSON."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Annotated, Any

import typer

from deploy.cli.calls import DEFAULT_TIMEOUT
from deploy.cli.console import Streams
from deploy.cli.endpoints import kafka_credentials_of, load_endpoints, trust_list_path
from deploy.cli.errors import CliError
from deploy.cli.options import Endpoints, Kafka, Timeout, json_flag, streams
from shared.trust import TrustConfigError, TrustList

WATCH_HELP = "a live, readable stream of the network's events (filters, --json)"


@dataclass(frozen=True, slots=True)
class WatchRequest:
    """Which events to show, from where, how and for how long: the options of `cellbank watch`."""

    site: str | None = None
    topic: str | None = None
    event_type: str | None = None
    aggregate: str | None = None
    from_beginning: bool = False
    as_json: bool = False
    limit: int = 0
    for_seconds: float = 0
    kafka: str | None = None


def register(app: typer.Typer) -> None:
    app.command(
        "watch", short_help=WATCH_HELP,
        help="Every event of the network as it arrives on Kafka: time, site, type, aggregate and "
        "a one-line summary; --json prints one object per line (topic, partition, offset, "
        "site_id, event_type, aggregate_id, occurred_at, payload, …). Ctrl-C stops.",
    )(watch_command)  # fmt: skip


def watch_command(
    ctx: typer.Context,
    endpoints: Endpoints = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    site: Annotated[
        str | None, typer.Option(metavar="SITE", help="only events of this site")
    ] = None,
    topic: Annotated[
        str | None,
        typer.Option(metavar="TOPIC", help="only this topic (e.g. cellbank.storage.events.v1)"),
    ] = None,
    event_type: Annotated[
        str | None,
        typer.Option("--type", metavar="TYPE", help="only this event type (e.g. UnitStored)"),
    ] = None,
    aggregate: Annotated[
        str | None, typer.Option(metavar="AGGREGATE", help="only this aggregate id")
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="replay the log first")
    ] = False,
    as_json: Annotated[bool, json_flag("one JSON object per line")] = False,
    limit: Annotated[
        int, typer.Option(metavar="LIMIT", show_default=False, help="stop after this many events")
    ] = 0,
    for_seconds: Annotated[
        float, typer.Option(metavar="FOR_SECONDS", show_default=False, help="stop after this long")
    ] = 0,
    kafka: Kafka = None,
) -> int:
    request = WatchRequest(
        site, topic, event_type, aggregate, from_beginning, as_json, limit, for_seconds, kafka
    )
    return watch(streams(ctx), endpoints, request)


def watch(io: Streams, endpoints_file: str | None, request: WatchRequest) -> int:
    """Follow the network's events live (or from the beginning), filtered; Ctrl-C stops."""
    import asyncio

    from shared.event_watch import EventFilter, watch_events

    bootstrap = request.kafka or os.environ.get("CELLBANK_KAFKA_BOOTSTRAP", "")
    document: Mapping[str, Any] = {}
    trust_file = os.environ.get("CELLBANK_TRUST_LIST_FILE", "").strip()
    if not bootstrap or not trust_file:
        endpoints = load_endpoints(endpoints_file)
        trust_file = trust_list_path(endpoints)
        if not bootstrap:
            document = endpoints.document
            bootstrap = str(document.get("kafka", ""))
    if not bootstrap:
        raise CliError("watch needs Kafka: --kafka, CELLBANK_KAFKA_BOOTSTRAP or the endpoints file")
    try:
        trust = TrustList.from_file(trust_file)
    except TrustConfigError as exc:
        raise CliError(str(exc)) from None
    selection = EventFilter(
        request.site or "", request.topic or "", request.event_type or "", request.aggregate or ""
    )
    try:
        selection.topics()
    except Exception as exc:
        raise CliError(str(exc)) from None

    async def follow() -> int:
        shown = 0
        events = watch_events(
            bootstrap, selection, trust=trust, from_beginning=request.from_beginning
        )
        async with contextlib.aclosing(events):  # stops its consumer when we stop
            async for watched in events:
                if request.as_json:
                    io.print(json.dumps(watched.record(), separators=(",", ":")))
                else:
                    e = watched.event
                    at = e.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    io.print(f"{at}  {e.site_id:<4} {watched.summary}")
                shown += 1
                if request.limit and shown >= request.limit:
                    return 0
        return 0

    try:
        with kafka_credentials_of(document, bool(document)):
            return asyncio.run(
                asyncio.wait_for(follow(), request.for_seconds) if request.for_seconds else follow()
            )
    except TimeoutError:
        return 0
    except KeyboardInterrupt:
        return 0
