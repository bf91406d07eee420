"""Released units go into tanks; reservations hold, conflict and expire — over gRPC and Kafka."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from cellbank.manufacturing.v1 import manufacturing_service_pb2 as mpb
from cellbank.storage.v1 import storage_service_pb2 as spb

from deploy.demo import PASSING_QC, auth, now, ts
from deploy.infra import Endpoints
from tests.e2e.bank_site import BankSite, bank_site, projected, refused

OP = auth("op-alice")


@pytest.fixture
async def site(endpoints: Endpoints):
    async with bank_site(endpoints, with_storage=True) as running:
        yield running


async def released_units(site: BankSite, count: int = 2) -> list[mpb.Unit]:
    donor_id = await site.eligible_donor(now().date())
    din = (await site.collect(donor_id, now())).din
    batch_id = await site.start_batch(din)
    await site.process(batch_id, now())
    await site.qc(batch_id, now(), PASSING_QC)
    released = await site.manufacturing.ReleaseBatch(
        mpb.ReleaseBatchRequest(
            batch_id=batch_id, reason="release", signature_meaning="Released for clinical use",
            units=[mpb.UnitSpec(viable_nk_cells=5e8, cd3_cells=2e5, volume_ml=20)] * count,
        ),
        metadata=auth("qa-quinn"),
    )  # fmt: skip
    return list(released.units)


async def register_tank(site: BankSite, name: str = "T1") -> str:
    assert site.storage is not None
    tank_id = f"{site.site_id}-{name}"
    await site.storage.RegisterTank(
        spb.RegisterTankRequest(
            tank_id=tank_id, racks=2, boxes_per_rack=2, positions_per_box=4,
            segregated_boxes=["R2/B2"], reason="commissioned",
        ),
        metadata=OP,
    )  # fmt: skip
    return tank_id


async def store(site: BankSite, unit_id: str, address: str) -> spb.UnitReply:
    """Store once storage has seen the release (it arrives through Kafka)."""
    assert site.storage is not None
    await site.storage_caught_up()
    return await site.storage.StoreUnit(
        spb.StoreUnitRequest(unit_id=unit_id, address=address, reason="into LN2"), metadata=OP
    )


async def event_count(site: BankSite) -> int:
    from cellbank.operator.v1 import operator_service_pb2 as opb

    assert site.storage_ops is not None
    return (
        await site.storage_ops.GetStoreStatus(opb.GetStoreStatusRequest(), metadata=OP)
    ).event_count


async def test_store_reserve_conflict_and_expiry_releases_the_hold(site: BankSite):
    assert site.storage is not None
    units = await released_units(site)
    tank_id = await register_tank(site)
    stored = await store(site, units[0].unit_id, f"{tank_id}/R1/B1/P01")
    assert (stored.status, stored.address) == ("STORED", f"{tank_id}/R1/B1/P01")

    hold = now() + timedelta(seconds=8)  # outlives the calls below even on a slow machine
    reserved = await site.storage.ReserveUnit(
        spb.ReserveUnitRequest(unit_id=units[0].unit_id, order_id="ORD-A", hold_until=ts(hold),
                               expected_version=stored.version, reason="order A"),
        metadata=OP,
    )  # fmt: skip
    assert reserved.reserved_for == "ORD-A"

    before = await event_count(site)
    stale = spb.ReserveUnitRequest(
        unit_id=units[0].unit_id,
        order_id="ORD-B",
        hold_until=ts(hold),
        expected_version=stored.version,
        reason="b",
    )
    await refused(site.storage.ReserveUnit(stale, metadata=OP), grpc.StatusCode.ABORTED)
    second = spb.ReserveUnitRequest(
        unit_id=units[0].unit_id, order_id="ORD-B", hold_until=ts(hold), reason="b"
    )
    details = await refused(
        site.storage.ReserveUnit(second, metadata=OP), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "unit already reserved" in details and "ORD-A" in details
    assert await event_count(site) == before

    # The scheduler turns the passed hold into ReservationExpired; the read model shows it
    # (first the hold itself, then its end: the projection may not have seen it yet).
    get = spb.GetUnitRequest(unit_id=units[0].unit_id)
    await projected(
        lambda: site.storage.GetUnit(get, metadata=OP),
        until=lambda u: u.reserved_for == "ORD-A",
        what="the hold in the read model",
    )
    freed = await projected(
        lambda: site.storage.GetUnit(get, metadata=OP),
        until=lambda u: u.reserved_for == "",
        what="hold expiry",
    )
    assert freed.status == "STORED"
    again = spb.ReserveUnitRequest(
        unit_id=units[0].unit_id,
        order_id="ORD-B",
        hold_until=ts(now() + timedelta(hours=4)),
        reason="b",
    )
    assert (await site.storage.ReserveUnit(again, metadata=OP)).reserved_for == "ORD-B"

    await projected(
        lambda: site.storage.GetUnit(get, metadata=OP),
        until=lambda u: u.reserved_for == "ORD-B",
        what="new hold",
    )
    network = await site.storage.ListNetworkInventory(
        spb.ListNetworkInventoryRequest(), metadata=OP
    )
    assert units[0].unit_id not in {u.unit_id for u in network.units}  # reserved: not offered


async def test_network_inventory_offers_stored_units_with_donor_attributes(site: BankSite):
    assert site.storage is not None
    units = await released_units(site)
    tank_id = await register_tank(site)
    await store(site, units[1].unit_id, f"{tank_id}/R1/B1/P02")
    offer = await projected(
        lambda: site.storage.ListNetworkInventory(spb.ListNetworkInventoryRequest(), metadata=OP),
        until=lambda r: any(u.unit_id == units[1].unit_id for u in r.units),
        what="unit offered network-wide",
    )
    unit = next(u for u in offer.units if u.unit_id == units[1].unit_id)
    assert (unit.site_id, unit.product_type, unit.cmv, unit.abo) == (
        site.site_id,
        "NK-ALLO",
        "POSITIVE",
        "O",
    )
    assert "A*02:01" in unit.hla and "KIR2DL1" in unit.kir_genes
    assert unit.viable_nk_cells == 5e8 and unit.version >= 1


async def test_bad_storage_input_is_refused_clearly_and_writes_nothing(site: BankSite):
    assert site.storage is not None
    units = await released_units(site)
    tank_id = await register_tank(site)
    await store(site, units[0].unit_id, f"{tank_id}/R1/B1/P01")
    before = await event_count(site)
    cases = [
        (spb.StoreUnitRequest(unit_id="NO-SUCH-UNIT", address=f"{tank_id}/R1/B1/P03", reason="x"),
         grpc.StatusCode.FAILED_PRECONDITION, "only RELEASED units"),
        (spb.StoreUnitRequest(unit_id=units[1].unit_id, address=f"{tank_id}/R1/B1/P01", reason="x"),
         grpc.StatusCode.FAILED_PRECONDITION, "position occupied"),
        (spb.StoreUnitRequest(unit_id=units[1].unit_id, address=f"{tank_id}/R2/B2/P01", reason="x"),
         grpc.StatusCode.FAILED_PRECONDITION, "segregated storage"),
        (spb.StoreUnitRequest(unit_id=units[1].unit_id, address="tank one, shelf 2", reason="x"),
         grpc.StatusCode.INVALID_ARGUMENT, "address:"),
        (spb.StoreUnitRequest(unit_id=units[1].unit_id, address=f"{tank_id}/R1/B1/P02", reason=""),
         grpc.StatusCode.INVALID_ARGUMENT, "reason:"),
    ]  # fmt: skip
    for request, code, expected in cases:
        assert expected in await refused(site.storage.StoreUnit(request, metadata=OP), code)
    reading = spb.RecordTemperatureRequest(
        tank_id=tank_id, celsius=float("nan"), measured_at=ts(now())
    )
    assert "celsius" in await refused(
        site.storage.RecordTemperature(reading, metadata=OP), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert await event_count(site) == before
