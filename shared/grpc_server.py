"""gRPC server bootstrap: auth, error → status mapping, health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared import bounds, metrics, tracing
from shared.access import AccessTable, check
from shared.auth import Principal, current_principal
from shared.errors import (
    CellBankError,
    ConcurrencyConflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ResourceExhausted,
    SiteUnavailable,
    StoreBusy,
    Unauthenticated,
)

log = logging.getLogger(__name__)

STATUS_OF: tuple[tuple[type[CellBankError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (ConcurrencyConflict, grpc.StatusCode.ABORTED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (StoreBusy, grpc.StatusCode.UNAVAILABLE),
    (SiteUnavailable, grpc.StatusCode.UNAVAILABLE),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
)

# A health Watch is a stream that holds a call slot open: only for authenticated callers
# (probes use Check, which stays open).
HEALTH_WATCH = f"/{health.SERVICE_NAME}/Watch"
REFLECTION_SERVICES = frozenset({reflection.SERVICE_NAME, "grpc.reflection.v1.ServerReflection"})
REFLECTION_METHOD = f"/{reflection.SERVICE_NAME}/ServerReflectionInfo"
MAX_REFLECTION_STREAMS = 16
OPEN_SERVICES = frozenset(
    {health.SERVICE_NAME, reflection.SERVICE_NAME, "grpc.reflection.v1.ServerReflection"}
)


def status_for(error: CellBankError) -> grpc.StatusCode:
    """The gRPC status a domain error maps to (ARCHITECTURE.md, APIs)."""
    for kind, code in STATUS_OF:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


@dataclass(frozen=True, slots=True)
class ServiceBinding:
    """A servicer, the generated add_…_to_server function, and its full service name."""

    name: str
    servicer: object
    register: Callable[[Any, Any], None]
    access: AccessTable = dataclass_field(
        default_factory=dict
    )  # RPC name → roles (shared/access.py)


class Authenticator(Protocol):
    async def authenticate(
        self, metadata: Iterable[tuple[str, str | bytes]] | None
    ) -> Principal: ...


class GuardInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call (health and reflection stay open), lets it through only if the
    service's access table allows one of the caller's roles, and maps domain errors."""

    def __init__(
        self, authenticator: Authenticator, access: Mapping[str, AccessTable] | None = None
    ) -> None:
        self.authenticator = authenticator
        self.access = dict(access or {})
        self.open_reflection = 0  # reflection streams open now (token-less, so capped)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        service = details.method.split("/")[1] if details.method.count("/") == 2 else ""
        if handler is None:
            return handler
        if service in REFLECTION_SERVICES and handler.stream_stream is not None:
            return self._reflection(handler)
        if service in OPEN_SERVICES and details.method != HEALTH_WATCH:
            return handler
        if details.method == HEALTH_WATCH:  # any authenticated caller may watch health
            return await self._health_watch(handler, details)
        try:
            caller = await self.authenticator.authenticate(details.invocation_metadata)
            check(self.access.get(service, {}), service, details.method.split("/")[-1], caller)
            principal: Principal | CellBankError = caller
        except (Unauthenticated, PermissionDenied) as exc:
            principal = exc
        except Exception:  # a token or key set nobody foresaw: refused, never a crash
            log.exception("the caller's token could not be checked")
            principal = Unauthenticated("the access token could not be checked")
        return _guarded(handler, details.method, principal)

    def _reflection(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """Reflection stays open without a token (tools list services before signing in), but
        at most MAX_REFLECTION_STREAMS at once: strangers cannot fill the server's call slots."""
        inner = handler.stream_stream

        async def capped(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if self.open_reflection >= MAX_REFLECTION_STREAMS:
                metrics.GRPC_REQUESTS.labels(REFLECTION_METHOD, "RESOURCE_EXHAUSTED").inc()
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"at most {MAX_REFLECTION_STREAMS} reflection streams at once: try again",
                )
            self.open_reflection += 1
            try:
                async for reply in inner(requests, context):
                    yield reply
            finally:
                self.open_reflection -= 1

        return grpc.stream_stream_rpc_method_handler(
            capped, handler.request_deserializer, handler.response_serializer
        )

    async def _health_watch(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        """The servicer's own handler for a caller with a valid token (it writes with
        context.write, so it is not wrapped), else one that refuses."""
        try:
            await self.authenticator.authenticate(details.invocation_metadata)
            return handler
        except Exception as exc:  # any failure to authenticate refuses
            why = str(exc) if isinstance(exc, Unauthenticated) else "the token could not be checked"

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            metrics.GRPC_REQUESTS.labels(details.method, "UNAUTHENTICATED").inc()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)

        return grpc.unary_stream_rpc_method_handler(
            refuse, handler.request_deserializer, handler.response_serializer
        )


def _guarded(
    handler: grpc.RpcMethodHandler, method: str, principal: Principal | CellBankError
) -> grpc.RpcMethodHandler:
    async def enter(context: grpc.aio.ServicerContext) -> None:
        if isinstance(principal, CellBankError):
            code = status_for(principal)
            metrics.GRPC_REQUESTS.labels(method, code.name).inc()
            await context.abort(code, str(principal))
        current_principal.set(principal)  # type: ignore[arg-type]

    async def fail(context: grpc.aio.ServicerContext, exc: CellBankError) -> None:
        code = status_for(exc)
        metrics.GRPC_REQUESTS.labels(method, code.name).inc()
        await context.abort(code, str(exc))

    async def undecodable(request: Any, context: grpc.aio.ServicerContext) -> None:
        problem = (
            request.message
            if isinstance(request, Undecodable)
            else _nul_field(request) or bounds.violation(request)
        )
        if problem:
            metrics.GRPC_REQUESTS.labels(method, "INVALID_ARGUMENT").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

    deserialize = _tolerant(handler.request_deserializer)

    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await enter(context)
            await undecodable(request, context)
            started = time.perf_counter()
            try:
                response = await inner(request, context)
            except CellBankError as exc:
                await fail(context, exc)
            metrics.GRPC_LATENCY.labels(method).observe(time.perf_counter() - started)
            metrics.GRPC_REQUESTS.labels(method, "OK").inc()
            return response

        make = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary
            else grpc.stream_unary_rpc_method_handler
        )
        return make(unary, deserialize, handler.response_serializer)

    inner_stream = handler.unary_stream or handler.stream_stream

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await enter(context)
        await undecodable(request, context)
        try:
            async for item in inner_stream(request, context):
                yield item
        except CellBankError as exc:
            await fail(context, exc)
        metrics.GRPC_REQUESTS.labels(method, "OK").inc()

    make_stream = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return make_stream(streaming, deserialize, handler.response_serializer)


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A request whose bytes are not the method's message (bad UTF-8, truncated, wrong type):
    answered INVALID_ARGUMENT by the guard instead of grpc's INTERNAL."""

    message: str


def _nul_field(message: Any, prefix: str = "") -> str:
    """A string field holding a NUL character (no text column can store it), named."""
    if not isinstance(message, Message):
        return ""
    for field, value in message.ListFields():
        name = prefix + field.name
        items = list(value) if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_STRING:
            if any("\x00" in item for item in items):
                return f"{name}: must not contain NUL characters"
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in items:
                found = _nul_field(item, name + ".")
                if found:
                    return found
    return ""


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    wrapped: Callable[[bytes], Any] = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return wrapped(data)
        except Exception as exc:  # protobuf's DecodeError, UnicodeDecodeError, …
            return Undecodable(f"request: not a valid message ({type(exc).__name__}: {exc})")

    return deserialize


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def set_health(self, name: str, *, serving: bool) -> None:
        """The health-check status of a named part (`grpc.health.v1.Health/Check` by name)."""
        status = health_pb2.HealthCheckResponse
        await self.health.set(name, status.SERVING if serving else status.NOT_SERVING)

    async def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, let in-flight calls finish for `grace` seconds, then stop."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(
    bindings: Sequence[ServiceBinding],
    *,
    authenticator: Authenticator,
    host: str = "127.0.0.1",
    port: int = 0,
    credentials: grpc.ServerCredentials | None = None,
    maximum_concurrent_rpcs: int = bounds.MAX_CONCURRENT_RPCS,
) -> RunningServer:
    """Build, bind and start a grpc.aio server with health checking and reflection; messages
    over bounds.MAX_MESSAGE_BYTES and calls beyond `maximum_concurrent_rpcs` are refused
    RESOURCE_EXHAUSTED."""
    server = grpc.aio.server(
        interceptors=[
            *tracing.server_interceptors(),  # outermost: a refused call is traced too
            GuardInterceptor(authenticator, {b.name: b.access for b in bindings}),
        ],
        options=[
            ("grpc.max_receive_message_length", bounds.MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", bounds.MAX_MESSAGE_BYTES),
        ],
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for binding in bindings:
        binding.register(binding.servicer, server)
    reflection.enable_server_reflection(
        [b.name for b in bindings] + [health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    address = f"{host}:{port}"
    bound = (
        server.add_secure_port(address, credentials)
        if credentials is not None
        else server.add_insecure_port(address)
    )
    await server.start()
    for name in ["", *(b.name for b in bindings)]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC server started", extra={"address": f"{host}:{bound}"})
    return RunningServer(server, bound, health_servicer)


def server_credentials(
    cert_file: str, key_file: str, client_ca_file: str = ""
) -> grpc.ServerCredentials:
    """TLS, or mTLS when a client CA is given."""
    with open(cert_file, "rb") as c, open(key_file, "rb") as k:
        pair = [(k.read(), c.read())]
    if client_ca_file:
        with open(client_ca_file, "rb") as ca:
            return grpc.ssl_server_credentials(pair, ca.read(), require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


def channel_credentials(
    ca_file: str, cert_file: str = "", key_file: str = ""
) -> grpc.ChannelCredentials | None:
    """For calls to other sites: TLS trusting `ca_file`, presenting a client certificate
    (mTLS) when one is given; None (plaintext) without a CA."""
    if not ca_file:
        return None
    with open(ca_file, "rb") as ca:
        root = ca.read()
    if cert_file and key_file:
        with open(cert_file, "rb") as c, open(key_file, "rb") as k:
            return grpc.ssl_channel_credentials(root, k.read(), c.read())
    return grpc.ssl_channel_credentials(root)


async def wait_for_termination_signal() -> None:
    """Return on SIGTERM or SIGINT (graceful stop is the caller's next step)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
