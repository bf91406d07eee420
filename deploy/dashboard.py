"""The operator dashboard: `python -m deploy.dashboard [--endpoints FILE] [--port N]`.

One page, live: the network's events as they happen (server-sent events from Kafka), every
site's inventory by status and available stock by product type, open orders, shipments with
their SLA status, active excursions (quarantined units, compromised shipments) and recalls.
It reads the endpoints file `make run` writes and asks each site's delivery service
(OperatorService.GetNetworkStatus, DeliveryService.ListShipments / ListRecalls) with the
operator token; it writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from cellbank.delivery.v1 import delivery_service_pb2 as dpb
from cellbank.delivery.v1 import delivery_service_pb2_grpc as dpb_grpc
from cellbank.operator.v1 import operator_service_pb2 as opb
from cellbank.operator.v1 import operator_service_pb2_grpc as opb_grpc
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from shared.errors import InvalidArgument
from shared.event_watch import EventFilter, watch_events
from shared.settings import parse_endpoints

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("dashboard.html")


class Network:
    """What the dashboard knows of the network: delivery endpoints, token, Kafka."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.sites: dict[str, dict[str, str]] = document.get("sites", {})
        self.token = str(document.get("operator_token", "op-alice"))
        self.kafka = str(document.get("kafka", ""))
        self.metadata = (("authorization", f"Bearer {self.token}"),)

    def delivery(self) -> list[tuple[str, str]]:
        return [(s, e["delivery"]) for s, e in sorted(self.sites.items()) if "delivery" in e]

    async def status(self) -> dict[str, Any]:
        """Network status (from the first delivery service that answers), with every site's
        shipments and recalls."""
        out: dict[str, Any] = {"sites": [], "shipments": [], "recalls": [], "errors": []}
        answered = False
        for site, address in self.delivery():
            async with grpc.aio.insecure_channel(address) as channel:
                try:
                    if not answered:
                        status = await opb_grpc.OperatorServiceStub(channel).GetNetworkStatus(
                            opb.GetNetworkStatusRequest(), metadata=self.metadata, timeout=5
                        )
                        out["sites"] = [_dict(s) for s in status.sites]
                        out["as_of"] = status.as_of.ToJsonString()
                        answered = True
                    stub = dpb_grpc.DeliveryServiceStub(channel)
                    shipments = await stub.ListShipments(
                        dpb.ListShipmentsRequest(), metadata=self.metadata, timeout=5
                    )
                    out["shipments"] += [
                        {**_dict(s), "site_id": site} for s in shipments.shipments
                        if s.status in ("CREATED", "IN_TRANSIT", "DELIVERED")
                    ]  # fmt: skip
                    recalls = await stub.ListRecalls(
                        dpb.ListRecallsRequest(), metadata=self.metadata, timeout=5
                    )
                    out["recalls"] += [{**_dict(r), "site_id": site} for r in recalls.recalls]
                except grpc.aio.AioRpcError as err:
                    out["errors"].append(f"{site}: {err.code().name} {err.details()}")
        return out


def _dict(message: Any) -> dict[str, Any]:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def create_app(network: Network) -> Starlette:
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text())

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(await network.status())

    async def events(request: Request) -> StreamingResponse:
        selection = EventFilter(
            request.query_params.get("site", ""), request.query_params.get("topic", ""),
            request.query_params.get("type", ""), request.query_params.get("aggregate", ""),
        )  # fmt: skip

        async def stream() -> AsyncIterator[str]:
            yield ": connected\n\n"
            source = watch_events(network.kafka, selection, tail=20)
            async with contextlib.aclosing(source):
                async for watched in source:
                    if await request.is_disconnected():
                        return
                    record = watched.record()
                    record["summary"] = watched.summary
                    yield f"data: {json.dumps(record, separators=(',', ':'))}\n\n"

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/status", status),
            Route("/api/events", events),
            Route("/healthz", health),
        ]
    )


def document_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The endpoints document from the environment (a container has no endpoints file):
    CELLBANK_DELIVERY_ENDPOINTS (SITE=host:port,…), CELLBANK_OPERATOR_TOKEN (an operator
    token the delivery services accept) and CELLBANK_KAFKA_BOOTSTRAP. ValueError names what is
    missing or malformed."""
    delivery = parse_endpoints(
        env.get("CELLBANK_DELIVERY_ENDPOINTS", ""), "CELLBANK_DELIVERY_ENDPOINTS"
    )
    if not delivery:
        raise ValueError("CELLBANK_DELIVERY_ENDPOINTS: required (SITE=host:port,...)")
    token = env.get("CELLBANK_OPERATOR_TOKEN", "").strip()
    if not token:
        raise ValueError("CELLBANK_OPERATOR_TOKEN: required (an operator bearer token)")
    kafka = env.get("CELLBANK_KAFKA_BOOTSTRAP", "").strip()
    if not kafka:
        raise ValueError("CELLBANK_KAFKA_BOOTSTRAP: required (the event stream)")
    return {
        "sites": {site: {"delivery": address} for site, address in delivery.items()},
        "operator_token": token,
        "kafka": kafka,
    }


def main(argv: list[str] | None = None) -> int:
    from deploy.cli import load_endpoints

    parser = argparse.ArgumentParser(prog="python -m deploy.dashboard", description=__doc__)
    parser.add_argument(
        "--endpoints",
        help="endpoints file (default: .cellbank/endpoints.json; with CELLBANK_DELIVERY_ENDPOINTS"
        " set and no file given, the network comes from the environment)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    if args.endpoints is None and os.environ.get("CELLBANK_DELIVERY_ENDPOINTS"):
        try:
            document = document_from_env(os.environ)
        except (ValueError, InvalidArgument) as exc:
            parser.exit(2, f"dashboard: {exc}\n")
    else:
        document = load_endpoints(args.endpoints).document
    network = Network(document)
    config = uvicorn.Config(
        create_app(network), host=args.host, port=args.port, log_level="warning",
        timeout_graceful_shutdown=2,
    )  # fmt: skip
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
