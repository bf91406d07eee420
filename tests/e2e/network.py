"""Several bank sites in-process (donor intake, manufacturing, storage, matching each), their
matching services wired to every site's storage — the network the hospital API runs on."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import grpc
from cellbank.delivery.v1 import delivery_service_pb2_grpc as dpb_grpc
from cellbank.hospital.v1 import hospital_pb2_grpc as hpb_grpc
from cellbank.manufacturing.v1 import manufacturing_service_pb2 as mpb
from cellbank.operator.v1 import operator_service_pb2_grpc as opb_grpc
from cellbank.storage.v1 import storage_service_pb2 as spb

from deploy.demo import DEMO_KIR, PASSING_QC, auth, now, store_when_known
from deploy.infra import Endpoints
from services.delivery.entrypoints.main import SPEC as DELIVERY_SPEC
from services.matching.entrypoints.main import SPEC as MATCHING_SPEC
from shared.db import drop_database
from shared.service_host import ServiceHost
from tests.e2e.bank_site import BankSite, bank_site, site_settings

OP = auth("op-alice")


@dataclass
class NetworkSite:
    bank: BankSite
    matching: ServiceHost
    hospital: hpb_grpc.HospitalServiceStub
    matching_ops: opb_grpc.OperatorServiceStub
    delivery_host: ServiceHost
    delivery: dpb_grpc.DeliveryServiceStub
    delivery_ops: opb_grpc.OperatorServiceStub
    tanks: int = 0

    @property
    def site_id(self) -> str:
        return self.bank.site_id

    async def stock(self, count: int, viable_nk_cells: float, cd3_cells: float = 2e5) -> list[str]:
        """`count` released units of one donor (NK-ALLO), stored in a new tank; their ids."""
        _, _, ids = await self.stock_donor(count, viable_nk_cells, cd3_cells)
        return ids

    async def stock_donor(
        self,
        count: int,
        viable_nk_cells: float,
        cd3_cells: float = 2e5,
        hla: Mapping[str, Sequence[str]] | None = None,
        kir: Sequence[str] = DEMO_KIR,
    ) -> tuple[str, str, list[str]]:
        """Like `stock`; also the donor id and the collection's DIN. `hla`/`kir`: the donor's
        typing instead of the demo donor's (loci replaced one by one)."""
        site = self.bank
        assert site.storage is not None
        donor_id = await site.eligible_donor(now().date(), hla, kir)
        din = (await site.collect(donor_id, now())).din
        batch_id = await site.start_batch(din)
        await site.process(batch_id, now())
        await site.qc(batch_id, now(), PASSING_QC)
        spec = mpb.UnitSpec(viable_nk_cells=viable_nk_cells, cd3_cells=cd3_cells, volume_ml=20)
        released = await site.manufacturing.ReleaseBatch(
            mpb.ReleaseBatchRequest(
                batch_id=batch_id, reason="release", signature_meaning="Released for clinical use",
                units=[spec] * count,
            ),
            metadata=auth("qa-quinn"),
        )  # fmt: skip
        self.tanks += 1
        tank_id = f"{self.site_id}-T{self.tanks}"
        await site.storage.RegisterTank(
            spb.RegisterTankRequest(
                tank_id=tank_id, racks=2, boxes_per_rack=2, positions_per_box=10,
                reason="commissioned",
            ),
            metadata=OP,
        )  # fmt: skip
        ids = []
        for i, unit in enumerate(released.units):
            address = f"{tank_id}/R1/B{1 + i // 10}/P{1 + i % 10:02d}"
            await store_when_known(site.storage, unit.unit_id, address)
            ids.append(unit.unit_id)
        return donor_id, din, ids


@asynccontextmanager
async def network(
    endpoints: Endpoints, sites: int = 2, **matching: object
) -> AsyncIterator[list[NetworkSite]]:
    """`matching`: Settings overrides for the matching services (e.g. hold_seconds)."""
    async with AsyncExitStack() as stack:
        banks = [
            await stack.enter_async_context(bank_site(endpoints, with_storage=True))
            for _ in range(sites)
        ]
        storage = {b.site_id: f"127.0.0.1:{b.storage_port}" for b in banks}
        out = []
        for bank in banks:
            delivery_settings = dataclasses.replace(
                site_settings(
                    endpoints, bank.site_id, "delivery", bank.hosts[0].settings.facility_id
                ),
                storage_endpoints=storage,
                reconcile_seconds=1.0,
            )
            delivery = ServiceHost(DELIVERY_SPEC, delivery_settings)
            stack.push_async_callback(
                drop_database, endpoints.database_url, delivery_settings.database_name
            )
            await delivery.start()
            stack.push_async_callback(delivery.stop, 1)
            d_channel = grpc.aio.insecure_channel(f"127.0.0.1:{delivery.port}")
            stack.push_async_callback(d_channel.close)
            settings = dataclasses.replace(
                site_settings(
                    endpoints, bank.site_id, "matching", bank.hosts[0].settings.facility_id
                ),
                storage_endpoints=storage,
                **matching,  # type: ignore[arg-type]
            )
            host = ServiceHost(MATCHING_SPEC, settings)
            stack.push_async_callback(drop_database, endpoints.database_url, settings.database_name)
            await host.start()
            stack.push_async_callback(host.stop, 1)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{host.port}")
            stack.push_async_callback(channel.close)
            out.append(
                NetworkSite(
                    bank,
                    host,
                    hpb_grpc.HospitalServiceStub(channel),
                    opb_grpc.OperatorServiceStub(channel),
                    delivery,
                    dpb_grpc.DeliveryServiceStub(d_channel),
                    opb_grpc.OperatorServiceStub(d_channel),
                )
            )
        yield out
        for s in out:
            assert s.matching.failed() is None, s.matching.failed()
            assert s.delivery_host.failed() is None, s.delivery_host.failed()
