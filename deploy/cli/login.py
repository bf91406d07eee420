"""`cellbank login` and `cellbank logout`: the tokens the other commands call with."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from deploy import sign_in
from deploy.cli.console import Streams
from deploy.cli.endpoints import load_endpoints
from deploy.cli.errors import CliError
from deploy.cli.options import IdentityEndpoints, Issuer, streams

LOGIN_HELP = "sign in: a browser (URL and code), --username/--password, or a client"
LOGOUT_HELP = "forget the sign-in (and end its session at the identity provider)"


def register(app: typer.Typer) -> None:
    app.command(
        "login", short_help=LOGIN_HELP,
        help="Sign in at the network's identity provider and keep the tokens for the other "
        "commands (~/.cellbank/tokens, 0600; renewed with the refresh token). People: without "
        "options, open the printed URL in any browser and sign in there (device authorization "
        "flow). Demo realm and scripts: --username/--password (password grant). Automation: "
        "--client-id with the client's secret (client-credentials grant).",
    )(login_command)  # fmt: skip
    app.command("logout", short_help=LOGOUT_HELP, help=LOGOUT_HELP)(logout_command)


def login_command(
    ctx: typer.Context,
    endpoints: IdentityEndpoints = None,
    issuer: Issuer = None,
    username: Annotated[
        str | None, typer.Option(metavar="USERNAME", help="a person's username (password grant)")
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(metavar="PASSWORD", help="their password (asked for when left out)"),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(metavar="CLIENT_ID", help="a confidential client (client credentials)"),
    ] = None,
    client_secret: Annotated[
        str | None,
        typer.Option(metavar="CLIENT_SECRET", help="its secret (prefer --client-secret-file)"),
    ] = None,
    client_secret_file: Annotated[
        str | None, typer.Option(metavar="FILE", help="a file holding it")
    ] = None,
) -> int:
    provider = login_provider(endpoints, issuer)
    secret = (
        client_secret_of(client_secret, client_secret_file) if client_id and not username else ""
    )
    return login(streams(ctx), provider, username, password, client_id, secret)


def logout_command(
    ctx: typer.Context, endpoints: IdentityEndpoints = None, issuer: Issuer = None
) -> int:
    return logout(streams(ctx), login_provider(endpoints, issuer))


def login_provider(endpoints: str | None, issuer: str | None) -> sign_in.Provider:
    """The issuer to sign in at: --issuer, $CELLBANK_OIDC_ISSUER, or the endpoints file's (which
    is optional here: signing in needs only the issuer)."""
    identity: dict[str, str] | None = None
    try:
        identity = load_endpoints(endpoints).identity
    except CliError:
        if endpoints:
            raise  # the file named on the command line must be there
    return sign_in.Provider.of(sign_in.choose_issuer(issuer, identity, os.environ), identity)


def client_secret_of(given: str | None, file: str | None) -> str:
    """--client-secret, --client-secret-file, or $CELLBANK_OIDC_CLIENT_SECRET(_FILE): a file or
    the environment keeps the secret out of the process list and the shell history."""
    from shared.settings import secret

    if given:
        return given
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read the client secret: {exc}") from None
    found = secret(os.environ, "CELLBANK_OIDC_CLIENT_SECRET")
    if not found:
        raise CliError(
            "--client-id needs its secret: --client-secret-file FILE, --client-secret, or "
            "CELLBANK_OIDC_CLIENT_SECRET(_FILE)"
        )
    return found


def login(
    io: Streams,
    provider: sign_in.Provider,
    username: str | None,
    password: str | None,
    client_id: str | None,
    client_secret: str,
) -> int:
    """Sign in and cache the tokens: a browser (device flow) unless a password or a client is
    given."""
    if client_id and username:
        raise CliError("sign in as a person (--username) or as a system (--client-id), not both")
    if client_id:
        session = sign_in.client_login(provider, client_id, client_secret)
    elif username:
        if password is None:
            import getpass

            password = getpass.getpass(f"password of {username} at {provider.issuer}: ")
        session = sign_in.password_login(provider, username, password)
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


def logout(io: Streams, provider: sign_in.Provider) -> int:
    session = sign_in.logout(provider)
    if session is None:
        io.print(f"not signed in to {provider.issuer}")
    else:
        io.print(f"signed out {session.who} from {provider.issuer}")
    return 0
