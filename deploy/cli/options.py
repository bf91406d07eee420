"""The options several commands share, as Typer parameter types (one definition each)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from deploy import sign_in
from deploy.cli.calls import DEFAULT_TIMEOUT
from deploy.cli.console import Streams
from deploy.cli.endpoints import DEFAULT_ENDPOINTS_FILE, ENDPOINTS_ENV

Endpoints = Annotated[
    str | None,
    typer.Option(
        "--endpoints", metavar="FILE",
        help=f"endpoints file (default: ${ENDPOINTS_ENV} or {DEFAULT_ENDPOINTS_FILE})",
    ),
]  # fmt: skip
IdentityEndpoints = Annotated[
    str | None,
    typer.Option(
        "--endpoints", metavar="FILE",
        help=f"endpoints file naming the issuer (default: ${ENDPOINTS_ENV} or "
        f"{DEFAULT_ENDPOINTS_FILE})",
    ),
]  # fmt: skip
Issuer = Annotated[
    str | None,
    typer.Option(
        "--issuer", metavar="URL",
        help=f"the OIDC issuer (default: ${sign_in.ISSUER_ENV} or the endpoints file's)",
    ),
]  # fmt: skip
Timeout = Annotated[
    float,
    typer.Option(
        "--timeout", metavar="TIMEOUT", show_default=False,
        help=f"seconds per call (default {DEFAULT_TIMEOUT:.0f})",
    ),
]  # fmt: skip
Kafka = Annotated[
    str | None,
    typer.Option("--kafka", metavar="KAFKA", help="Kafka bootstrap (default: the endpoints file)"),
]
AnySite = Annotated[
    str | None,
    typer.Option(
        "--site", metavar="SITE", help="site id, e.g. LON (default: every site in the file)"
    ),
]
OneSite = Annotated[str, typer.Option("--site", metavar="SITE", help="site id, e.g. LON")]


def json_flag(help: str) -> typer.models.OptionInfo:
    """The `--json` flag (no `--no-json`), with what it prints."""
    return typer.Option("--json", help=help)


def streams(ctx: typer.Context) -> Streams:
    """The streams `deploy.cli.main` runs the command with (the process's own otherwise)."""
    found = ctx.find_object(Streams)
    return found if found is not None else Streams(sys.stdout, sys.stderr)
