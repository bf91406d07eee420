"""One bank site (donor_intake + manufacturing) running in-process against the real infra."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pytest
from cellbank.operator.v1 import operator_service_pb2_grpc as opb_grpc
from cellbank.storage.v1 import storage_service_pb2_grpc as spb_grpc

from deploy.demo import BankClient, random_fin
from deploy.identities import service_oidc
from deploy.infra import Endpoints
from deploy.processes import hla_reference_dir
from services.donor_intake.entrypoints.main import SPEC as DONOR_SPEC
from services.manufacturing.entrypoints.main import SPEC as MANUFACTURING_SPEC
from services.storage.entrypoints.main import SPEC as STORAGE_SPEC
from shared.chain_key import ChainKey
from shared.db import drop_database
from shared.projections import wait_caught_up
from shared.service_host import ServiceHost
from shared.settings import Settings
from shared.topics import DONOR_EVENTS, MANUFACTURING_EVENTS, STORAGE_EVENTS
from shared.waits import eventually
from tests.support.trust import fresh_site, site_trust_settings


@dataclass
class BankSite(BankClient):
    site_id: str = ""
    hosts: tuple[ServiceHost, ...] = ()
    storage: spb_grpc.StorageServiceStub | None = None
    storage_ops: opb_grpc.OperatorServiceStub | None = None

    @property
    def storage_port(self) -> int:
        return self.hosts[2].port

    async def storage_caught_up(self) -> None:
        """Wait until storage has applied every manufacturing, donor and storage event so far."""
        host = self.hosts[2]
        assert host.pool is not None
        for name, topics in (
            ("network_facts", [MANUFACTURING_EVENTS, DONOR_EVENTS]),
            ("inventory", [STORAGE_EVENTS]),
        ):
            await wait_caught_up(
                host.pool, name, bootstrap=host.settings.kafka_bootstrap, topics=topics, timeout=60
            )

    async def manufacturing_caught_up(self) -> None:
        """Wait until manufacturing has applied every donor event published so far."""
        host = self.hosts[1]
        assert host.pool is not None
        await wait_caught_up(
            host.pool,
            "donor_facts",
            bootstrap=host.settings.kafka_bootstrap,
            topics=[DONOR_EVENTS],
            timeout=60,
        )


def site_settings(endpoints: Endpoints, site: str, service: str, fin: str) -> Settings:
    logins = endpoints.database_logins  # as deployed: migrate as owner, run as runtime
    return Settings(
        site_id=site,
        service=service,
        kafka_bootstrap=endpoints.kafka_bootstrap,
        database_url=logins.runtime_url if logins else endpoints.database_url,
        migration_database_url=logins.owner_url if logins else "",
        database_reader_role=logins.roles.reader if logins else "",
        **service_oidc(endpoints.identity, site, service),
        database_name=f"cellbank_t_{site.lower()}_{service}_{uuid.uuid4().hex[:6]}",
        facility_id=fin,
        hla_reference=hla_reference_dir(),
        **site_trust_settings(site),
        chain_key=ChainKey.generate(),  # the store's own, for the test's life
        anchor_interval_seconds=ANCHOR_INTERVAL,
    )


ANCHOR_INTERVAL = 0.5  # seconds: tests see a store's head anchored soon after it moved


@asynccontextmanager
async def bank_site(
    endpoints: Endpoints, *, with_storage: bool = False, **overrides: Any
) -> AsyncIterator[BankSite]:
    """`overrides`: Settings fields for every service of the site (e.g. signing_window_seconds)."""
    site = fresh_site()  # on the session's trust list; tests never share one
    fin = random_fin()
    specs = [(DONOR_SPEC, "donor_intake"), (MANUFACTURING_SPEC, "manufacturing")]
    if with_storage:
        specs.append((STORAGE_SPEC, "storage"))
    hosts = [
        ServiceHost(spec, replace(site_settings(endpoints, site, service, fin), **overrides))
        for spec, service in specs
    ]
    started: list[ServiceHost] = []
    try:
        for host in hosts:
            await host.start()
            started.append(host)
        storage_port = hosts[2].port if with_storage else hosts[0].port
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{hosts[0].port}") as d,
            grpc.aio.insecure_channel(f"127.0.0.1:{hosts[1].port}") as m,
            grpc.aio.insecure_channel(f"127.0.0.1:{storage_port}") as st,
        ):
            client = BankClient.over(d, m)
            yield BankSite(
                client.donors,
                client.manufacturing,
                client.donor_ops,
                client.manufacturing_ops,
                site_id=site,
                hosts=tuple(hosts),
                storage=spb_grpc.StorageServiceStub(st) if with_storage else None,
                storage_ops=opb_grpc.OperatorServiceStub(st) if with_storage else None,
            )
        for host in started:
            assert host.failed() is None, host.failed()
    finally:
        for host in reversed(started):
            await host.stop(grace=1)
        for host in hosts:
            await drop_database(endpoints.database_url, host.settings.database_name)


async def projected(call, *, until, what: str):
    """Wait until a read-model query answers and satisfies `until` (NOT_FOUND = not yet)."""

    async def probe():
        try:
            return await call()
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    return await eventually(
        probe, until=lambda r: r is not None and until(r), what=what, timeout=60
    )


async def refused(call, code: grpc.StatusCode) -> str:
    """The details of a call that must fail with `code`."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    return err.value.details() or ""
