"""`cellbank`: the operator's command line against a running network.

    cellbank login [--username U --password P | --client-id C --client-secret S]
                                                     sign in (a browser, via a printed URL and code)
    cellbank logout                                  forget the sign-in
    cellbank audit verify [--site SITE]              every service's hash chain, per site, held
                                                     against its anchors and Kafka
    cellbank audit log --aggregate ID [--site SITE] [--json]
                                                     who did what, when and why to an aggregate
    cellbank trace --din DIN | --donor ID | --batch ID [--site SITE] [--json]
                                                     lookback: the genealogy down to the recipient
    cellbank hla classify [--json] [--reference DIR] ALLELE... | -
                                                     KIR-ligand class of HLA alleles
    cellbank hla show [--site SITE] [--json]         the release each site's matching uses
    cellbank hla approve --site SITE --directory DIR --release R --reason WHY
                                                     move a site to another release (recorded)

It finds the network through an endpoints file (written by `make run`), so it needs no flags on
a developer machine, and calls it with the access token of whoever signed in with `cellbank
login` (deploy/sign_in.py: cached per user and issuer, renewed with the refresh token). The
file-loading and gRPC helpers (`load_endpoints`, `signed_in_token`, `connection_options`,
`operator_call`, `CliError`) are meant for the other subcommands too: each subcommand is one
function `(args, streams) -> exit code`, registered in `build_parser`.

Exit codes: 0 fine, 1 the answer is bad (a broken audit chain, an unknown aggregate),
2 the question could not be answered (no endpoints file, an unreachable service, not signed in).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import grpc
from cellbank.delivery.v1 import delivery_service_pb2 as dpb
from cellbank.delivery.v1 import delivery_service_pb2_grpc as dpb_grpc
from cellbank.operator.v1 import operator_service_pb2 as opb
from cellbank.operator.v1 import operator_service_pb2_grpc as opb_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from deploy import sign_in
from deploy.processes import REPO_ROOT, hla_reference_dir
from shared.topics import SERVICE_TOPICS, SERVICES
from shared.trust import TRUST_LIST_ENV, TrustConfigError, TrustList

if TYPE_CHECKING:
    from deploy.audit_evidence import Evidence
    from shared.chain_key import ChainKey

T = TypeVar("T")

DEFAULT_ENDPOINTS_FILE = REPO_ROOT / ".cellbank" / "endpoints.json"
ENDPOINTS_ENV = "CELLBANK_ENDPOINTS_FILE"
CHAIN_KEYS_DIR_ENV = "CELLBANK_CHAIN_KEYS_DIR"  # a folder of <SITE>.<service>.key (restore)
DEFAULT_TIMEOUT = 60.0
# gRPC codes that mean "nobody answered", as opposed to "it answered no".
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class CliError(Exception):
    """A failure the user must act on; the message says what and how, `code` is the exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Streams:
    """Where a subcommand writes its answer (out) and its warnings (err); tests pass buffers."""

    out: TextIO
    err: TextIO

    def print(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    def warn(self, line: str) -> None:
        print(line, file=self.err, flush=True)


# --- endpoints file ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetworkEndpoints:
    """The parsed endpoints file: each site's service addresses, the identity provider, and the
    whole document (hospitals, kafka, …) for subcommands that need more."""

    path: Path
    sites: dict[str, dict[str, str]]
    identity: dict[str, str]
    document: dict[str, Any]

    def site_names(self, only: str | None = None) -> list[str]:
        """The sites to act on: `only` (checked against the file) or every site in it."""
        if only is None:
            return list(self.sites)
        site = only.strip().upper()
        if site not in self.sites:
            known = ", ".join(self.sites) or "none"
            raise CliError(f"site {only!r} is not in {self.path} (sites: {known})")
        return [site]

    def services_of(self, site: str) -> list[tuple[str, str]]:
        """(service, address) of the bank services the site has an endpoint for, in the
        network's service order; other keys (hospital_api, operator_api) are aliases."""
        entries = self.sites[site]
        return [(service, entries[service]) for service in SERVICES if service in entries]


def endpoints_path(explicit: str | Path | None, env: Mapping[str, str] = os.environ) -> Path:
    """--endpoints, else $CELLBANK_ENDPOINTS_FILE, else .cellbank/endpoints.json in the repo."""
    chosen = explicit or env.get(ENDPOINTS_ENV, "").strip() or DEFAULT_ENDPOINTS_FILE
    return Path(chosen).expanduser()


def load_endpoints(
    explicit: str | Path | None = None, env: Mapping[str, str] = os.environ
) -> NetworkEndpoints:
    """Read and check the endpoints file; CliError naming the file and the field otherwise."""
    path = endpoints_path(explicit, env)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CliError(
            f"no endpoints file at {path}: start the network with `make run` (it writes the "
            f"file), or pass --endpoints FILE / set {ENDPOINTS_ENV}"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot read endpoints file {path}: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"endpoints file {path} is not JSON: {exc}") from None
    return parse_endpoints(document, path)


def parse_endpoints(document: object, path: Path) -> NetworkEndpoints:
    """The endpoints document, checked: {"sites": {SITE: {name: "host:port"}},
    "identity": {"issuer": URL, ...}, ...}."""
    if not isinstance(document, dict):
        raise CliError(f"endpoints file {path}: expected a JSON object")
    sites = document.get("sites")
    if not isinstance(sites, dict) or not sites:
        raise CliError(f"endpoints file {path}: sites: expected an object of sites")
    parsed: dict[str, dict[str, str]] = {}
    for site, entries in sites.items():
        if not isinstance(entries, dict):
            raise CliError(f"endpoints file {path}: sites.{site}: expected an object")
        for name, address in entries.items():
            if not isinstance(address, str) or not _is_address(address):
                raise CliError(
                    f"endpoints file {path}: sites.{site}.{name}: expected 'host:port', "
                    f"got {address!r}"
                )
        parsed[site.upper()] = dict(entries)
    identity = document.get("identity", {})
    if not isinstance(identity, dict) or not all(isinstance(v, str) for v in identity.values()):
        raise CliError(f"endpoints file {path}: identity: expected an object of strings")
    return NetworkEndpoints(path, parsed, identity, document)


def _is_address(value: str) -> bool:
    host, colon, port = value.rpartition(":")
    return bool(host and colon and port.isdigit())


def signed_in_token(endpoints: NetworkEndpoints, env: Mapping[str, str] = os.environ) -> str:
    """The access token of whoever signed in with `cellbank login` at the network's issuer
    ($CELLBANK_OIDC_ISSUER, else the file's identity); CliError "not signed in" otherwise."""
    try:
        issuer = sign_in.choose_issuer(None, endpoints.identity, env)
        return sign_in.access_token(sign_in.Provider.of(issuer, endpoints.identity), env)
    except sign_in.SignInError as exc:
        raise CliError(str(exc)) from None


# --- gRPC helpers --------------------------------------------------------------------------


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def operator_call(address: str, call: Callable[[opb_grpc.OperatorServiceStub], T]) -> T:
    """Run `call` against the OperatorService at `address` on a channel of its own (the
    synchronous client: a CLI has nothing else to do while it waits)."""
    with grpc.insecure_channel(address) as channel:
        return call(opb_grpc.OperatorServiceStub(channel))


def rpc_code(error: grpc.RpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = error.code()
    return code


def rpc_problem(error: grpc.RpcError) -> str:
    """`CODE: details` of a failed call, for messages naming the service."""
    details = error.details() or ""
    return f"{rpc_code(error).name}: {details}".rstrip(": ")


def call_problem(address: str, error: grpc.RpcError) -> str:
    """Why a call got no usable answer: `unreachable at ADDR (…)` or `refused the call …`."""
    if rpc_code(error) in UNREACHABLE:
        return f"unreachable at {address} ({rpc_problem(error)})"
    return f"refused the call at {address} ({rpc_problem(error)})"


def connection_options() -> argparse.ArgumentParser:
    """The options every network subcommand takes (use as `parents=[connection_options()]`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--endpoints",
        metavar="FILE",
        help=f"endpoints file (default: ${ENDPOINTS_ENV} or {DEFAULT_ENDPOINTS_FILE})",
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds per call (default {DEFAULT_TIMEOUT:.0f})",
    )
    return common


# --- login / logout ------------------------------------------------------------------------


def login_provider(args: argparse.Namespace) -> sign_in.Provider:
    """The issuer to sign in at: --issuer, $CELLBANK_OIDC_ISSUER, or the endpoints file's (which
    is optional here: signing in needs only the issuer)."""
    identity: dict[str, str] | None = None
    try:
        identity = load_endpoints(args.endpoints).identity
    except CliError:
        if args.endpoints:
            raise  # the file named on the command line must be there
    return sign_in.Provider.of(sign_in.choose_issuer(args.issuer, identity, os.environ), identity)


def _client_secret(args: argparse.Namespace) -> str:
    """--client-secret, --client-secret-file, or $CELLBANK_OIDC_CLIENT_SECRET(_FILE): a file or
    the environment keeps the secret out of the process list and the shell history."""
    from shared.settings import secret

    if args.client_secret:
        return str(args.client_secret)
    if args.client_secret_file:
        try:
            return Path(args.client_secret_file).read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read the client secret: {exc}") from None
    found = secret(os.environ, "CELLBANK_OIDC_CLIENT_SECRET")
    if not found:
        raise CliError(
            "--client-id needs its secret: --client-secret-file FILE, --client-secret, or "
            "CELLBANK_OIDC_CLIENT_SECRET(_FILE)"
        )
    return found


def login(args: argparse.Namespace, io: Streams) -> int:
    """Sign in and cache the tokens: a browser (device flow) unless a password or a client is
    given."""
    provider = login_provider(args)
    if args.client_id and args.username:
        raise CliError("sign in as a person (--username) or as a system (--client-id), not both")
    if args.client_id:
        session = sign_in.client_login(provider, args.client_id, _client_secret(args))
    elif args.username:
        password = args.password
        if password is None:
            import getpass

            password = getpass.getpass(f"password of {args.username} at {provider.issuer}: ")
        session = sign_in.password_login(provider, args.username, password)
    else:
        session = sign_in.device_login(provider, io.warn)
    path = sign_in.token_file(provider.issuer)
    sign_in.save(session, path)
    io.print(f"signed in to {provider.issuer} as {signed_in_as(session.access_token)}")
    io.print(f"tokens kept in {path} (readable by you only); `cellbank logout` forgets them")
    return 0


def signed_in_as(access_token: str) -> str:
    """`alice (Alice Morgan; operator, qa; site LON)` from the token's own claims."""
    from shared.auth import principal_from_claims
    from shared.oidc import unverified_claims

    who = principal_from_claims(unverified_claims(access_token))
    details = [d for d in (who.name, ", ".join(sorted(who.roles))) if d]
    details += [f"site {who.site}"] if who.site else []
    details += [f"hospital {who.hospital}"] if who.hospital else []
    label = who.client_id if who.username.startswith("service-account-") else who.username
    return f"{label} ({'; '.join(details)})" if details else label


def logout(args: argparse.Namespace, io: Streams) -> int:
    provider = login_provider(args)
    session = sign_in.logout(provider)
    if session is None:
        io.print(f"not signed in to {provider.issuer}")
    else:
        io.print(f"signed out {session.who} from {provider.issuer}")
    return 0


def identity_options() -> argparse.ArgumentParser:
    """The options of `login` and `logout`: where the issuer comes from."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--endpoints",
        metavar="FILE",
        help=f"endpoints file naming the issuer (default: ${ENDPOINTS_ENV} or "
        f"{DEFAULT_ENDPOINTS_FILE})",
    )
    common.add_argument(
        "--issuer",
        metavar="URL",
        help=f"the OIDC issuer (default: ${sign_in.ISSUER_ENV} or the endpoints file's)",
    )
    return common


# --- audit verify --------------------------------------------------------------------------


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
    endpoints: NetworkEndpoints, args: argparse.Namespace, env: Mapping[str, str] = os.environ
) -> tuple[str, TrustList]:
    """Kafka and the trust list: --kafka / --trust-list, else CELLBANK_KAFKA_BOOTSTRAP /
    CELLBANK_TRUST_LIST_FILE, else the endpoints file's `kafka` / `trust_list`."""
    bootstrap = (
        args.kafka
        or env.get("CELLBANK_KAFKA_BOOTSTRAP", "").strip()
        or str(endpoints.document.get("kafka", ""))
    )
    trust_file = (
        args.trust_list
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


def audit_verify(args: argparse.Namespace, io: Streams) -> int:
    """Every service's chain at the site(s), each store held against its site's newest signed
    anchor and its events on Kafka; a broken chain outranks an unreachable service in the exit
    code, since tampering is the finding this command exists for."""
    endpoints = load_endpoints(args.endpoints)
    token = signed_in_token(endpoints)
    bootstrap, trust = evidence_sources(endpoints, args)
    checks = []
    for site in endpoints.site_names(args.site):
        services = endpoints.services_of(site)
        if not services:
            raise CliError(f"site {site} has no service endpoints in {endpoints.path}")
        # Kafka first: the store's head, read after, can only be ahead of it. As the endpoints
        # file's principal (read-only operator) when its Kafka is the one read.
        from_file = not args.kafka and not os.environ.get("CELLBANK_KAFKA_BOOTSTRAP", "").strip()
        with kafka_credentials_of(endpoints.document, from_file):
            evidence = gather_evidence(bootstrap, trust, site, [s for s, _ in services], io)
        for service, address in services:
            check = verify_service(site, service, address, token, args.timeout, evidence[service])
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


# --- audit log -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    signed_at: str
    meaning: str
    subject: str = ""  # the signer's id at the identity provider (Part 11)
    event_id: str = ""  # the signed record: the event holding the signature …
    content_hash: str = ""  # … and the SHA-256 of what was signed


def signatures(payload: object) -> list[Signature]:
    """Every e-signature in a decoded payload: any field named `signature` holding a signer
    (name or signer), a meaning and, if recorded, when (signed_at), at any depth."""
    found: list[Signature] = []
    if isinstance(payload, dict):
        for key, value in payload.items():
            for candidate in value if isinstance(value, list) else [value]:
                if key == "signature" and isinstance(candidate, dict):
                    signer = (
                        candidate.get("name")
                        or candidate.get("signer_name")
                        or candidate.get("signer")
                    )
                    if signer and candidate.get("meaning"):
                        found.append(
                            Signature(
                                str(signer),
                                str(candidate.get("signed_at", "")),
                                str(candidate["meaning"]),
                                str(
                                    candidate.get("subject")
                                    or candidate.get("signer_subject")
                                    or ""
                                ),
                                str(candidate.get("event_id", "")),
                                str(candidate.get("content_hash", "")),
                            )
                        )
                        continue
                found.extend(signatures(candidate))
    elif isinstance(payload, list):
        for item in payload:
            found.extend(signatures(item))
    return found


def moment(ts: Timestamp) -> str:
    """A protobuf Timestamp as UTC to the second: the resolution people sign and audit at."""
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_moment(value: str) -> str:
    """An RFC 3339 string from a JSON payload, in the same form as `moment` (as given if odd)."""
    ts = Timestamp()
    try:
        ts.FromJsonString(value)
    except ValueError:
        return value
    return moment(ts)


def short_type(event_type: str) -> str:
    return event_type.rsplit(".", 1)[-1]


def decoded_payload(entry: opb.HistoryEntry) -> object:
    try:
        payload: object = json.loads(entry.payload_json or "{}")
    except json.JSONDecodeError:
        return {"undecodable_json": entry.payload_json}
    return payload


def history_lines(history: opb.AggregateHistory) -> Iterator[str]:
    """A header, then one row per event (time, actor, type, reason) and a line per signature."""
    yield (
        f"{history.site_id} {history.service}: {history.aggregate_type or 'aggregate'} "
        f"{history.aggregate_id} ({len(history.entries)} events)"
    )
    width = max((len(short_type(e.event_type)) for e in history.entries), default=0)
    actor_width = max((len(e.actor) for e in history.entries), default=0)
    for entry in history.entries:
        yield (
            f"  {moment(entry.occurred_at)}  {entry.actor:<{actor_width}}  "
            f"{short_type(entry.event_type):<{width}}  {entry.reason}"
        ).rstrip()
        for signature in signatures(decoded_payload(entry)):
            yield (
                f"      signed by {signature.name} at {json_moment(signature.signed_at)}: "
                f'"{signature.meaning}"'
            )
            if signature.subject or signature.content_hash:
                yield (
                    f"        signer id {signature.subject or '-'}; signed record "
                    f"{signature.event_id or '-'} sha256 {signature.content_hash or '-'}"
                )


def history_records(history: opb.AggregateHistory) -> Iterator[dict[str, Any]]:
    """One JSON-ready object per event, with the payload and its signatures decoded."""
    for entry in history.entries:
        payload = decoded_payload(entry)
        yield {
            "site_id": history.site_id,
            "service": history.service,
            "aggregate_id": history.aggregate_id,
            "aggregate_type": history.aggregate_type,
            "position": entry.position,
            "version": entry.version,
            "event_id": entry.event_id,
            "event_type": entry.event_type,
            "occurred_at": entry.occurred_at.ToJsonString(),
            "recorded_at": entry.recorded_at.ToJsonString(),
            "actor": entry.actor,
            "reason": entry.reason,
            "correlation_id": entry.correlation_id,
            "payload": payload,
            "signatures": [dataclasses.asdict(s) for s in signatures(payload)],
        }


def fetch_history(
    site: str, service: str, address: str, aggregate_id: str, token: str, timeout: float
) -> opb.AggregateHistory | None:
    """The aggregate's history in one service's store; None when that store never saw it."""
    request = opb.GetAggregateHistoryRequest(aggregate_id=aggregate_id)
    try:
        history: opb.AggregateHistory = operator_call(
            address,
            lambda stub: stub.GetAggregateHistory(request, metadata=bearer(token), timeout=timeout),
        )
    except grpc.RpcError as err:
        if rpc_code(err) == grpc.StatusCode.NOT_FOUND:
            return None
        raise CliError(f"{site} {service} {call_problem(address, err)}") from None
    return history


def audit_log(args: argparse.Namespace, io: Streams) -> int:
    """Ask every service of the site(s): an id may name aggregates in more than one store (a
    unit is made by manufacturing and kept by storage), and each store tells its part."""
    endpoints = load_endpoints(args.endpoints)
    token = signed_in_token(endpoints)
    sites = endpoints.site_names(args.site)
    histories, failures = [], []
    for site in sites:
        for service, address in endpoints.services_of(site):
            try:
                found = fetch_history(site, service, address, args.aggregate, token, args.timeout)
            except CliError as exc:
                failures.append(str(exc))
                continue
            if found is not None:
                histories.append(found)
    for history in histories:
        lines = map(json.dumps, history_records(history)) if args.json else history_lines(history)
        for line in lines:
            io.print(line)
    if failures and not histories:
        raise CliError("; ".join(failures))
    for failure in failures:  # found elsewhere, but part of the story may be missing
        io.warn(f"warning: {failure}")
    if not histories:
        io.warn(f"aggregate {args.aggregate!r} not found at any service of {', '.join(sites)}")
        return 1
    return 0


# --- entry point ---------------------------------------------------------------------------


Run = Callable[[argparse.Namespace, Streams], int]


# --- trace ---------------------------------------------------------------------------------

TRACE_COLUMNS = (
    ("donor", "donor_id"), ("din", "din"), ("collected", "collected_at"), ("batch", "batch_id"),
    ("released", "released_at"), ("unit", "unit_id"), ("site", "unit_site"),
    ("status", "unit_status"), ("location", "location"), ("shipment", "shipment_id"),
    ("order", "order_id"), ("hospital", "hospital_id"), ("patient", "patient_ref"),
    ("delivered", "delivered_at"), ("received", "received_at"), ("infused", "infused_at"),
    ("vein-to-vein", "vein_to_vein_seconds"),
)  # fmt: skip


def trace_records(reply: dpb.TraceReply) -> list[dict[str, str]]:
    """One flat record per unit (per collection without units), timestamps in ISO 8601 UTC."""
    records = []
    for row in reply.rows:
        record: dict[str, str] = {}
        for _, field in TRACE_COLUMNS:
            value = getattr(row, field)
            if isinstance(value, Timestamp):
                record[field] = moment(value) if row.HasField(field) else ""
            elif isinstance(value, float):
                record[field] = _duration(value) if value else ""
            else:
                record[field] = str(value)
        records.append(record)
    return records


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours < 48 else f"{hours // 24}d{hours % 24:02d}h"


def trace_table(records: list[dict[str, str]]) -> list[str]:
    """The genealogy as an aligned table (empty columns left out)."""
    columns = [(title, field) for title, field in TRACE_COLUMNS if any(r[field] for r in records)]
    widths = [max(len(title), *(len(r[field]) for r in records)) for title, field in columns]
    header = "  ".join(
        title.upper().ljust(w) for (title, _), w in zip(columns, widths, strict=True)
    )
    lines = [header.rstrip(), "  ".join("-" * w for w in widths)]
    for r in records:
        cells = (r[field].ljust(w) for (_, field), w in zip(columns, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
    return lines


def trace(args: argparse.Namespace, io: Streams) -> int:
    endpoints = load_endpoints(args.endpoints)
    token = signed_in_token(endpoints)
    chosen = [(k, getattr(args, k)) for k in ("din", "donor", "batch") if getattr(args, k)]
    if len(chosen) != 1:
        raise CliError("name exactly one of --din, --donor or --batch")
    kind, value = chosen[0]
    sites = [s for s in endpoints.site_names(args.site) if "delivery" in endpoints.sites[s]]
    if not sites:
        raise CliError(f"no site with a delivery endpoint in {endpoints.path}")
    address = endpoints.sites[sites[0]]["delivery"]
    field = {"din": "din", "donor": "donor_id", "batch": "batch_id"}[kind]
    request = dpb.TraceRequest(**{field: value.strip()})
    try:
        with grpc.insecure_channel(address) as channel:
            reply = dpb_grpc.DeliveryServiceStub(channel).Trace(
                request, metadata=bearer(token), timeout=args.timeout
            )
    except grpc.RpcError as err:
        if rpc_code(err) is grpc.StatusCode.NOT_FOUND:
            io.warn(f"cellbank: nothing known for {kind} {value} ({sites[0]}'s lookback)")
            return 1
        raise CliError(f"{sites[0]} delivery {call_problem(address, err)}") from None
    records = trace_records(reply)
    if args.json:
        io.print(json.dumps(records, indent=2))
        return 0
    io.print(f"trace of {kind} {value} ({len(records)} unit(s), from {sites[0]}'s lookback)")
    for line in trace_table(records):
        io.print(line)
    return 0


# --- replay --------------------------------------------------------------------------------


@contextlib.contextmanager
def kafka_credentials_of(
    document: Mapping[str, Any], applies: bool, env: MutableMapping[str, str] = os.environ
) -> Iterator[None]:
    """While the command talks to the endpoints file's Kafka (applies: the bootstrap came from
    the file), its principal (make run's read-only operator) is the one shared.kafka_clients
    reads from the environment: credentials belong to the cluster they are for. Restored after."""
    given = document.get("kafka_env") or {}
    if not isinstance(given, dict):
        raise CliError('endpoints file: "kafka_env" must be an object of CELLBANK_KAFKA_* settings')
    chosen = {str(k): str(v) for k, v in given.items() if str(k).startswith("CELLBANK_KAFKA_")}
    if not applies or not chosen:
        yield
        return
    saved = {key: env.get(key) for key in chosen}
    env.update(chosen)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value


def trust_list_path(endpoints: NetworkEndpoints) -> str:
    """The network's trust list: the one the endpoints file names (the network it describes
    wrote it: make run), else CELLBANK_TRUST_LIST_FILE; reading the log verifies every record
    against it."""
    path = (
        str(endpoints.document.get("trust_list", ""))
        or os.environ.get("CELLBANK_TRUST_LIST_FILE", "").strip()
    )
    if not path:
        raise CliError(
            "reading the event log needs the network's trust list: set CELLBANK_TRUST_LIST_FILE"
            " or use the endpoints file make run writes"
        )
    return path


def _infra_of(endpoints: NetworkEndpoints, args: argparse.Namespace) -> tuple[str, str]:
    bootstrap = (
        args.kafka
        or os.environ.get("CELLBANK_KAFKA_BOOTSTRAP", "")
        or str(endpoints.document.get("kafka", ""))
    )
    server = (
        args.database_url
        or os.environ.get("CELLBANK_DATABASE_URL", "")
        or str(endpoints.document.get("database_url", ""))
    )
    if not bootstrap or not server:
        raise CliError(
            "replay needs Kafka and PostgreSQL: pass --kafka and --database-url, set "
            "CELLBANK_KAFKA_BOOTSTRAP / CELLBANK_DATABASE_URL, or use the file make run writes"
        )
    return bootstrap, server


def replay(args: argparse.Namespace, io: Streams) -> int:
    """Rebuild a site from the log; --verify compares its digests with the live site."""
    import asyncio

    from deploy.replay import replay_site, specs
    from shared.db import database_name
    from shared.db_roles import DatabaseRoles, hand_over
    from shared.replay import RestoreRefused, differences, site_digests
    from shared.service_lock import ServicesRunning, running_services

    endpoints = load_endpoints(args.endpoints)
    site = endpoints.site_names(args.site)[0] if args.site else None
    if site is None:
        raise CliError("--site is required")
    bootstrap, server = _infra_of(endpoints, args)
    from_file = not (args.kafka or os.environ.get("CELLBANK_KAFKA_BOOTSTRAP"))
    services = list(specs())
    # The site's databases: shared.db.database_name, unless the file names them ("databases").
    named = endpoints.document.get("databases", {}).get(site, {})
    live = {name: named.get(name) or database_name(site, name) for name in services}
    if args.restore:
        targets = live
    else:
        suffix = uuid.uuid4().hex[:6]
        targets = {name: f"cellbank_replay_{site.lower()}_{name}_{suffix}" for name in services}

    async def run() -> int:
        from shared.db import drop_database

        if args.restore and (running := await running_services(server, list(live.values()))):
            raise CliError(str(ServicesRunning(site, running)), code=1)
        if args.restore and not args.force:
            present = await _databases_with_events(server, list(live.values()))
            if present:
                raise CliError(
                    f"{site} still has event stores ({', '.join(present)}): --restore rebuilds a "
                    "site whose databases are gone (stop its services and drop them, or --force)"
                )
        try:
            result = await replay_site(
                site, bootstrap=bootstrap, server_url=server, targets=targets,
                restore_events_from_log=args.restore, progress=io.warn,
                trust_list_file=trust_list_path(endpoints),
                chain_keys=restore_keys(endpoints, args, site, services) if args.restore else None,
            )  # fmt: skip
        except RestoreRefused as refused:
            raise CliError(f"restore {refused}", code=1) from None
        if args.restore and (roles := endpoints.document.get("database_roles")):
            for dbname in targets.values():  # the owner role's again, the runtime's grants
                await hand_over(server, dbname, DatabaseRoles(**roles))
        io.print(
            f"{site}: {result.records_replayed:,} records replayed in {result.seconds:.1f}s"
            f" ({result.rate:,.0f} events/s)"
            + (
                f"; {sum(result.events_restored.values()):,} own events restored"
                if args.restore
                else ""
            )
        )
        skipped = sum(n for reasons in result.untrusted.values() for n in reasons.values())
        if skipped:
            io.print(f"{site}: {skipped:,} untrusted record(s) skipped (not applied; see above)")
        code = 0
        try:
            if args.verify and not args.restore:
                replayed = await site_digests(server, targets, with_events=False)
                # The live site may still be reading the last records the replay read: give it
                # a moment (a site busy with new events keeps differing, and says so).
                deadline = time.monotonic() + args.settle
                while True:
                    live_digests = await site_digests(server, live, with_events=False)
                    differ = differences(live_digests, replayed)
                    if not differ or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(1.0)
                for key in sorted(live_digests):
                    io.print(f"  {key:<44} {'DIFFERS' if key in differ else 'OK'}")
                if differ:
                    io.print(f"DIFFERENT: {', '.join(differ)} (if the site was busy, run again)")
                    code = 1
                else:
                    io.print(f"OK: {site} replayed equals live ({len(live_digests)} read models)")
        finally:
            if not args.restore and not args.keep:
                for dbname in targets.values():
                    await drop_database(server, dbname)
        return code

    with kafka_credentials_of(endpoints.document, from_file):
        return asyncio.run(run())


def restore_keys(
    endpoints: NetworkEndpoints, args: argparse.Namespace, site: str, services: Sequence[str]
) -> dict[str, ChainKey]:
    """The stores' chain keys a restore recomputes every hash with: --chain-keys DIR, else
    $CELLBANK_CHAIN_KEYS_DIR, else the endpoints file's `chain_keys` (`<SITE>.<service>.key`)."""
    from deploy.chain_keys import ChainKeys
    from shared.errors import InvalidArgument

    folder = (
        args.chain_keys
        or os.environ.get(CHAIN_KEYS_DIR_ENV, "").strip()
        or str(endpoints.document.get("chain_keys", ""))
    )
    if not folder:
        raise CliError(
            "--restore recomputes every hash with the stores' chain keys: pass --chain-keys DIR,"
            f" set {CHAIN_KEYS_DIR_ENV}, or use the file make run writes"
        )
    keys = ChainKeys(Path(folder))
    missing = [s for s in services if not (keys.directory / f"{site}.{s}.key").exists()]
    if missing:
        raise CliError(f"no chain key of {site} {', '.join(missing)} in {folder}")
    try:
        return {s: keys.key(site, s) for s in services}
    except InvalidArgument as exc:
        raise CliError(f"{folder}: {exc}") from None


async def _databases_with_events(server: str, names: list[str]) -> list[str]:
    import asyncpg

    from shared.db import with_database

    present = []
    for name in names:
        try:
            conn = await asyncpg.connect(with_database(server, name))
        except asyncpg.InvalidCatalogNameError:
            continue
        try:
            if await conn.fetchval(
                "SELECT to_regclass('events') IS NOT NULL"
            ) and await conn.fetchval("SELECT count(*) FROM events"):
                present.append(name)
        finally:
            await conn.close()
    return present


# --- watch ---------------------------------------------------------------------------------


def watch(args: argparse.Namespace, io: Streams) -> int:
    """Follow the network's events live (or from the beginning), filtered; Ctrl-C stops."""
    import asyncio

    from shared.event_watch import EventFilter, watch_events
    from shared.trust import TrustConfigError, TrustList

    bootstrap = args.kafka or os.environ.get("CELLBANK_KAFKA_BOOTSTRAP", "")
    document: Mapping[str, Any] = {}
    trust_file = os.environ.get("CELLBANK_TRUST_LIST_FILE", "").strip()
    if not bootstrap or not trust_file:
        endpoints = load_endpoints(args.endpoints)
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
        args.site or "", args.topic or "", args.type or "", args.aggregate or ""
    )
    try:
        selection.topics()
    except Exception as exc:
        raise CliError(str(exc)) from None

    async def follow() -> int:
        shown = 0
        events = watch_events(bootstrap, selection, trust=trust, from_beginning=args.from_beginning)
        async with contextlib.aclosing(events):  # stops its consumer when we stop
            async for watched in events:
                if args.json:
                    io.print(json.dumps(watched.record(), separators=(",", ":")))
                else:
                    e = watched.event
                    at = e.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    io.print(f"{at}  {e.site_id:<4} {watched.summary}")
                shown += 1
                if args.limit and shown >= args.limit:
                    return 0
        return 0

    try:
        with kafka_credentials_of(document, bool(document)):
            return asyncio.run(
                asyncio.wait_for(follow(), args.for_seconds) if args.for_seconds else follow()
            )
    except TimeoutError:
        return 0
    except KeyboardInterrupt:
        return 0


def hla_classify(args: argparse.Namespace, io: Streams) -> int:
    """One line per allele (or one JSON object); exit 1 naming every name it cannot classify."""
    from services.matching.adapters.hla_release import ReleaseError, load_release
    from services.matching.domain.kir_ligand import AlleleNameError

    directory = args.reference or hla_reference_dir()
    if not directory:
        raise CliError(
            "no IPD-IMGT/HLA release: pass --reference DIR or set CELLBANK_HLA_REFERENCE"
        )
    names = list(args.alleles)
    if names == ["-"]:
        names = [line.strip() for line in sys.stdin if line.strip()]
    if not names:
        raise CliError("name at least one allele (or - to read them from standard input)")
    try:
        reference = load_release(Path(directory))
    except ReleaseError as exc:
        raise CliError(f"{directory}: {exc}") from None
    failed = 0
    for name in names:
        try:
            ligand = reference.classify(name)
        except AlleleNameError as exc:
            failed += 1
            io.warn(f"cellbank: error: {exc}")
            continue
        if args.json:
            line = {"allele": name.strip(), "ligand": ligand, "reference": reference.version}
            io.print(json.dumps(line))
        else:
            io.print(f"{name.strip()}\t{ligand}\t{reference.version}")
    return 1 if failed else 0


def hla_call(address: str, token: str, timeout: float, call: Callable[[Any, Any], T]) -> T:
    """Run `call(stub, metadata)` against the HlaReferenceService at `address`."""
    from cellbank.matching.v1 import hla_reference_service_pb2_grpc as hpb_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            return call(hpb_grpc.HlaReferenceServiceStub(channel), bearer(token))
        except grpc.RpcError as exc:
            code = 2 if rpc_code(exc) in UNREACHABLE else 1
            raise CliError(f"matching {call_problem(address, exc)}", code) from None


def in_use_record(site: str, in_use: Any) -> dict[str, Any]:
    return {
        "site": site, "release": in_use.release,
        "classification_version": in_use.classification_version, "source": in_use.source,
        "checksums": {c.file: c.sha256 for c in in_use.checksums},
        "recorded_by": in_use.recorded_by, "reason": in_use.reason,
        "recorded_at": moment(in_use.recorded_at) if in_use.recorded_by else "",
    }  # fmt: skip


def in_use_line(record: dict[str, Any]) -> str:
    release = f"IPD-IMGT/HLA {record['release']}" if record["release"] else "no HLA reference"
    by = f"; recorded by {record['recorded_by']} at {record['recorded_at']}" if record[
        "recorded_by"] else ""  # fmt: skip
    why = f" ({record['reason']})" if record["reason"] else ""
    return f"{record['site']}\t{release}\t{record['classification_version']}\t{record['source']}{by}{why}"


def matching_address(endpoints: NetworkEndpoints, site: str) -> str:
    address = endpoints.sites[site].get("matching")
    if not address:
        raise CliError(f"site {site} has no matching endpoint in {endpoints.path}")
    return address


def hla_show(args: argparse.Namespace, io: Streams) -> int:
    from cellbank.matching.v1 import hla_reference_service_pb2 as hpb

    endpoints = load_endpoints(args.endpoints)
    token = signed_in_token(endpoints)
    for site in endpoints.site_names(args.site):
        in_use = hla_call(
            matching_address(endpoints, site), token, args.timeout,
            lambda stub, md: stub.GetHlaReference(
                hpb.GetHlaReferenceRequest(), metadata=md, timeout=args.timeout
            ),
        )  # fmt: skip
        record = in_use_record(site, in_use)
        io.print(json.dumps(record) if args.json else in_use_line(record))
    return 0


def hla_approve(args: argparse.Namespace, io: Streams) -> int:
    from cellbank.matching.v1 import hla_reference_service_pb2 as hpb

    endpoints = load_endpoints(args.endpoints)
    token = signed_in_token(endpoints)
    (site,) = endpoints.site_names(args.site)
    request = hpb.ApproveHlaReferenceRequest(
        directory=args.directory, release=args.release, reason=args.reason
    )
    in_use = hla_call(
        matching_address(endpoints, site), token, args.timeout,
        lambda stub, md: stub.ApproveHlaReference(request, metadata=md, timeout=args.timeout),
    )  # fmt: skip
    io.print(in_use_line(in_use_record(site, in_use)))
    return 0


@dataclass
class CommandGroup:
    """A `cellbank <group>` with its actions; every action is listed in `cellbank --help`."""

    subparsers: Any  # argparse's private _SubParsersAction
    prefix: str
    listing: list[tuple[str, str]]

    def add(self, name: str, run: Run, *, help: str, description: str) -> argparse.ArgumentParser:
        """A leaf command taking the connection options; `run(args, streams)` runs it."""
        action = self.subparsers.add_parser(
            name, parents=[connection_options()], help=help, description=description
        )
        action.set_defaults(run=run)
        self.listing.append((f"{self.prefix} {name}", help))
        return action


def build_parser() -> argparse.ArgumentParser:
    """`cellbank` and its commands; a new command is one `group.add(...)` and one function."""
    parser = argparse.ArgumentParser(
        prog="cellbank",
        description="Operator tools for a running CellBank network.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    listing: list[tuple[str, str]] = []

    def group(name: str, help: str) -> CommandGroup:
        sub = commands.add_parser(name, help=help).add_subparsers(
            title=f"{name} commands", metavar="ACTION", required=True
        )
        return CommandGroup(sub, name, listing)

    login_help = "sign in: a browser (URL and code), --username/--password, or a client"
    signing_in = commands.add_parser(
        "login", parents=[identity_options()], help=login_help,
        description="Sign in at the network's identity provider and keep the tokens for the "
        "other commands (~/.cellbank/tokens, 0600; renewed with the refresh token). People: "
        "without options, open the printed URL in any browser and sign in there (device "
        "authorization flow). Demo realm and scripts: --username/--password (password grant). "
        "Automation: --client-id with the client's secret (client-credentials grant).",
    )  # fmt: skip
    signing_in.set_defaults(run=login)
    signing_in.add_argument("--username", help="a person's username (password grant)")
    signing_in.add_argument("--password", help="their password (asked for when left out)")
    signing_in.add_argument("--client-id", help="a confidential client (client credentials)")
    signing_in.add_argument("--client-secret", help="its secret (prefer --client-secret-file)")
    signing_in.add_argument("--client-secret-file", metavar="FILE", help="a file holding it")
    listing.append(("login", login_help))
    logout_help = "forget the sign-in (and end its session at the identity provider)"
    signing_out = commands.add_parser(
        "logout", parents=[identity_options()], help=logout_help, description=logout_help
    )
    signing_out.set_defaults(run=logout)
    listing.append(("logout", logout_help))

    audit = group("audit", "audit trail: verify hash chains, read an aggregate's history")
    verify = audit.add(
        "verify",
        audit_verify,
        help="verify every service's audit hash chain at a site",
        description="Recompute every service's keyed hash chain and hold its head against the "
        "site's newest signed anchor and the site's events on Kafka (a rewritten row, a deleted "
        "tail, a truncated table); print one line per service, then OK or the first finding. "
        "Exit 0 intact, 1 broken, 2 unreachable.",
    )
    verify.add_argument("--site", help="site id, e.g. LON (default: every site in the file)")
    verify.add_argument("--kafka", help="Kafka bootstrap (default: the endpoints file)")
    verify.add_argument(
        "--trust-list",
        help="the network's trust list (default: $CELLBANK_TRUST_LIST_FILE, the file)",
    )
    log = audit.add(
        "log",
        audit_log,
        help="who did what, when and why to one aggregate",
        description="Every event of the aggregate from each service that holds it: time, "
        "actor, event type, reason, and any e-signature. Exit 1 if no service knows it.",
    )
    log.add_argument("--aggregate", required=True, help="aggregate id (batch, unit, donor, …)")
    log.add_argument("--site", help="only this site (default: every site in the file)")
    log.add_argument("--json", action="store_true", help="one JSON object per event")

    trace_help = "lookback: donor → collections → batches → units → shipment → recipient"
    traced = commands.add_parser(
        "trace", parents=[connection_options()], help=trace_help,
        description="The full genealogy of a DIN, a donor or a batch in one answer, with "
        "timestamps: where each unit is now, or which hospital and patient received it. "
        "Exit 1 if nothing is known.",
    )  # fmt: skip
    traced.set_defaults(run=trace)
    traced.add_argument("--din", help="a collection's DIN")
    traced.add_argument("--donor", help="a donor id")
    traced.add_argument("--batch", help="a batch id")
    traced.add_argument("--site", help="ask this site's lookback (default: the first site)")
    traced.add_argument("--json", action="store_true", help="the rows as a JSON array")
    listing.append(("trace", trace_help))

    replay_help = "rebuild a site from the Kafka log (progress, events/s) and verify its digest"
    replayed = commands.add_parser(
        "replay", parents=[connection_options()], help=replay_help,
        description="Rebuild every service of a site from the log into fresh databases (its "
        "projections), with a progress bar; --verify compares a deterministic state digest of "
        "each read model with the live site (exit 1 naming what differs). --restore rebuilds a "
        "site whose databases are gone into its own databases, its events included.",
    )  # fmt: skip
    replayed.set_defaults(run=replay)
    replayed.add_argument("--site", required=True, help="site id, e.g. LON")
    replayed.add_argument("--verify", action="store_true", help="compare with the live site")
    replayed.add_argument("--restore", action="store_true", help="rebuild a lost site in place")
    replayed.add_argument(
        "--force", action="store_true", help="with --restore: even if stores exist"
    )
    replayed.add_argument("--keep", action="store_true", help="keep the scratch databases")
    replayed.add_argument(
        "--settle", type=float, default=30.0, help="seconds the live site may take to catch up"
    )
    replayed.add_argument("--kafka", help="Kafka bootstrap (default: the endpoints file)")
    replayed.add_argument("--database-url", help="PostgreSQL server URL (default: the file)")
    replayed.add_argument(
        "--chain-keys",
        help=f"with --restore: the stores' chain keys (default: ${CHAIN_KEYS_DIR_ENV})",
    )
    listing.append(("replay", replay_help))

    watch_help = "a live, readable stream of the network's events (filters, --json)"
    watched = commands.add_parser(
        "watch", parents=[connection_options()], help=watch_help,
        description="Every event of the network as it arrives on Kafka: time, site, type, "
        "aggregate and a one-line summary; --json prints one object per line (topic, partition, "
        "offset, site_id, event_type, aggregate_id, occurred_at, payload, …). Ctrl-C stops.",
    )  # fmt: skip
    watched.set_defaults(run=watch)
    watched.add_argument("--site", help="only events of this site")
    watched.add_argument("--topic", help="only this topic (e.g. cellbank.storage.events.v1)")
    watched.add_argument("--type", help="only this event type (e.g. UnitStored)")
    watched.add_argument("--aggregate", help="only this aggregate id")
    watched.add_argument("--from-beginning", action="store_true", help="replay the log first")
    watched.add_argument("--json", action="store_true", help="one JSON object per line")
    watched.add_argument("--limit", type=int, default=0, help="stop after this many events")
    watched.add_argument("--for-seconds", type=float, default=0, help="stop after this long")
    watched.add_argument("--kafka", help="Kafka bootstrap (default: the endpoints file)")
    listing.append(("watch", watch_help))

    hla = group("hla", "HLA reference: KIR-ligand classes, the release each site uses")
    classify = hla.add(
        "classify", hla_classify,
        help="KIR-ligand class of each allele, from the IPD-IMGT/HLA release",
        description="One line per allele: name, class (C1, C2, Bw4-80I, Bw4-80T, A3/A11, none, "
        "ambiguous, not-expressed) and the release; --json one object per line. Names may be "
        "alleles (C*03:07), groups (C*16), G or P groups; `-` reads names from standard input. "
        "Exit 1 naming each invalid, unknown or retired name (with its current name).",
    )  # fmt: skip
    classify.add_argument("alleles", nargs="+", metavar="ALLELE", help="e.g. C*03:07, or -")
    classify.add_argument("--json", action="store_true", help="one JSON object per line")
    classify.add_argument(
        "--reference", help="release directory (default: CELLBANK_HLA_REFERENCE or the dev copy)"
    )
    show = hla.add(
        "show", hla_show,
        help="the IPD-IMGT/HLA release each site's matching classifies with, and its record",
        description="One line per site (--json: one object): release, classification version, "
        "directory, and who recorded it when and why; checksums with --json.",
    )  # fmt: skip
    show.add_argument("--site", help="site id, e.g. LON (default: every site in the file)")
    show.add_argument("--json", action="store_true", help="one JSON object per site")
    approve = hla.add(
        "approve", hla_approve,
        help="move a site's matching to another IPD-IMGT/HLA release (recorded)",
        description="The site's matching loads the release in DIR (a path on its server), "
        "checks it is RELEASE, records who approved it, when and why, and classifies with it "
        "from now on, across restarts. Validate it first with `cellbank hla classify "
        "--reference DIR`. Exit 1 if refused (naming why), 2 if unreachable.",
    )  # fmt: skip
    approve.add_argument("--site", required=True, help="site id, e.g. LON")
    approve.add_argument("--directory", required=True, help="the release directory")
    approve.add_argument("--release", required=True, help="the release it must be, e.g. 3.58.0")
    approve.add_argument("--reason", required=True, help="why (recorded with the approval)")

    width = max(len(name) for name, _ in listing)
    parser.epilog = "all commands:\n" + "\n".join(
        f"  cellbank {name:<{width}}  {help}" for name, help in listing
    )
    return parser


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one command; its exit code. Errors go to err as `cellbank: error: …`."""
    io = Streams(sys.stdout if out is None else out, sys.stderr if err is None else err)
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, or a usage error argparse has already explained
        return exc.code if isinstance(exc.code, int) else 2
    run: Run = args.run
    try:
        return run(args, io)
    except CliError as exc:
        io.warn(f"cellbank: error: {exc}")
        return exc.code
    except sign_in.SignInError as exc:
        io.warn(f"cellbank: error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
