"""`cellbank audit verify`: every store's hash chain, held against its site's anchors and Kafka."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from cellbank.operator.v1 import operator_service_pb2 as opb

from deploy.cli.calls import bearer, call_problem, operator_call
from deploy.cli.console import Streams
from deploy.cli.endpoints import (
    NetworkEndpoints,
    kafka_credentials_of,
    load_endpoints,
    signed_in_token,
)
from deploy.cli.errors import CliError
from shared.topics import SERVICE_TOPICS
from shared.trust import TRUST_LIST_ENV, TrustConfigError, TrustList

if TYPE_CHECKING:
    from deploy.audit_evidence import Evidence


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """One service's answer to VerifyAuditChain, or why there was none; `finding` is what its
    head says against the site's anchors and Kafka (a deleted tail, a truncated table)."""

    site: str
    service: str
    address: str
    report: opb.AuditChainReport | None = None
    error: str = ""
    finding: str = ""

    @property
    def broken(self) -> bool:
        return self.report is not None and (not self.report.intact or bool(self.finding))


def check_line(check: ChainCheck) -> str:
    """`LON storage        OK      1234 events` (or BROKEN / ERROR with the reason)."""
    label = f"{check.site} {check.service:<14}"
    if check.report is None:
        return f"{label} ERROR   {check.error}"
    checked = check.report.events_checked
    count = f"{checked} event{'' if checked == 1 else 's'}"
    if not check.report.intact:
        position = check.report.broken_at_position
        return f"{label} BROKEN  at position {position} ({count} intact before it)"
    if check.finding:
        return f"{label} BROKEN  {check.finding}"
    return f"{label} OK      {count}"


def broken_link(check: ChainCheck) -> str:
    """Everything an investigator needs to find the first broken link."""
    r = check.report
    assert r is not None
    if r.intact:
        return f"BROKEN: site {check.site}, service {check.service}: {check.finding}"
    event = f"event {r.broken_event_id or '?'}"
    if r.broken_aggregate_id:
        event += f" of aggregate {r.broken_aggregate_id} v{r.broken_aggregate_version}"
    if r.broken_event_type:
        event += f" ({r.broken_event_type})"
    return (
        f"BROKEN: site {check.site}, service {check.service}: first broken link at position "
        f"{r.broken_at_position}, {event}: {r.problem}"
    )


def verify_service(
    site: str, service: str, address: str, token: str, timeout: float, evidence: Evidence
) -> ChainCheck:
    try:
        report = operator_call(
            address,
            lambda stub: stub.VerifyAuditChain(
                opb.VerifyAuditChainRequest(hashes_at=evidence.positions()),
                metadata=bearer(token),
                timeout=timeout,
            ),
        )
    except grpc.RpcError as err:
        return ChainCheck(site, service, address, error=call_problem(address, err))
    from deploy.audit_evidence import held_against

    finding = held_against(
        evidence, head_position=report.head_position, event_count=report.event_count,
        hashes={h.position: h.hash for h in report.hashes},
    )  # fmt: skip
    return ChainCheck(site, service, address, report=report, finding=finding)


def evidence_sources(
    endpoints: NetworkEndpoints,
    kafka: str | None,
    trust_list: str | None,
    env: Mapping[str, str] = os.environ,
) -> tuple[str, TrustList]:
    """Kafka and the trust list: --kafka / --trust-list, else CELLBANK_KAFKA_BOOTSTRAP /
    CELLBANK_TRUST_LIST_FILE, else the endpoints file's `kafka` / `trust_list`."""
    bootstrap = (
        kafka
        or env.get("CELLBANK_KAFKA_BOOTSTRAP", "").strip()
        or str(endpoints.document.get("kafka", ""))
    )
    trust_file = (
        trust_list
        or env.get(TRUST_LIST_ENV, "").strip()
        or str(endpoints.document.get("trust_list", ""))
    )
    if not bootstrap or not trust_file:
        raise CliError(
            "audit verify holds every store against its site's signed anchors and its events on "
            "Kafka: pass --kafka and --trust-list, set CELLBANK_KAFKA_BOOTSTRAP / "
            f"{TRUST_LIST_ENV}, or use the file make run writes"
        )
    try:
        return bootstrap, TrustList.from_file(trust_file)
    except TrustConfigError as exc:
        raise CliError(str(exc)) from None


def gather_evidence(
    bootstrap: str, trust: TrustList, site: str, services: Sequence[str], io: Streams
) -> dict[str, Evidence]:
    import asyncio

    from deploy.audit_evidence import site_evidence

    try:
        evidence = asyncio.run(site_evidence(bootstrap, trust, site, services))
    except Exception as exc:
        raise CliError(f"Kafka at {bootstrap} not read: {exc!r}") from None
    for service, found in evidence.items():
        if found.log is not None and found.log.untrusted:
            io.warn(
                f"warning: {found.log.untrusted} record(s) on {SERVICE_TOPICS[service]} claim "
                f"{site} but do not verify against the trust list (left out)"
            )
    return evidence


def audit_verify(
    io: Streams,
    endpoints_file: str | None,
    site: str | None,
    kafka: str | None,
    trust_list: str | None,
    timeout: float,
) -> int:
    """Every service's chain at the site(s), each store held against its site's newest signed
    anchor and its events on Kafka; a broken chain outranks an unreachable service in the exit
    code, since tampering is the finding this command exists for."""
    endpoints = load_endpoints(endpoints_file)
    token = signed_in_token(endpoints)
    bootstrap, trust = evidence_sources(endpoints, kafka, trust_list)
    checks = []
    for name in endpoints.site_names(site):
        services = endpoints.services_of(name)
        if not services:
            raise CliError(f"site {name} has no service endpoints in {endpoints.path}")
        # Kafka first: the store's head, read after, can only be ahead of it. As the endpoints
        # file's principal (read-only operator) when its Kafka is the one read.
        from_file = not kafka and not os.environ.get("CELLBANK_KAFKA_BOOTSTRAP", "").strip()
        with kafka_credentials_of(endpoints.document, from_file):
            evidence = gather_evidence(bootstrap, trust, name, [s for s, _ in services], io)
        for service, address in services:
            check = verify_service(name, service, address, token, timeout, evidence[service])
            io.print(check_line(check))
            checks.append(check)
    broken = [c for c in checks if c.broken]
    failed = [f"{c.site} {c.service} {c.error}" for c in checks if c.report is None]
    if broken:
        io.print(broken_link(broken[0]))
        for failure in failed:
            io.warn(f"warning: not verified: {failure}")
        return 1
    if failed:
        raise CliError("not verified: " + "; ".join(failed))
    io.print("OK")
    return 0
