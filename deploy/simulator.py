"""The demo network's life: `python -m deploy.simulator [--endpoints FILE] [--donors N]
[--interval S] [--courier-minutes M]`.

Drives the real services through their gRPC APIs only (no back doors), as the people of each
bank would: donors registered and screened, collections, batches with QC, QA releases, units
stored in a demo tank of every site — a few donors per site at start, then one more donor every
`--interval` seconds, round the sites. And couriers: every allocated order whose units a site
owns gets a shipment, is dispatched, handed from the bank to a courier, to a second courier at
the hub and to the ordering hospital (each receiver e-signs in person: the couriers and one of
the hospital's clinicians) and delivered within about `--courier-minutes` (the demo clock), so
the hospital can confirm receipt and infusion. Stops on SIGTERM/SIGINT.

Everyone signs in for real at the issuer the endpoints file names (its "identity"): the demo
flow's staff, the couriers of its "users" and the clinicians of its "hospitals", each with the
password grant of the CLI client (renewed well inside the signing window).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import random
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from cellbank.delivery.v1 import delivery_service_pb2 as dpb
from cellbank.delivery.v1 import delivery_service_pb2_grpc as dpb_grpc
from cellbank.delivery.v1 import events_pb2 as depb
from cellbank.storage.v1 import storage_service_pb2 as spb
from cellbank.storage.v1 import storage_service_pb2_grpc as spb_grpc

from deploy import identities
from deploy.demo import BankClient, auth, released_batch, store_when_known
from deploy.demo_population import draw_donor
from deploy.keycloak import CLI_CLIENT_ID, Identity

log = logging.getLogger("cellbank.simulator")
OP = auth("op-alice")  # the bank's operator: tanks, shipments, dispatch
RACKS, BOXES, POSITIONS = 4, 4, 10
ACCEPTED = "Received shipper sealed, logger running"


@dataclass(frozen=True)
class Cast:
    """Who carries and who receives, from the endpoints file: its couriers (users with the
    courier role) and a clinician of each hospital."""

    couriers: tuple[str, ...]
    clinicians: dict[str, str]  # hospital id → username

    @classmethod
    def of(cls, document: dict[str, Any]) -> Cast:
        couriers = tuple(
            u["username"] for u in document.get("users", []) if "courier" in u.get("roles", [])
        )
        clinicians = {
            h["id"]: h["clinicians"][0]["username"]
            for h in document.get("hospitals", [])
            if h.get("clinicians")
        }
        return cls(couriers, clinicians)

    def receiver(self, to_party: str) -> Sequence[tuple[str, str]]:
        """The call metadata of the person who accepts what is handed to `to_party`."""
        kind, _, ident = to_party.partition(":")
        if kind == "courier":
            return auth(ident)
        if kind == "hospital" and ident in self.clinicians:
            return auth(self.clinicians[ident])
        return OP


def sign_in_at(document: dict[str, Any]) -> None:
    """Every demo sign-in of this process goes to the issuer the endpoints file names."""
    identity = document.get("identity") or {}
    if not identity.get("issuer"):
        raise SystemExit(
            'the endpoints file names no identity provider ("identity"): restart `make run`'
        )
    cli = str(identity.get("cli_client_id") or CLI_CLIENT_ID)
    identities.configure(Identity(str(identity["issuer"]), cli_client_id=cli))


@dataclass
class Site:
    site_id: str
    client: BankClient
    storage: spb_grpc.StorageServiceStub
    delivery: dpb_grpc.DeliveryServiceStub
    tank_id: str = ""
    next_position: itertools.count[int] = field(default_factory=lambda: itertools.count(0))
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    donors: random.Random = field(init=False)  # the site's demo population, a seeded draw

    def __post_init__(self) -> None:
        self.donors = random.Random(f"cellbank-simulator/{self.site_id}")

    def position(self) -> str | None:
        n = next(self.next_position)
        if n >= RACKS * BOXES * POSITIONS:
            return None  # the demo tank is full: the site keeps its stock
        rack, rest = divmod(n, BOXES * POSITIONS)
        box, slot = divmod(rest, POSITIONS)
        return f"{self.tank_id}/R{rack + 1}/B{box + 1}/P{slot + 1:02d}"


async def register_tank(site: Site) -> None:
    site.tank_id = f"{site.site_id}-T2"
    request = spb.RegisterTankRequest(
        tank_id=site.tank_id, racks=RACKS, boxes_per_rack=BOXES, positions_per_box=POSITIONS,
        reason="simulator's stock tank",
    )  # fmt: skip
    try:
        await site.storage.RegisterTank(request, metadata=OP)
    except grpc.aio.AioRpcError as err:
        if err.code() != grpc.StatusCode.FAILED_PRECONDITION:  # registered by an earlier run
            raise
        # Positions already taken by an earlier run are skipped by StoreUnit refusals below.


async def one_donor(site: Site) -> int:
    """A donor through to released, stored units; the number stored."""
    async with site.lock:  # one flow at a time per site keeps DINs and positions simple
        released = await released_batch(site.client, draw_donor(site.donors))
        stored = 0
        for unit in released.units:
            while (address := site.position()) is not None:
                try:
                    await store_when_known(site.storage, unit.unit_id, address)
                    stored += 1
                    break
                except grpc.aio.AioRpcError as err:
                    if "occupied" not in (err.details() or "") and "taken" not in (
                        err.details() or ""
                    ):
                        raise
        log.info(
            "stocked", extra={"site": site.site_id, "batch": released.batch_id, "units": stored}
        )
        return stored


@dataclass
class Courier:
    """Moves each of a site's shipments through its steps on the demo clock."""

    minutes: float
    cast: Cast
    started: dict[str, datetime] = field(default_factory=dict)

    def due(self, shipment_id: str, fraction: float) -> bool:
        began = self.started.setdefault(shipment_id, datetime.now(UTC))
        return datetime.now(UTC) - began >= timedelta(minutes=self.minutes * fraction)

    async def tick(self, site: Site) -> None:
        waiting = await site.delivery.ListOrdersToShip(dpb.ListOrdersToShipRequest(), metadata=OP)
        for order in waiting.orders:
            await self._ship(site, order)
        moving = await site.delivery.ListShipments(
            dpb.ListShipmentsRequest(status="IN_TRANSIT"), metadata=OP
        )
        for shipment in moving.shipments:
            await self._advance(site, shipment)

    async def _ship(self, site: Site, order: dpb.OrderToShip) -> None:
        request = dpb.CreateShipmentRequest(
            order_id=order.order_id, logger_id=f"LOG-{site.site_id}-1", courier="CellExpress",
            route=f"{site.site_id} → {order.hospital_id}", planned_transit_minutes=90,
            shipper=depb.Shipper(
                shipper_id=f"{site.site_id}-DS-01", qualified_hold_hours=72,
                uses_since_requalification=1,
            ),
            reason="allocated order to ship",
        )  # fmt: skip
        request.promised_at.FromDatetime(datetime.now(UTC) + timedelta(hours=4))
        try:
            shipment = await site.delivery.CreateShipment(request, metadata=OP)
            await site.delivery.DispatchShipment(
                dpb.DispatchShipmentRequest(
                    shipment_id=shipment.shipment_id, reason="courier at dock"
                ),
                metadata=OP,
            )
        except grpc.aio.AioRpcError as err:
            log.warning("could not ship", extra={"order": order.order_id, "error": err.details()})
            return
        self.started[shipment.shipment_id] = datetime.now(UTC)
        log.info("dispatched", extra={"shipment": shipment.shipment_id, "order": order.order_id})

    def legs(self, site: Site, shipment: dpb.Shipment) -> list[tuple[str, str, float, Any]]:
        """(receiver, place, when on the demo clock, who hands over) of each handoff: bank →
        courier → second courier at the hub → the hospital's clinician, as far as the cast
        allows."""
        carriers = self.cast.couriers[:2]
        legs: list[tuple[str, str, float, Any]] = []
        giver: Any = OP
        for courier, place, at in zip(
            carriers, (f"{site.site_id} bank dock", "regional hub"), (0.2, 0.5), strict=False
        ):
            legs.append((f"courier:{courier}", place, at, giver))
            giver = auth(courier)
        if carriers and shipment.hospital_id in self.cast.clinicians:
            place = f"hospital {shipment.hospital_id} cell therapy lab"
            legs.append((f"hospital:{shipment.hospital_id}", place, 0.9, giver))
        return legs

    async def _advance(self, site: Site, shipment: dpb.Shipment) -> None:
        sid = shipment.shipment_id
        accepted = [h for h in shipment.handoffs if h.HasField("accepted_at")]
        legs = self.legs(site, shipment)
        if shipment.pending_to:
            step = site.delivery.AcceptCustody(
                dpb.AcceptCustodyRequest(
                    shipment_id=sid, place=shipment.handoffs[-1].place, reason="collected",
                    signature_meaning=ACCEPTED,
                ),
                metadata=self.cast.receiver(shipment.pending_to),
            )  # fmt: skip
        elif len(accepted) < len(legs):
            party, place, at, giver = legs[len(accepted)]
            if not self.due(sid, at):
                return
            step = site.delivery.HandOver(
                dpb.HandOverRequest(shipment_id=sid, to_party=party, place=place, reason="handoff"),
                metadata=giver,
            )
        elif self.due(sid, 1.0):
            step = site.delivery.RecordDelivery(
                dpb.RecordDeliveryRequest(
                    shipment_id=sid, place=f"hospital {shipment.hospital_id} cell therapy lab",
                    reason="handed to the hospital",
                ),
                metadata=self.cast.receiver(shipment.custodian),  # only the custodian may
            )  # fmt: skip
        else:
            return
        try:
            await step
        except grpc.aio.AioRpcError as err:
            log.warning("courier step refused", extra={"shipment": sid, "error": err.details()})


async def run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from deploy.cli import load_endpoints

    network = load_endpoints(args.endpoints)
    sign_in_at(network.document)
    channels: list[grpc.aio.Channel] = []

    def channel(address: str) -> grpc.aio.Channel:
        channels.append(grpc.aio.insecure_channel(address))
        return channels[-1]

    sites = [
        Site(
            name,
            BankClient.over(channel(e["donor_intake"]), channel(e["manufacturing"])),
            spb_grpc.StorageServiceStub(channel(e["storage"])),
            dpb_grpc.DeliveryServiceStub(channel(e["delivery"])),
        )
        for name, e in network.sites.items()
    ]
    courier = Courier(args.courier_minutes, Cast.of(network.document))
    try:
        for site in sites:
            await register_tank(site)
        seeded = await asyncio.gather(
            *(one_donor(site) for site in sites for _ in range(args.donors))
        )
        print(f"[simulator] stocked {sum(seeded)} units at {len(sites)} sites", flush=True)
        rotation = itertools.cycle(sites)
        next_donor = asyncio.get_running_loop().time() + args.interval
        while not stop.is_set():
            for site in sites:
                try:
                    await courier.tick(site)
                except grpc.aio.AioRpcError as err:
                    log.warning(
                        "courier round failed", extra={"site": site.site_id, "error": err.details()}
                    )
            if args.interval and asyncio.get_running_loop().time() >= next_donor:
                next_donor += args.interval
                site = next(rotation)
                try:
                    await one_donor(site)
                except grpc.aio.AioRpcError as err:
                    log.warning(
                        "donor flow failed", extra={"site": site.site_id, "error": err.details()}
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
    finally:
        for c in channels:
            await c.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.simulator", description=__doc__)
    parser.add_argument("--endpoints", help="endpoints file (default: .cellbank/endpoints.json)")
    parser.add_argument("--donors", type=int, default=2, help="donors per site at start")
    parser.add_argument(
        "--interval", type=float, default=30.0, help="seconds between donors (0: none)"
    )
    parser.add_argument("--courier-minutes", type=float, default=1.0, help="dispatch → delivered")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def guarded() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(args, stop)

    asyncio.run(guarded())
    return 0


if __name__ == "__main__":
    sys.exit(main())
