"""The role table in README is the one the services enforce (each service's ACCESS)."""

from __future__ import annotations

import re

from deploy.processes import REPO_ROOT
from services.delivery.entrypoints import grpc_servicer as delivery
from services.donor_intake.entrypoints import grpc_servicer as donor_intake
from services.manufacturing.entrypoints import grpc_servicer as manufacturing
from services.matching.entrypoints import grpc_servicer as hospital
from services.matching.entrypoints import hla_reference_servicer as hla_reference
from services.storage.entrypoints import grpc_servicer as storage
from shared import operator_servicer
from shared.auth import ROLES

TABLES = {
    "DonorIntakeService": donor_intake.ACCESS,
    "ManufacturingService": manufacturing.ACCESS,
    "StorageService": storage.ACCESS,
    "HospitalService": hospital.ACCESS,
    "HlaReferenceService": hla_reference.ACCESS,
    "DeliveryService": delivery.ACCESS,
    "OperatorService": operator_servicer.ACCESS,
}


def readme_table() -> dict[str, dict[str, frozenset[str]]]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Roles and access") :]
    section = section[: section.index("\n## ", 5)]
    out: dict[str, dict[str, frozenset[str]]] = {}
    current = ""
    for row in re.findall(r"^\|\s*(.+?)\s*\|\s*(.*?)\s*\|$", section, flags=re.M):
        rpcs, roles = row
        heading = re.match(r"\*\*(\w+)", rpcs)
        if heading:
            current = heading.group(1)
            out[current] = {}
        elif current:
            for rpc in rpcs.split(", "):
                out[current][rpc] = frozenset(r.strip() for r in roles.split(","))
    return out


def test_readme_role_table_is_the_enforced_one():
    assert readme_table() == {name: dict(table) for name, table in TABLES.items()}


def test_every_role_in_a_table_is_a_known_role():
    for table in TABLES.values():
        for roles in table.values():
            assert roles and roles <= set(ROLES)
