"""A site's services run as the runtime role and hold their lock; `cellbank replay --restore`
refuses while they run, naming them, and drops nothing (tests/e2e/test_replay.py restores a
site once its services stopped)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from deploy import cli
from deploy.infra import Endpoints
from deploy.replay import replay_site
from shared.service_lock import ServicesRunning, running_services
from tests.e2e.bank_site import bank_site


async def test_services_run_as_the_runtime_role_and_restore_refuses_while_they_run(
    endpoints: Endpoints, tmp_path: Path
):
    async with bank_site(endpoints) as site:
        databases = {h.spec.name: h.settings.database_name for h in site.hosts}
        for host in site.hosts:
            assert host.pool is not None
            assert await host.pool.fetchval("SELECT current_user") == "cellbank_runtime"
        running = await running_services(endpoints.database_url, databases.values())
        assert sorted(r.application for r in running) == [
            f"cellbank-service {site.site_id} donor_intake",
            f"cellbank-service {site.site_id} manufacturing",
        ]
        with pytest.raises(ServicesRunning, match=f"cellbank-service {site.site_id} donor_intake"):
            await replay_site(
                site.site_id, bootstrap=endpoints.kafka_bootstrap,
                server_url=endpoints.database_url, targets=databases,
                restore_events_from_log=True, services=list(databases),
            )  # fmt: skip
        endpoints_file = tmp_path / "endpoints.json"
        endpoints_file.write_text(json.dumps({
            "sites": {site.site_id: {}}, "kafka": endpoints.kafka_bootstrap,
            "database_url": endpoints.database_url, "databases": {site.site_id: databases},
        }))  # fmt: skip
        out, err = io.StringIO(), io.StringIO()
        args = ["replay", "--site", site.site_id, "--restore", "--force"]
        code = await asyncio.to_thread(
            cli.main, [*args, "--endpoints", str(endpoints_file)], out, err
        )
        assert code == 1, out.getvalue() + err.getvalue()
        assert f"{site.site_id}'s services are running" in err.getvalue()
        assert f"cellbank-service {site.site_id} manufacturing" in err.getvalue()
        for host in site.hosts:  # the refusal dropped nothing from under them
            assert host.pool is not None
            assert await host.pool.fetchval("SELECT count(*) FROM events") >= 0
    assert await running_services(endpoints.database_url, databases.values()) == []
