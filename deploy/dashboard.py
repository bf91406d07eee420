"""The operator dashboard: `python -m deploy.dashboard [--endpoints FILE] [--port N]`.

One page, live: the network's events as they happen (server-sent events from one shared Kafka
reader), every site's inventory by status and available stock by product type, open orders,
per-site charts of events/s, consumer lag and available stock over the last minutes
(deploy/dashboard_charts.py, drawn with uPlot served from here), shipments in transit with their
SLA countdown, active excursions (quarantined units, compromised shipments) and recalls.
Operators sign in at the network's OIDC issuer (deploy/dashboard_login.py); every route but
/healthz and the sign-in steps (the page's script and chart library too) needs a session of a
person with the `operator` role (the page redirects to sign-in, the API answers 401 JSON,
anyone else gets 403); every response carries a strict CSP. Events are redacted by role
(deploy/dashboard_events.py). Each site's delivery service is asked
(OperatorService.GetNetworkStatus, DeliveryService.ListShipments / ListRecalls) with the
signed-in operator's own access token; the dashboard writes nothing and holds no token of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
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
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deploy.dashboard_charts import Timeline
from deploy.dashboard_events import EventHub, TooManyStreams, redacted
from deploy.dashboard_login import (
    LOGIN_COOKIE,
    LOGIN_TTL_S,
    SESSION_COOKIE,
    Login,
    OidcClient,
    Session,
)
from deploy.keycloak import AUDIENCE, DASHBOARD_CLIENT_ID, REALM_FILE
from deploy.processes import InfraError
from deploy.tools import ensure_uplot
from shared.auth import OPERATOR
from shared.errors import InvalidArgument, Unauthenticated
from shared.event_watch import EventFilter, watch_events
from shared.grpc_server import channel_credentials
from shared.settings import parse_endpoints, secret
from shared.trust import TRUST_LIST_ENV, TrustList

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("dashboard.html")
OWN_FILES = ("dashboard.js", "dashboard.css")  # beside the page; the library's come from tools
KEEPALIVE_S = 15.0
CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """What the dashboard needs: delivery endpoints, Kafka, its OIDC client, stream caps."""

    sites: dict[str, str]  # site → delivery service host:port
    kafka: str
    oidc: OidcClient
    max_streams: int = 20
    max_streams_per_user: int = 5
    public_url: str = ""  # https://… behind a proxy; else the URL the browser used
    # TLS to the delivery services (CELLBANK_TLS_CA; mTLS with a client certificate too).
    tls_ca_file: str = ""
    tls_client_cert_file: str = ""
    tls_client_key_file: str = ""
    # The network's trust list: the event stream shows only what it vouches for.
    trust_list_file: str = ""


class Network:
    """The delivery services, asked on behalf of the signed-in operator."""

    def __init__(
        self, sites: Mapping[str, str], credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self.sites = dict(sites)
        self.credentials = credentials

    async def status(self, metadata: tuple[tuple[str, str], ...]) -> dict[str, Any]:
        """Network status (from the first delivery service that answers), with every site's
        shipments and recalls."""
        out: dict[str, Any] = {
            "sites": [], "untrusted": [], "shipments": [], "recalls": [], "errors": [],
        }  # fmt: skip
        answered = False
        for site, address in sorted(self.sites.items()):
            channel = (  # TLS when the services use it: the operator's token is on the wire
                grpc.aio.secure_channel(address, self.credentials)
                if self.credentials is not None
                else grpc.aio.insecure_channel(address)
            )
            async with channel:
                try:
                    if not answered:
                        status = await opb_grpc.OperatorServiceStub(channel).GetNetworkStatus(
                            opb.GetNetworkStatusRequest(), metadata=metadata, timeout=5
                        )
                        out["sites"] = [_dict(s) for s in status.sites]
                        out["untrusted"] = [_dict(u) for u in status.untrusted]
                        out["as_of"] = status.as_of.ToJsonString()
                        answered = True
                    stub = dpb_grpc.DeliveryServiceStub(channel)
                    shipments = await stub.ListShipments(
                        dpb.ListShipmentsRequest(), metadata=metadata, timeout=5
                    )
                    out["shipments"] += [
                        {**_dict(s), "site_id": site} for s in shipments.shipments
                        if s.status in ("CREATED", "IN_TRANSIT", "DELIVERED")
                    ]  # fmt: skip
                    recalls = await stub.ListRecalls(
                        dpb.ListRecallsRequest(), metadata=metadata, timeout=5
                    )
                    out["recalls"] += [{**_dict(r), "site_id": site} for r in recalls.recalls]
                except grpc.aio.AioRpcError as err:
                    out["errors"].append(f"{site}: {err.code().name} {err.details()}")
        return out


def _dict(message: Any) -> dict[str, Any]:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


Handler = Callable[[Request, Session], Awaitable[Response]]


def create_app(
    config: DashboardConfig,
    hub: EventHub | None = None,
    *,
    library: Mapping[str, bytes] | None = None,
    timeline: Timeline | None = None,
) -> Starlette:
    """The dashboard. `library`: the chart library's files by name (default: the pinned uPlot,
    installed if need be); `hub`: the event stream (default: one Kafka reader whose events the
    `timeline` counts)."""
    static = {
        **{name: PAGE.with_name(name).read_bytes() for name in OWN_FILES},
        **(library if library is not None else ensure_uplot()),
    }
    charts = timeline or Timeline()
    network = Network(
        config.sites,
        channel_credentials(
            config.tls_ca_file, config.tls_client_cert_file, config.tls_client_key_file
        ),
    )
    login = Login(config.oidc)
    if hub is None:
        trust = TrustList.from_env({TRUST_LIST_ENV: config.trust_list_file})  # names the setting
        hub = EventHub(
            lambda: watch_events(config.kafka, EventFilter(), trust=trust, tail=20),
            max_streams=config.max_streams, max_streams_per_user=config.max_streams_per_user,
            on_event=lambda w: charts.count_event(w.event.site_id, w.event.occurred_at.timestamp()),
        )  # fmt: skip
    events_hub = hub

    def base(request: Request) -> str:
        return (config.public_url or str(request.base_url)).rstrip("/") + "/"

    def secure(request: Request) -> bool:
        return base(request).startswith("https://")

    def operator_only(handler: Handler, *, api: bool) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            session = login.sessions.get(request.cookies.get(SESSION_COOKIE))
            if session is not None:
                try:
                    session = await login.fresh(session)
                except Unauthenticated:
                    session = None
            if session is None:
                if api:
                    return JSONResponse(
                        {"error": "sign in first", "login": "/login"}, status_code=401,
                        headers={"WWW-Authenticate": 'Bearer realm="cellbank-dashboard"'},
                    )  # fmt: skip
                return await begin_login(request)
            if not session.principal.has(OPERATOR):
                who = session.principal.username
                why = f"{who} is signed in but is not an operator; the dashboard is for operators"
                if api:
                    return JSONResponse({"error": why}, status_code=403)
                return HTMLResponse(
                    f"<!doctype html><title>Not an operator</title><p>{_escape(why)}.</p>"
                    '<form method="post" action="/logout"><button>Sign out</button></form>', status_code=403,
                )  # fmt: skip
            return await handler(request, session)

        return guarded

    async def begin_login(request: Request) -> Response:
        try:
            url, state = await login.begin(base(request) + "callback")
        except Unauthenticated as exc:
            return HTMLResponse(f"<p>{_escape(str(exc))}</p>", status_code=503)
        response = RedirectResponse(url, status_code=302)
        response.set_cookie(
            LOGIN_COOKIE, state, max_age=int(LOGIN_TTL_S), httponly=True, samesite="lax",
            secure=secure(request), path="/",
        )  # fmt: skip
        return response

    async def callback(request: Request) -> Response:
        params = request.query_params
        if params.get("error"):
            why = f"{params.get('error')}: {params.get('error_description', '')}"[:300]
            return HTMLResponse(
                f"<p>Sign-in refused ({_escape(why)}).</p><p><a href='/'>Try again</a></p>",
                status_code=401,
            )
        try:
            session = await login.complete(
                params.get("state", ""), request.cookies.get(LOGIN_COOKIE), params.get("code", ""),
                base(request) + "callback",
            )  # fmt: skip
        except Unauthenticated as exc:
            return HTMLResponse(
                f"<p>{_escape(str(exc))}</p><p><a href='/'>Sign in</a></p>", status_code=401
            )
        response = RedirectResponse(base(request), status_code=303)
        response.delete_cookie(LOGIN_COOKIE, path="/")
        response.set_cookie(
            SESSION_COOKIE, session.id, httponly=True, samesite="lax", secure=secure(request),
            path="/",
        )  # fmt: skip
        return response

    async def logout(request: Request) -> Response:
        session_id = request.cookies.get(SESSION_COOKIE)
        session = login.sessions.drop(session_id) if session_id else None
        response = RedirectResponse(await login.logout_url(session, base(request)), 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def page(request: Request, session: Session) -> Response:
        return HTMLResponse(PAGE.read_text(), headers={"Cache-Control": "no-store"})

    async def me(request: Request, session: Session) -> Response:
        p = session.principal
        return JSONResponse(
            {"username": p.username, "name": p.name, "roles": sorted(p.roles), "site": p.site}
        )

    async def status(request: Request, session: Session) -> Response:
        answer = await network.status(session.metadata)
        charts.sample_status(answer["sites"])
        return JSONResponse(answer)

    async def chart_series(request: Request, session: Session) -> Response:
        return JSONResponse(charts.series())

    async def static_file(request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        if name not in static:
            return JSONResponse({"error": f"no file {name}"}, status_code=404)
        return Response(
            static[name], media_type=CONTENT_TYPES[Path(name).suffix],
            headers={"Cache-Control": "no-cache"},
        )  # fmt: skip

    async def events(request: Request, session: Session) -> Response:
        q = request.query_params
        selection = EventFilter(
            q.get("site", ""), q.get("topic", ""), q.get("type", ""), q.get("aggregate", "")
        )
        try:
            selection.topics()
        except InvalidArgument as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        who = session.principal.username
        try:
            events_hub.check(who)  # answered 503 now; the slot itself is claimed by the stream
        except TooManyStreams as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "10"})

        async def stream() -> AsyncIterator[str]:
            # The slot is claimed inside the generator, so a response cancelled before its first
            # step claims nothing (a claim outside would never be given back).
            try:
                with events_hub.subscribe(who, selection) as subscriber:
                    yield ": connected\n\n"
                    while True:
                        current = login.sessions.get(session.id, touch=False)
                        if current is None or not current.principal.has(OPERATOR):
                            yield "event: signed-out\ndata: {}\n\n"
                            return
                        try:
                            watched = await asyncio.wait_for(subscriber.queue.get(), KEEPALIVE_S)
                        except TimeoutError:
                            yield ": keep-alive\n\n"
                            continue
                        dropped = subscriber.take_dropped()
                        if dropped:
                            yield f"event: dropped\ndata: {json.dumps({'dropped': dropped})}\n\n"
                        record = redacted(watched, current.principal.roles)
                        yield f"data: {json.dumps(record, separators=(',', ':'))}\n\n"
            except TooManyStreams as exc:  # another stream took the last slot meanwhile
                yield f"event: refused\ndata: {json.dumps({'error': str(exc)})}\n\n"

        return StreamingResponse(
            stream(), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )  # fmt: skip

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(
            {"ok": True, "live_streams": events_hub.streams,
             "kafka_readers_opened": events_hub.readers_opened}
        )  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await events_hub.stop()

    return Starlette(
        routes=[
            Route("/", operator_only(page, api=False)),
            Route("/static/{name}", operator_only(static_file, api=True)),
            Route("/login", begin_login),
            Route("/callback", callback),
            Route("/logout", logout, methods=["POST"]),  # not GET: no sign-out by a link elsewhere
            Route("/api/me", operator_only(me, api=True)),
            Route("/api/status", operator_only(status, api=True)),
            Route("/api/charts", operator_only(chart_series, api=True)),
            Route("/api/events", operator_only(events, api=True)),
            Route("/healthz", health),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(SecurityHeaders, policy=content_security_policy(config.oidc.issuer))
        ],
    )


def content_security_policy(issuer: str) -> str:
    """Scripts, styles and fetches from the dashboard only (no inline script, no CDN); forms
    post here, and sign-out's redirect goes on to the issuer's logout page."""
    split = urllib.parse.urlsplit(issuer)
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src 'self'; form-action 'self' {split.scheme}://{split.netloc}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


class SecurityHeaders:
    """The content security policy (and no MIME sniffing) on every HTTP response."""

    def __init__(self, app: ASGIApp, policy: str) -> None:
        self.app = app
        self.extra = [
            (b"content-security-policy", policy.encode()),
            (b"x-content-type-options", b"nosniff"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.extra]}
            await send(message)

        await self.app(scope, receive, sending)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def document_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The endpoints document from the environment (a container has no endpoints file):
    CELLBANK_DELIVERY_ENDPOINTS (SITE=host:port,…), CELLBANK_KAFKA_BOOTSTRAP and
    CELLBANK_OIDC_ISSUER (the issuer operators sign in at). ValueError names what is missing or
    malformed."""
    delivery = parse_endpoints(
        env.get("CELLBANK_DELIVERY_ENDPOINTS", ""), "CELLBANK_DELIVERY_ENDPOINTS"
    )
    if not delivery:
        raise ValueError("CELLBANK_DELIVERY_ENDPOINTS: required (SITE=host:port,...)")
    kafka = env.get("CELLBANK_KAFKA_BOOTSTRAP", "").strip()
    if not kafka:
        raise ValueError("CELLBANK_KAFKA_BOOTSTRAP: required (the event stream)")
    issuer = env.get("CELLBANK_OIDC_ISSUER", "").strip().rstrip("/")
    if not issuer:
        raise ValueError("CELLBANK_OIDC_ISSUER: required (the OIDC issuer operators sign in at)")
    return {
        "sites": {site: {"delivery": address} for site, address in delivery.items()},
        "kafka": kafka,
        "identity": {"issuer": issuer},
    }


def config_from(
    document: Mapping[str, Any], env: Mapping[str, str], *, local_run: bool
) -> DashboardConfig:
    """The dashboard's configuration from an endpoints document and the environment.

    The issuer is CELLBANK_OIDC_ISSUER or the document's "identity"; the client is
    CELLBANK_DASHBOARD_CLIENT_ID / CELLBANK_DASHBOARD_CLIENT_SECRET (or _SECRET_FILE). Only for
    the local run's endpoints file with an issuer on this machine do they default to the demo
    realm's dashboard client. ValueError names what is missing."""
    identity = document.get("identity") or {}
    if not isinstance(identity, Mapping):
        raise ValueError('endpoints "identity": expected an object')
    issuer = env.get("CELLBANK_OIDC_ISSUER", "").strip() or str(identity.get("issuer", ""))
    issuer = issuer.rstrip("/")
    if not issuer:
        raise ValueError(
            'no OIDC issuer: set CELLBANK_OIDC_ISSUER or give the endpoints file an "identity"'
        )
    demo = local_run and _on_this_machine(issuer)
    client_id = env.get("CELLBANK_DASHBOARD_CLIENT_ID", "").strip() or (
        DASHBOARD_CLIENT_ID if demo else ""
    )
    if not client_id:
        raise ValueError("CELLBANK_DASHBOARD_CLIENT_ID: required (the dashboard's OIDC client)")
    client_secret = secret(env, "CELLBANK_DASHBOARD_CLIENT_SECRET") or (
        _demo_secret(client_id) if demo else ""
    )
    if not client_secret:
        raise ValueError(
            "CELLBANK_DASHBOARD_CLIENT_SECRET (or _FILE): required (the dashboard client's secret)"
        )
    sites = {
        site: str(entry["delivery"])
        for site, entry in (document.get("sites") or {}).items()
        if isinstance(entry, Mapping) and "delivery" in entry
    }
    return DashboardConfig(
        sites=sites,
        kafka=str(document.get("kafka", "")),
        oidc=OidcClient(
            issuer,
            client_id,
            client_secret,
            audience=env.get("CELLBANK_OIDC_AUDIENCE", "").strip() or AUDIENCE,
            jwks_url=env.get("CELLBANK_OIDC_JWKS_URL", "").strip()
            or str(identity.get("jwks_url", "")),
        ),
        max_streams=_positive(env, "CELLBANK_DASHBOARD_MAX_STREAMS", 20),
        max_streams_per_user=_positive(env, "CELLBANK_DASHBOARD_MAX_STREAMS_PER_USER", 5),
        public_url=_public_url(env, local_run),
        tls_ca_file=env.get("CELLBANK_TLS_CA", "").strip(),
        tls_client_cert_file=env.get("CELLBANK_TLS_CLIENT_CERT", "").strip(),
        tls_client_key_file=env.get("CELLBANK_TLS_CLIENT_KEY", "").strip(),
        trust_list_file=env.get(TRUST_LIST_ENV, "").strip() or str(document.get("trust_list", "")),
    )


def _public_url(env: Mapping[str, str], local_run: bool) -> str:
    """Where browsers reach the dashboard. Outside the local run it must be https (behind the
    TLS proxy): the session cookie is Secure and the sign-in redirect comes back there."""
    url = env.get("CELLBANK_DASHBOARD_URL", "").strip()
    if not local_run and not url.startswith("https://"):
        raise ValueError(
            "CELLBANK_DASHBOARD_URL: required outside the local run, an https:// URL (the "
            "address browsers use, behind TLS; the session cookie is sent only over https)"
        )
    return url


def _on_this_machine(issuer: str) -> bool:
    host = urllib.parse.urlsplit(issuer).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _demo_secret(client_id: str) -> str:
    """The demo realm's secret for the client (the realm file is only for the local run)."""
    realm = json.loads(REALM_FILE.read_text())
    return next(
        (str(c.get("secret", "")) for c in realm["clients"] if c["clientId"] == client_id), ""
    )


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name}: expected a positive whole number, got {raw!r}")
    return int(raw)


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
    try:
        if args.endpoints is None and os.environ.get("CELLBANK_DELIVERY_ENDPOINTS"):
            config = config_from(document_from_env(os.environ), os.environ, local_run=False)
        else:
            document = load_endpoints(args.endpoints).document
            config = config_from(document, os.environ, local_run=True)
    except (ValueError, InvalidArgument) as exc:
        parser.exit(2, f"dashboard: {exc}\n")
    try:
        library = ensure_uplot()  # the charts' library, pinned: fetched once, served from here
    except InfraError as exc:
        parser.exit(2, f"dashboard: the chart library: {exc}\n")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, library=library), host=args.host, port=args.port,
            log_level="warning", timeout_graceful_shutdown=2,
        )
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
